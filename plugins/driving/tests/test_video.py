"""MP4 input through the driving plugin's reader: a round trip through a real file, the core's
probe and load with the reader registered, and the broken or oversized files a user will bring."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vlm_core.errors import InputError
from vlm_core.export.video import encode_mp4
from vlm_core.io import load_input, probe_input
from vlm_core.io.load import Probe
from vlm_core.io.readers import InputReader
from vlm_core.kinds import Kind
from vlm_core.types import Video

av = pytest.importorskip("av")
video = pytest.importorskip("vlm_driving.video")

T, H, W, FPS = 12, 48, 64, 10.0
READERS = {
    "mp4": InputReader(format="mp4", probe="vlm_driving.video:probe", load="vlm_driving.video:load")
}


def frames(count: int = T) -> np.ndarray:
    """Smooth RGB frames that encode almost losslessly; frame t has brightness 15 * t."""
    ramp = np.linspace(0, 40, W, dtype=np.float32)[None, :, None] + np.array([0, 20, 40])
    out = np.empty((count, H, W, 3), np.uint8)
    for t in range(count):
        out[t] = np.clip(ramp + 15 * t, 0, 255).astype(np.uint8)
    return out


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "drive.mp4"
    path.write_bytes(encode_mp4(frames(), FPS))
    return path


def probe_of(path: Path) -> Probe:
    return Probe(path, "mp4", Kind.VIDEO, video.probe([path]), path.stat().st_size)


def write_with_pyav(path: Path, streams: str = "video") -> Path:
    """An MP4 with its index at the end (as cameras write it), or with audio only."""
    with av.open(str(path), mode="w", format="mp4") as out:
        if streams == "video":
            stream = out.add_stream("mpeg4", rate=Fraction(25))
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            for pixels in frames():
                out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            out.mux(stream.encode(None))
        else:
            audio = out.add_stream("aac", rate=8000)
            samples = np.zeros((1, 1024), np.float32)
            for _ in range(4):
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                frame.sample_rate = 8000
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def test_probe_reads_the_shape_and_load_decodes_every_frame(clip):
    assert video.probe([clip]) == (T, H, W, 3)
    loaded = video.load(probe_of(clip))
    assert isinstance(loaded, Video)
    assert loaded.frames.shape == (T, H, W, 3) and loaded.frames.dtype == np.uint8
    assert loaded.fps == FPS and loaded.name == "drive" and loaded.source == clip
    error = np.abs(loaded.frames.astype(int) - frames().astype(int))
    assert error.mean() < 2 and error.max() < 40


def test_the_core_probes_and_loads_mp4_with_the_reader(clip):
    probe = probe_input(clip, [Kind.VIDEO], readers=READERS)
    assert (probe.format, probe.kind, probe.shape) == ("mp4", Kind.VIDEO, (T, H, W, 3))
    loaded = load_input(probe, READERS)
    assert isinstance(loaded, Video) and len(loaded.frames) == T


def test_an_index_at_the_end_and_odd_frame_rates_load_too(tmp_path):
    path = write_with_pyav(tmp_path / "camera.mp4")
    assert video.probe([path]) == (T, H, W, 3)
    loaded = video.load(probe_of(path))
    assert loaded.fps == 25.0 and loaded.frames.shape == (T, H, W, 3)


def test_a_file_cut_in_half_is_refused_naming_the_file(tmp_path):
    whole = write_with_pyav(tmp_path / "whole.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])  # the index at the end is gone
    with pytest.raises(InputError, match=r"cut\.mp4: not a readable MP4 file") as info:
        video.probe([cut])
    assert "\n" not in str(info.value)


def test_a_file_cut_in_half_after_its_index_fails_to_load_at_a_frame(tmp_path, clip):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (at the start) survives: probe passes
    assert video.probe([cut]) == (T, H, W, 3)
    refused = (
        r"cut\.mp4: MP4 (data is corrupt or truncated at frame \d+ |is truncated: \d+ of the 12)"
    )
    with pytest.raises(InputError, match=refused):
        video.load(probe_of(cut))


def test_a_text_file_named_mp4_and_an_mp4_without_video_are_refused(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    with pytest.raises(InputError, match=r"notes\.mp4: not a readable MP4 file"):
        video.probe([text])
    sound = write_with_pyav(tmp_path / "sound.mp4", streams="audio")
    with pytest.raises(InputError, match=r"sound\.mp4: MP4 file has no video stream"):
        video.probe([sound])
    with pytest.raises(InputError, match="one file, got 2"):
        video.probe([sound, text])


def test_frames_over_the_pixel_cap_are_refused_before_decoding(clip, monkeypatch):
    probed = probe_of(clip)  # probed under the default caps, loaded under a lower one
    monkeypatch.setenv("VLM_MAX_IMAGE_PIXELS", str(H * W - 1))
    refused = r"drive\.mp4: MP4 frames are 64x48 = 3,072 pixels, over the limit of 3,071 \(raise"
    with pytest.raises(InputError, match=refused + r" it with VLM_MAX_IMAGE_PIXELS\)$"):
        video.probe([clip])
    with pytest.raises(InputError, match=refused):
        video.load(probed)
    monkeypatch.setenv("VLM_MAX_IMAGE_PIXELS", str(H * W))
    assert video.probe([clip]) == (T, H, W, 3)


def test_videos_over_the_total_cap_are_refused_and_the_cap_is_inclusive(clip, monkeypatch):
    monkeypatch.setenv("VLM_MAX_VOLUME_VOXELS", str(T * H * W - 1))
    refused = r"drive\.mp4: MP4 video is 12 frames of 64x48 = 36,864 pixels, over the limit"
    with pytest.raises(InputError, match=refused + r".*VLM_MAX_VOLUME_VOXELS"):
        video.probe([clip])
    monkeypatch.setenv("VLM_MAX_VOLUME_VOXELS", str(T * H * W))
    assert video.probe([clip]) == (T, H, W, 3)


def test_a_header_without_a_frame_count_is_estimated_from_its_duration(tmp_path):
    stream = SimpleNamespace(
        codec_context=SimpleNamespace(width=W, height=H),
        frames=0,
        duration=90_000 * 3 + 1,
        time_base=Fraction(1, 90_000),
        average_rate=Fraction(30000, 1001),
        guessed_rate=None,
    )
    container = SimpleNamespace(duration=None)
    assert video._header_shape(tmp_path / "x.mp4", stream, container) == (90, H, W, 3)
    stream.duration, container.duration = None, 2_000_000  # container duration, microseconds
    assert video._header_shape(tmp_path / "x.mp4", stream, container)[0] == 60
    container.duration = None
    with pytest.raises(InputError, match="neither a frame count nor a duration"):
        video._header_shape(tmp_path / "x.mp4", stream, container)


def test_importing_the_reader_loads_neither_pyav_nor_numpy():
    code = "import sys, vlm_driving.video; print('av' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
