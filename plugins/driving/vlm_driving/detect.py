"""`driving.detect`: boxes with classes and scores in images; in videos also ByteTrack track ids.

Images give ``detections`` (:class:`~vlm_core.types.Boxes`: the core writes the overlay, COCO
JSON and YOLO txt). Videos give ``tracks`` (:class:`~vlm_core.types.Tracks`: the core writes
the annotated MP4, per-frame JSONL, COCO JSON and YOLO txt) and ``summary`` (frames, tracks,
frames per second of detection plus tracking).

Videos run in batches of frames; the detector keeps boxes down to the tracker's low score so
that ByteTrack's second association can continue a track through a weak detection, and the
frames report only the boxes of confirmed tracks.

Every input gets a familiarity verdict (``ood``) from the pooled pyramid features the
detector computed for it (:mod:`vlm_driving.features`): an image from its own row, a video
from :func:`video_verdict` over its frames' rows. Weights without a familiarity model give
``None``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from vlm_core.errors import InputError
from vlm_core.familiarity import Ood
from vlm_core.tasks import RunContext
from vlm_core.types import Boxes, Image, Input, Metrics, Output, Tracks, Video
from vlm_driving.detector import Detections, Detector, DetectSettings, load_detector
from vlm_driving.params import DetectorParams, DetectParams

#: Frames detected together in a video (at least; the run's batch size when larger).
VIDEO_BATCH = 8
#: The lowest score ByteTrack's second association looks at, as a raw detector score (what
#: it was tuned on; with calibrated scores it is :meth:`Detector.score_of` this).
LOW_SCORE = 0.1


def wanted_classes(text: str, class_names: Sequence[str]) -> set[int] | None:
    """The class indices of a comma-separated filter (None: every class)."""
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not names:
        return None
    lookup = {c.lower(): i for i, c in enumerate(class_names)}
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise InputError(
            f"unknown class '{unknown[0]}' in classes "
            f"(this detector finds: {', '.join(class_names)})"
        )
    return {lookup[n] for n in names}


def _keep(found: Detections, classes: set[int] | None, score: float) -> Detections:
    mask = found.scores >= score
    if classes is not None:
        mask &= np.isin(found.labels, sorted(classes))
    return Detections(found.xyxy[mask], found.scores[mask], found.labels[mask])


def as_boxes(
    xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    names: tuple[str, ...],
    track_ids: np.ndarray | None = None,
) -> Boxes:
    """Detections as the core's :class:`Boxes` (``labels``: class indices into ``names``)."""
    return Boxes(
        xyxy=xyxy.astype(np.float32).reshape(-1, 4),
        labels=tuple(names[int(i)] for i in labels),
        scores=scores.astype(np.float32),
        image_size=size,
        track_ids=track_ids,
        class_names=names,
    )


def image_verdicts(detector: Detector, found: Sequence[Detections]) -> list[Ood | None]:
    """The familiarity verdict of each image from its detections' features."""
    rows = [dets.features for dets in found]
    if not found or any(row is None for row in rows):
        return [None] * len(found)
    return detector.judge(np.stack(rows))  # type: ignore[arg-type]


def video_verdict(detector: Detector, rows: Sequence[np.ndarray | None]) -> Ood | None:
    """The familiarity verdict of a video from its frames' features: the verdict of the
    frames' mean row (see the plugin README for why the mean row)."""
    if not rows or any(row is None for row in rows):
        return None
    return detector.judge(np.stack(rows).mean(0, keepdims=True))[0]  # type: ignore[arg-type]


def detect_images(
    detector: Detector, images: Sequence[Image], params: DetectorParams
) -> list[tuple[dict[str, Output], Ood | None]]:
    """The boxes of each image and its familiarity verdict (one detector call for the
    batch)."""
    classes = wanted_classes(params.classes, detector.class_names)
    found = detector([image.to_rgb_uint8() for image in images], settings_of(params, detector))
    results: list[tuple[dict[str, Output], Ood | None]] = []
    for image, dets, verdict in zip(images, found, image_verdicts(detector, found), strict=True):
        kept = _keep(dets, classes, params.score_threshold)
        size = (image.height, image.width)
        boxes = as_boxes(kept.xyxy, kept.scores, kept.labels, size, detector.class_names)
        results.append(({"detections": boxes}, verdict))
    return results


