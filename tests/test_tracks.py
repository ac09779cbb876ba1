"""Tracked detections on video (``Tracks``), their exports, and MP4 export of long videos."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from vlm_core.export import export_results, images
from vlm_core.export.images import small_video
from vlm_core.export.video import as_rgb_frames, encode_mp4, frame_index, mp4_available
from vlm_core.export.writer import output_summary
from vlm_core.kinds import OUTPUT_KINDS, Kind
from vlm_core.types import (
    OUTPUT_TYPES,
    Boxes,
    Image,
    InputRecord,
    Provenance,
    Result,
    Tracks,
    TrackSummary,
    Video,
)

av = pytest.importorskip("av")

H, W = 48, 64


def provenance() -> Provenance:
    return Provenance(
        run_id="r1",
        task="t.track",
        plugin="t",
        plugin_version="1",
        core_version="0",
        weights_sha256={},
        device="cpu",
        dtype="float32",
        seed=0,
        params={},
        inputs=(InputRecord("clip.mp4", "0" * 64, "mp4", "video"),),
        timings_ms={},
        started_at="2026-01-01T00:00:00+00:00",
    )


def result(outputs, source=None) -> Result:
    return Result("t.track", outputs, provenance(), source)


def frame_boxes(rows: list[tuple[int, str, float, list[float]]], size=(H, W)) -> Boxes:
    """Boxes from (track id, label, score, xyxy) rows."""
    return Boxes(
        xyxy=np.array([r[3] for r in rows], np.float32).reshape(-1, 4),
        labels=tuple(r[1] for r in rows),
        scores=np.array([r[2] for r in rows], np.float32),
        image_size=size,
        track_ids=np.array([r[0] for r in rows], np.int64),
    )


def sample_tracks(fps: float = 10.0) -> Tracks:
    """Six frames: car 7 in frames 0-4 (moving right), person 3 in frames 2-3, frame 5 empty."""
    frames = []
    for t in range(6):
        rows = []
        if t < 5:
            rows.append((7, "car", 0.5 + 0.1 * t, [4.0 + 4 * t, 10.0, 20.0 + 4 * t, 30.0]))
        if t in (2, 3):
            rows.append((3, "person", 0.8, [40.0, 5.0, 50.0, 40.0]))
        frames.append(frame_boxes(rows))
    return Tracks(frames=tuple(frames), fps=fps, class_names=("person", "car", "truck"))


def gradient_video(count: int, height: int = H, width: int = W, fps: float = 10.0) -> Video:
    """Smooth frames (encode well), each a different brightness: frame t is level 10 * t."""
    ramp = np.linspace(0, 60, width, dtype=np.float32)[None, :, None]
    frames = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t] = np.clip(ramp + 10 * t, 0, 255).astype(np.uint8)
    return Video(frames=frames, fps=fps, name="clip")


def decode(path) -> tuple[np.ndarray, float]:
    """All frames of an MP4 as (T, H, W, 3) uint8, and its average fps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), float(stream.average_rate)


# ---------------------------------------------------------------- the type


def test_tracks_is_an_output_kind_with_its_helpers():
    tracks = sample_tracks()
    assert tracks.kind is Kind.TRACKS and Kind.TRACKS in OUTPUT_KINDS
    assert Tracks in OUTPUT_TYPES and isinstance(tracks, OUTPUT_TYPES)
    assert len(tracks) == 6 and tracks.image_size == (H, W)
    assert tracks.track_ids() == (3, 7) and tracks.num_boxes == 7
    assert tracks.all_class_names == ("person", "car", "truck")
    car, person = tracks.track_summaries()[1], tracks.track_summaries()[0]
    assert person == TrackSummary(3, "person", 2, 3, 2, pytest.approx(0.8))
    assert (car.track_id, car.label, car.first_frame, car.last_frame, car.frames) == (
        7,
        "car",
        0,
        4,
        5,
    )
    assert car.mean_score == pytest.approx(0.7)


