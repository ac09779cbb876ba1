"""MP4 writing with PyAV (the optional ``video`` extra: ``pip install "vlm-core[video]"``).

PyAV is imported inside the functions, so importing this module stays cheap and works without it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

#: Constant rate factor of H.264 output: 0 is lossless, 51 the worst; 18 to 23 looks unchanged.
H264_CRF = 20


def mp4_available() -> bool:
    """Whether MP4 files can be written: PyAV is installed and importable."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def frame_index(t: int, fps: float, source_fps: float) -> int:
    """The frame of a ``source_fps`` video shown at the time of frame ``t`` of an ``fps`` one."""
    return round(t * source_fps / fps)


def as_rgb_frames(frames: np.ndarray) -> np.ndarray | None:
    """(T, H, W, C) frames as (T, H, W, 3) uint8, the one range rescaled over all frames as
    :meth:`vlm_core.types.Image.to_rgb_uint8` does; None for frames of other than 1, 3 or 4
    channels."""
    from vlm_core.types import Image

    if frames.ndim != 4 or frames.shape[3] not in (1, 3, 4):
        return None
    if frames.dtype == np.uint8 and frames.shape[3] == 3:
        return frames
    t, h, w, c = frames.shape
    return Image(pixels=frames.reshape(t * h, w, c)).to_rgb_uint8().reshape(t, h, w, 3)


def encode_mp4(frames: np.ndarray | Iterable[np.ndarray], fps: float) -> bytes:
    """Encode RGB frames as an MP4 file that plays in browsers.

    Args:
        frames: (T, H, W, 3) uint8, or an iterable of (H, W, 3) uint8 frames of one size,
            encoded as they come (memory stays at one frame).
        fps: frames per second, > 0.

    H.264 (``libx264``) when PyAV's FFmpeg has it, else MPEG-4 Part 2; pixel format yuv420p;
    the index (``moov``) at the start, so playback starts before the whole file is loaded. An
    odd width or height is padded to even by repeating the last column or row.

    Raises:
        ValueError: no frames, frames not (H, W, 3) uint8, or frames of different sizes.
        ImportError: PyAV is not installed (see :func:`mp4_available`).
    """
    import itertools

    import av

    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("an MP4 needs at least one frame")
    size = first.shape[:2]
    codec: Literal["libx264", "mpeg4"] = "mpeg4"
    options = {"qscale": "3"}  # MPEG-4 Part 2: a fixed quantiser, 2 (best) to 31
    if "libx264" in av.codecs_available:
        codec, options = "libx264", {"crf": str(H264_CRF), "preset": "veryfast"}
    with tempfile.TemporaryDirectory(prefix="vlm-mp4-") as tmp:
        path = Path(tmp) / "video.mp4"
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            rate = Fraction(fps).limit_denominator(1001)
            stream = out.add_stream(codec, rate=rate, options=options)
            stream.height, stream.width = (int(n) + int(n) % 2 for n in size)
            stream.pix_fmt = "yuv420p"
            for t, frame in enumerate(itertools.chain([first], frames)):
                if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                    raise ValueError(
                        f"MP4 frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}"
                    )
                if frame.shape[:2] != size:
                    raise ValueError(f"frame {t} is {frame.shape[:2]}, frame 0 is {size}")
                pad = ((0, size[0] % 2), (0, size[1] % 2), (0, 0))
                if size[0] % 2 or size[1] % 2:
                    frame = np.pad(frame, pad, mode="edge")
                image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                out.mux(stream.encode(image))
            out.mux(stream.encode(None))
        return path.read_bytes()