def track_video(
    detector: Detector,
    video: Video,
    params: DetectorParams,
    ctx: RunContext,
) -> tuple[dict[str, Output], Ood | None]:
    """Detect in every frame and link the boxes into tracks; report frames per second. With
    the video's familiarity verdict."""
    classes = wanted_classes(params.classes, detector.class_names)
    names = detector.class_names
    settings = settings_of(params, detector)
    low = detector.score_of(LOW_SCORE)
    frames = video.frames
    count, size = int(frames.shape[0]), (int(frames.shape[1]), int(frames.shape[2]))
    high = params.score_threshold
    # imported for videos only: it pulls in scipy and torchvision.ops (0.3 s at start-up)
    from vlm_driving.tracking import ByteTracker, TrackerConfig

    config = TrackerConfig(
        high_score=max(high, low + 1e-3),
        low_score=low,
        new_track_score=min(0.95, high + 0.1),
        max_lost=max(1, round(params.track_seconds * video.fps)),
    )
    tracker = ByteTracker(config) if params.track else None
    batch = max(VIDEO_BATCH, ctx.batch_size)
    out: list[Boxes] = []
    rows: list[np.ndarray | None] = []
    detect_s = track_s = 0.0
    started = time.perf_counter()
    for start in range(0, count, batch):
        chunk = [np.asarray(Image(pixels=f).to_rgb_uint8()) for f in frames[start : start + batch]]
        t0 = time.perf_counter()
        found = detector(chunk, settings)
        detect_s += time.perf_counter() - t0
        t1 = time.perf_counter()
        rows += [dets.features for dets in found]
        for dets in found:
            if tracker is None:
                kept = _keep(dets, classes, high)
                ids = np.full(len(kept.scores), -1, dtype=np.int64)
                out.append(as_boxes(kept.xyxy, kept.scores, kept.labels, size, names, ids))
                continue
            kept = _keep(dets, classes, low)
            tracked = tracker.update(kept.xyxy, kept.scores, kept.labels)
            out.append(
                as_boxes(
                    tracked.xyxy,
                    tracked.scores,
                    tracked.labels,
                    size,
                    names,
                    tracked.track_ids.astype(np.int64),
                )
            )
        track_s += time.perf_counter() - t1
        ctx.report(min(1.0, (start + len(chunk)) / count), f"frame {start + len(chunk)} / {count}")
    total = time.perf_counter() - started
    tracks = Tracks(frames=tuple(out), fps=video.fps, class_names=names)
    ids = {
        int(i)
        for boxes in out
        for i in (boxes.track_ids if boxes.track_ids is not None else [])
        if i >= 0
    }
    summary = Metrics(
        values={
            "frames": float(count),
            "tracks": float(len(ids)),
            "boxes_per_frame": tracks.num_boxes / max(count, 1),
            "fps": count / max(total, 1e-9),
            "detector_ms_per_frame": 1000 * detect_s / max(count, 1),
            "tracker_ms_per_frame": 1000 * track_s / max(count, 1),
            "video_fps": float(video.fps),
        }
    )
    return {"tracks": tracks, "summary": summary}, video_verdict(detector, rows)


def settings_of(params: DetectorParams, detector: Detector) -> DetectSettings:
    """The detector's settings for a run: boxes down to the tracker's low score (the frames
    and images report only those above ``score_threshold``)."""
    return DetectSettings(
        score=min(detector.score_of(LOW_SCORE), params.score_threshold),
        nms_iou=params.nms_iou,
        max_detections=params.max_detections,
        input_size=params.input_size,
    )


def detector_of(params: DetectorParams, ctx: RunContext) -> Detector:
    """The detector a run's parameters name (weights, or a torchvision COCO model), on the
    run's device through the core's model cache: what a run and its explanations load."""
    return load_detector(
        params.weights,
        coco_model=params.coco_model,
        coco_weights=params.coco_weights,
        dtype=ctx.dtype,
        ctx=ctx,
    )


def run(inputs: Sequence[Input], params: DetectParams, ctx: RunContext) -> list[dict[str, Output]]:
    for item in inputs:
        if not isinstance(item, Image | Video):
            raise InputError(f"driving.detect takes images and videos, not {type(item).__name__}")
    detector = detector_of(params, ctx)
    params = detector.loaded.run_params(params)  # the card's inference settings unless given
    images = detect_images(detector, [i for i in inputs if isinstance(i, Image)], params)
    results: list[dict[str, Output]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, Video):
            outputs, verdict = track_video(detector, item, params, ctx)
        else:
            outputs, verdict = images.pop(0)
        ctx.record_ood(index, verdict)
        results.append(outputs)
    return results