def test_a_track_is_labelled_with_its_most_frequent_label_and_extra_classes_are_kept():
    frames = [
        frame_boxes([(1, "van", 0.5, [0, 0, 1, 1])]),
        frame_boxes([(1, "car", 0.5, [0, 0, 1, 1])]),
        frame_boxes([(1, "car", 0.5, [0, 0, 1, 1])]),
    ]
    tracks = Tracks(frames=frames, fps=5)  # a list is accepted and kept as a tuple
    assert isinstance(tracks.frames, tuple)
    assert tracks.track_summaries()[0].label == "car"
    assert tracks.all_class_names == ("van", "car")


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        ([frame_boxes([])], 0.0, "fps must be positive"),
        ([], 10.0, "at least one frame"),
        ([frame_boxes([]), "boxes"], 10.0, "frame 1 is a str, not Boxes"),
        (
            [Boxes(np.zeros((1, 4)), ("car",), np.ones(1), (H, W))],
            10.0,
            "frame 0 has boxes without track_ids",
        ),
        ([frame_boxes([]), frame_boxes([], size=(H, W + 2))], 10.0, r"frame 1 is \(48, 66\)"),
    ],
)
def test_tracks_reject_inconsistent_frames(frames, fps, message):
    with pytest.raises(ValueError, match=message):
        Tracks(frames=tuple(frames), fps=fps)


def test_summary_counts_tracks_boxes_and_classes():
    summary = output_summary(sample_tracks())
    assert summary["kind"] == "tracks" and summary["frames"] == 6 and summary["fps"] == 10.0
    assert summary["image_size"] == [H, W]
    assert (summary["num_tracks"], summary["num_boxes"]) == (2, 7)
    assert summary["boxes_per_class"] == {"person": 2, "car": 5, "truck": 0}
    assert summary["tracks"][1] == {
        "track_id": 7,
        "label": "car",
        "first_frame": 0,
        "last_frame": 4,
        "frames": 5,
        "mean_score": 0.7,
    }
    json.dumps(summary)  # JSON-ready as it is


# ---------------------------------------------------------------- exports of tracks


