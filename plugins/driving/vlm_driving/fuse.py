"""`driving.fuse`: the camera detector's boxes on a camera + LiDAR scene, each with its
distance from the LiDAR points in it.

Each input is a :class:`~vlm_core.types.Scene` (a KITTI-layout frame or sequence). Its images
are detected exactly as `driving.detect` detects images (one frame) or a video (a sequence: the
frames tracked with ByteTrack, :func:`vlm_driving.detect.track_video`), with the same weights
and parameters; then every reported box is ranged by :func:`vlm_driving.fusion.range_boxes`.
The output is ``objects`` (:class:`~vlm_driving.fuse_outputs.Ranges`, the kind
``driving.ranges``): its files and its dashboard view draw the boxes with their distances, the
sweep's points on the image and the bird's-eye view from the input scene.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlm_core.errors import InputError
from vlm_core.familiarity import Ood
from vlm_core.tasks import RunContext
from vlm_core.types import Boxes, Input, Output, Scene, Tracks, Video
from vlm_driving.detect import detect_images, detector_of, track_video
from vlm_driving.detector import Detector
from vlm_driving.fuse_outputs import RangedFrame, Ranges
from vlm_driving.fusion import FusionSettings, range_boxes
from vlm_driving.params import FuseParams


def fusion_settings(params: FuseParams) -> FusionSettings:
    """The fusion's settings from a run's parameters."""
    return FusionSettings(
        min_points=params.min_points,
        ground_tolerance=params.ground_tolerance,
        box_shrink=params.box_shrink,
    )


def ranged(scene: Scene, frames: Sequence[Boxes], settings: FusionSettings) -> Ranges:
    """Each frame's boxes with their distances."""
    out = []
    for t, boxes in enumerate(frames):
        found = range_boxes(scene, t, boxes.xyxy, settings)
        out.append(
            RangedFrame(
                boxes=boxes,
                distance=found.distance,
                points=found.points,
                confidence=found.confidence,
                location=found.location,
                lidar=found.lidar,
                frame_id=scene.frame_id(t),
            )
        )
    return Ranges(frames=tuple(out), fps=scene.fps, min_points=settings.min_points)


def detect_scene(
    detector: Detector, scene: Scene, params: FuseParams, ctx: RunContext
) -> tuple[list[Boxes], Ood | None]:
    """The boxes of each frame as `driving.detect` finds them (a sequence tracked as a
    video), and the familiarity verdict."""
    if len(scene) == 1:
        [(outputs, verdict)] = detect_images(detector, scene.images, params)
        boxes = outputs["detections"]
        assert isinstance(boxes, Boxes)
        return [boxes], verdict
    sizes = {(image.height, image.width) for image in scene.images}
    if len(sizes) > 1:
        where = scene.source or scene.name
        raise InputError(
            f"{where}: the frames of a sequence must share one image size, got {sizes}"
        )
    frames = np.stack([image.to_rgb_uint8() for image in scene.images])
    outputs, verdict = track_video(detector, Video(frames=frames, fps=scene.fps), params, ctx)
    tracks = outputs["tracks"]
    assert isinstance(tracks, Tracks)
    return list(tracks.frames), verdict


def run(inputs: Sequence[Input], params: FuseParams, ctx: RunContext) -> list[dict[str, Output]]:
    for item in inputs:
        if not isinstance(item, Scene):
            raise InputError(f"driving.fuse takes camera + LiDAR scenes, not {type(item).__name__}")
    detector = detector_of(params, ctx)
    params = detector.loaded.run_params(params)  # the card's inference settings unless given
    settings = fusion_settings(params)
    results: list[dict[str, Output]] = []
    for index, scene in enumerate(inputs):
        assert isinstance(scene, Scene)
        frames, verdict = detect_scene(detector, scene, params, ctx)
        ctx.record_ood(index, verdict)
        results.append({"objects": ranged(scene, frames, settings)})
    return results