def test_tracks_export_jsonl_coco_yolo_and_an_overlay_video(tmp_path):
    tracks = sample_tracks()
    video = gradient_video(6)
    files = export_results([result({"tracks": tracks}, video)], tmp_path)
    folder = tmp_path / "clip"

    lines = [json.loads(x) for x in (folder / "tracks.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(6))
    assert lines[3]["time_s"] == 0.3 and lines[5]["boxes"] == []
    assert lines[2]["boxes"] == [
        {"track_id": 7, "label": "car", "score": 0.7, "xyxy": [12.0, 10.0, 28.0, 30.0]},
        {"track_id": 3, "label": "person", "score": 0.8, "xyxy": [40.0, 5.0, 50.0, 40.0]},
    ]

    coco = json.loads((folder / "tracks.coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["person", "car", "truck"]
    assert coco["images"][4] == {
        "id": 5,
        "file_name": "frame_000004",
        "width": W,
        "height": H,
        "frame_index": 4,
    }
    assert len(coco["annotations"]) == 7
    person = [a for a in coco["annotations"] if a["track_id"] == 3]
    assert [a["image_id"] for a in person] == [3, 4] and person[0]["category_id"] == 1
    assert person[0]["bbox"] == [40.0, 5.0, 10.0, 35.0]

    yolo = folder / "tracks.yolo"
    assert (yolo / "classes.txt").read_text().splitlines() == ["person", "car", "truck"]
    assert len(list(yolo.glob("frame_*.txt"))) == 6
    assert (yolo / "frame_000005.txt").read_text() == ""
    cls, *values = (yolo / "frame_000003.txt").read_text().splitlines()[1].split()
    assert cls == "0"  # person, the first class
    expected = [45 / W, 22.5 / H, 10 / W, 35 / H, 0.8]
    assert [float(v) for v in values] == pytest.approx(expected, abs=1e-6)

    frames, fps = decode(folder / "tracks_overlay.mp4")
    assert frames.shape == (6, H, W, 3) and fps == 10.0
    # the box outline differs from the plain frame; far from any box the frame is unchanged
    car_edge = frames[0, 20, 4].astype(int) - video.frames[0, 20, 4].astype(int)
    assert np.abs(car_edge).max() > 60
    assert np.abs(frames[0, 44, 30].astype(int) - video.frames[0, 44, 30].astype(int)).max() < 12

    summary = json.loads((folder / "result.json").read_text())
    assert summary["outputs"]["tracks"]["num_tracks"] == 2
    assert sorted(summary["files"]) == sorted(str(p.relative_to(tmp_path)) for p in files[:-2])
    assert "clip/tracks_overlay.mp4" in summary["files"]


def test_the_overlay_follows_the_video_by_time_when_frame_rates_differ(tmp_path):
    tracks = Tracks(frames=tuple(frame_boxes([]) for _ in range(5)), fps=5.0)
    video = gradient_video(10, fps=10.0)  # frame t has brightness 10 * t
    export_results([result({"tracks": tracks}, video)], tmp_path)
    frames, fps = decode(tmp_path / "clip" / "tracks_overlay.mp4")
    assert frames.shape[0] == 5 and fps == 5.0
    for k in range(5):  # tracks frame k is video frame 2k
        assert abs(int(frames[k, H // 2, 0, 0]) - 20 * k) <= 3
    assert [frame_index(t, 5.0, 10.0) for t in range(3)] == [0, 2, 4]


@pytest.mark.parametrize(
    "source",
    [
        Image(np.zeros((H, W, 3), np.uint8), name="clip"),
        Video(np.zeros((3, H + 2, W, 3), np.uint8), name="clip"),  # another frame size
        Video(np.zeros((3, H, W, 2), np.uint8), name="clip"),  # not displayable
    ],
)
def test_no_overlay_without_a_video_of_the_same_size(tmp_path, source):
    export_results([result({"tracks": sample_tracks()}, source)], tmp_path)
    assert (tmp_path / "clip" / "tracks.jsonl").exists()
    assert not (tmp_path / "clip" / "tracks_overlay.mp4").exists()


def test_without_pyav_tracks_are_exported_without_the_overlay(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    assert not mp4_available()
    export_results([result({"tracks": sample_tracks()}, gradient_video(6))], tmp_path)
    names = sorted(p.name for p in (tmp_path / "clip").iterdir())
    assert names == ["result.json", "tracks.coco.json", "tracks.jsonl", "tracks.yolo"]


# ---------------------------------------------------------------- MP4 export of videos


def test_a_long_video_is_written_as_mp4_only(tmp_path):
    video = gradient_video(300, fps=25.0)  # over GIF_MAX_FRAMES
    export_results([result({"clip": video}, video)], tmp_path)
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == ["clip.mp4", "result.json"]
    frames, fps = decode(tmp_path / "clip" / "clip.mp4")
    assert frames.shape == (300, H, W, 3) and fps == 25.0
    error = np.abs(frames[::50].astype(int) - video.frames[::50].astype(int)).mean()
    assert error < 3


def test_the_pixel_budget_decides_between_mp4_only_and_all_formats(tmp_path, monkeypatch):
    video = gradient_video(10)
    monkeypatch.setattr(images, "SMALL_VIDEO_MAX_PIXELS", 10 * H * W - 1)
    export_results([result({"clip": video}, video)], tmp_path / "over")
    assert sorted(p.name for p in (tmp_path / "over" / "clip").iterdir()) == [
        "clip.mp4",
        "result.json",
    ]
    monkeypatch.setattr(images, "SMALL_VIDEO_MAX_PIXELS", 10 * H * W)
    export_results([result({"clip": video}, video)], tmp_path / "within")
    folder = tmp_path / "within" / "clip"
    assert {"clip.mp4", "clip.gif", "clip"} <= {p.name for p in folder.iterdir()}
    assert len(list((folder / "clip").glob("frame_*.png"))) == 10
    # 10 s of 720p at 25 fps is over the default budget (shape only: a zero-copy view)
    monkeypatch.undo()
    hd = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (250, 720, 1280, 3))
    assert not small_video(hd) and small_video(hd[:, :360, :640])


def test_odd_sizes_and_float_frames_still_make_an_mp4(tmp_path):
    frames = np.linspace(0, 1, 3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7, 1)
    export_results([result({"heat": Video(frames, fps=2)})], tmp_path)
    decoded, _ = decode(tmp_path / "result" / "heat.mp4")
    assert decoded.shape == (3, 6, 8, 3)  # padded to even
    assert decoded[2, 4, 6].mean() > decoded[0, 0, 0].mean() + 100  # one range for all frames
    rgb = as_rgb_frames(frames)
    assert rgb is not None and rgb.dtype == np.uint8 and rgb.max() == 255 and rgb.min() == 0
    assert as_rgb_frames(np.zeros((2, 4, 4, 2), np.uint8)) is None


def test_encode_mp4_takes_frames_one_by_one_and_refuses_bad_frames():
    data = encode_mp4((np.full((4, 6, 3), 100, np.uint8) for _ in range(3)), fps=0.5)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 3 and stream.average_rate == 0.5
    with pytest.raises(ValueError, match="at least one frame"):
        encode_mp4(np.zeros((0, 4, 4, 3), np.uint8), 25)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_mp4(np.zeros((2, 4, 4, 3), np.float32), 25)
    with pytest.raises(ValueError, match="frame 1 is"):
        encode_mp4([np.zeros((4, 4, 3), np.uint8), np.zeros((6, 4, 3), np.uint8)], 25)
    with pytest.raises(ValueError, match="fps must be positive"):
        encode_mp4(np.zeros((1, 4, 4, 3), np.uint8), 0)
