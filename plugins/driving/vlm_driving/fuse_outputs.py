"""The output kind ``driving.ranges``: every detected object of a camera + LiDAR scene with its
distance, and what the host does with it (JSON summary, `vlm run` line, files, dashboard).

:class:`Ranges` holds one :class:`RangedFrame` per frame of the scene: the frame's
:class:`~vlm_core.types.Boxes` (with track ids for a sequence) and, per box, the distance in
metres (NaN: fewer than ``min_points`` LiDAR points fell in the box, not measured), the point
count, a confidence in [0, 1] and the 3D location in the camera and LiDAR frames
(:mod:`vlm_driving.fusion`).

Files (``vlm run --out``), for an output named ``objects``:

- ``kitti``: ``objects.kitti/NNNNNN.txt`` per frame, KITTI's results format (a label line
  with a score; :func:`vlm_driving.kitti.write_labels`): the 2D box, the location from the
  distance (the bottom centre of the object's visible face, not of its 3D box), dimensions,
  alpha and rotation unknown (KITTI's -1 and -10), location -1000 where there is no distance;
- ``json``: ``objects.json``, the summary;
- ``overlay`` (a preview): ``objects_overlay.jpg``, the boxes labelled ``car 12.3 m`` on the
  camera image; for a sequence ``objects_overlay.mp4``, the tracks with their distances over
  time;
- ``points``: ``objects_points.png`` (a sequence: ``.mp4``), the sweep's points on the camera
  image coloured by depth;
- ``bev``: ``objects_bev.png`` (a sequence: ``objects_bev/NNNNNN.png``), the bird's-eye view of
  the sweep with each measured object's face marked and labelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from vlm_core.types import Boxes, Scene

#: The kind's name (the driving plugin registers it).
KIND = "driving.ranges"
#: What a missing distance means, in every summary.
NAN_NOTE = "distance_m is null where fewer than {n} LiDAR points fell in the box (not measured)"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, eq=False)
class RangedFrame:
    """One frame's objects: ``boxes`` and, per box, ``distance`` (N,) metres (the forward,
    camera-z distance to the object's visible face; NaN: not measured), ``points`` (N,) the
    non-ground LiDAR points in the box, ``confidence`` (N,) in [0, 1], ``location`` (N, 3) in
    the camera frame (x right, y down, z forward) and ``lidar`` (N, 3) in the LiDAR frame (x
    forward, y left, z up): the bottom centre of the box's ray at that distance."""

    boxes: Boxes
    distance: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    location: np.ndarray
    lidar: np.ndarray
    frame_id: str = ""

    def __post_init__(self) -> None:
        n = len(self.boxes)
        for name in ("distance", "points", "confidence"):
            shape = getattr(self, name).shape
            _check(shape == (n,), f"{name} must be ({n},) for {n} boxes, got {shape}")
        for name in ("location", "lidar"):
            shape = getattr(self, name).shape
            _check(shape == (n, 3), f"{name} must be ({n}, 3) for {n} boxes, got {shape}")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def measured(self) -> np.ndarray:
        """(N,) bool: the boxes with a distance."""
        return np.isfinite(self.distance)


@dataclass(frozen=True, eq=False)
class Ranges:
    """The objects of every frame of a scene with their distances (``frames[t]`` is frame t's
    :class:`RangedFrame`), at ``fps``; distances need ``min_points`` points in a box."""

    kind: ClassVar[str] = KIND
    frames: tuple[RangedFrame, ...]
    fps: float = 10.0
    min_points: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        _check(len(self.frames) > 0, "ranges need at least one frame")
        _check(self.fps > 0, f"fps must be positive, got {self.fps}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def class_names(self) -> tuple[str, ...]:
        names: dict[str, None] = {}
        for frame in self.frames:
            names.update(dict.fromkeys(frame.boxes.all_class_names))
        return tuple(names)


# --------------------------------------------------------------------------- summary, line


def _number(value: float, digits: int) -> float | None:
    return round(float(value), digits) if math.isfinite(float(value)) else None


def frame_objects(frame: RangedFrame) -> list[dict[str, Any]]:
    """One JSON object per box: class, score, track id (in a sequence), box, distance_m
    (None: not measured), points, confidence, location (camera frame, metres)."""
    boxes = frame.boxes
    rows = []
    for i in range(len(boxes)):
        row: dict[str, Any] = {"class": boxes.labels[i], "score": round(float(boxes.scores[i]), 4)}
        if boxes.track_ids is not None:
            row["track_id"] = int(boxes.track_ids[i])
        row["box"] = [round(float(v), 1) for v in boxes.xyxy[i]]
        row["distance_m"] = _number(frame.distance[i], 2)
        row["points"] = int(frame.points[i])
        row["confidence"] = round(float(frame.confidence[i]), 3)
        location = [_number(v, 2) for v in frame.location[i]]
        row["location"] = location if None not in location else None
        rows.append(row)
    return rows


def summary(ranges: Ranges) -> dict[str, Any]:
    """The JSON summary: counts, the nearest object, and per frame every object."""
    objects = sum(len(f) for f in ranges.frames)
    measured = sum(int(f.measured.sum()) for f in ranges.frames)
    nearest: dict[str, Any] | None = None
    for frame in ranges.frames:
        if frame.measured.any():
            i = int(np.nanargmin(frame.distance))
            if nearest is None or frame.distance[i] < nearest["distance_m"]:
                nearest = {
                    "class": frame.boxes.labels[i],
                    "distance_m": round(float(frame.distance[i]), 2),
                    "frame": frame.frame_id,
                }
    out: dict[str, Any] = {
        "frames": len(ranges),
        "fps": ranges.fps,
        "objects": objects,
        "measured": measured,
        "min_points": ranges.min_points,
        "note": NAN_NOTE.format(n=ranges.min_points),
        "nearest": nearest,
        "per_frame": [{"frame": f.frame_id, "objects": frame_objects(f)} for f in ranges.frames],
    }
    ids = {
        int(i)
        for f in ranges.frames
        if f.boxes.track_ids is not None
        for i in f.boxes.track_ids.tolist()
        if i >= 0
    }
    if len(ranges) > 1:
        out["tracks"] = len(ids)
    return out


def cli_line(found: Mapping[str, Any]) -> str:
    """``7 objects, 6 with distances, nearest car at 8.4 m`` (a sequence: ``in 12 frames``)."""
    count, frames = int(found["objects"]), int(found["frames"])
    text = f"{count} object{'s' if count != 1 else ''}"
    if frames > 1:
        text += f" in {frames} frames"
        if "tracks" in found:
            text += f" ({found['tracks']} tracks)"
    text += f", {found['measured']} with distances"
    nearest = found.get("nearest")
    if nearest:
        text += f", nearest {nearest['class']} at {nearest['distance_m']:.1f} m"
    return text


# --------------------------------------------------------------------------- pictures


def label_of(frame: RangedFrame, i: int) -> str:
    """``#3 car 12.3 m`` (just ``car`` without a distance)."""
    boxes = frame.boxes
    distance = frame.distance[i]
    text = f"{boxes.labels[i]} {distance:.1f} m" if math.isfinite(distance) else boxes.labels[i]
    if boxes.track_ids is not None and boxes.track_ids[i] >= 0:
        text = f"#{int(boxes.track_ids[i])} {text}"
    return text


def _colours(frame: RangedFrame, names: Sequence[str] = ()) -> list[tuple[int, int, int]]:
    """Each box's colour: the palette colour of its class's place in ``names`` (then the
    frame's other classes), as the core's box overlays colour classes."""
    from vlm_core.export.images import colour

    order = list(names) + [c for c in frame.boxes.all_class_names if c not in names]
    return [colour(order.index(label)) for label in frame.boxes.labels]


def ranges_overlay(rgb: np.ndarray, frame: RangedFrame, names: Sequence[str] = ()) -> np.ndarray:
    """The boxes on a copy of ``rgb`` (H, W, 3) uint8, each labelled with its class and
    distance (:func:`label_of`); unmeasured boxes dashed-thin. ``names`` fix the colours (by
    class order)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    colours = _colours(frame, names)
    im = PILImage.fromarray(rgb).convert("RGB")
    draw = ImageDraw.Draw(im)
    width = max(1, round(min(im.size) / 300))
    for i, (box, c) in enumerate(zip(frame.boxes.xyxy.tolist(), colours, strict=True)):
        x1, y1, x2, y2 = box
        measured = bool(frame.measured[i])
        draw.rectangle((x1, y1, x2, y2), outline=c, width=width if measured else 1)
        text = label_of(frame, i)
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        ty = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, ty, x1 + (right - left) + 4, ty + (bottom - top) + 2), fill=c)
        draw.text((x1 + 2, ty), text, fill=(0, 0, 0))
    return np.asarray(im)


def bev_marks(frame: RangedFrame, scene: Scene, t: int, names: Sequence[str] = ()) -> list[Any]:
    """One :class:`~vlm_core.export.scene_views.BevMark` per measured object: a bar across its
    visible face (its width measured from the box's pixel width at that distance, 0.5 m deep),
    labelled like the overlay."""
    from vlm_core.export.scene_views import BevMark

    colours = _colours(frame, names)
    focal = float(scene.projection[0, 0]) or 1.0
    marks = []
    for i in np.flatnonzero(frame.measured):
        x1, _, x2, _ = frame.boxes.xyxy[i]
        width = float(x2 - x1) * float(frame.distance[i]) / focal
        x, y, _ = frame.lidar[i]
        marks.append(
            BevMark(
                x=float(x) + 0.25,
                y=float(y),
                length=0.5,
                width=width,
                label=label_of(frame, int(i)),
                colour=colours[i],
            )
        )
    return marks


def _scene_of(item: Any, ranges: Ranges) -> Scene | None:
    source = item.source
    if isinstance(source, Scene) and len(source) == len(ranges):
        return source
    return None


def _image_of(scene: Scene | None, frame: RangedFrame, t: int) -> np.ndarray:
    """Frame ``t``'s camera image, or grey of the boxes' image size without the scene."""
    if scene is not None and (scene.images[t].height, scene.images[t].width) == tuple(
        frame.boxes.image_size
    ):
        return scene.images[t].to_rgb_uint8()
    return np.full((*frame.boxes.image_size, 3), 48, np.uint8)


def _name(ranges: Ranges, t: int) -> str:
    return ranges.frames[t].frame_id or f"{t:06d}"


# --------------------------------------------------------------------------- exporters


def kitti_objects(frame: RangedFrame) -> list[Any]:
    """The frame's objects as :class:`vlm_driving.kitti.KittiObject` result lines."""
    from vlm_driving.kitti import KittiObject, to_kitti_type

    objects = []
    for i in range(len(frame)):
        fields: dict[str, Any] = {}
        if frame.measured[i]:
            fields["location"] = tuple(float(v) for v in frame.location[i])
        objects.append(
            KittiObject(
                type=to_kitti_type(frame.boxes.labels[i]),
                bbox=tuple(float(v) for v in frame.boxes.xyxy[i]),  # type: ignore[arg-type]
                score=float(frame.boxes.scores[i]),
                **fields,
            )
        )
    return objects


def export_kitti(item: Any, name: str, ranges: Ranges) -> None:
    """``<name>.kitti/NNNNNN.txt``: one KITTI results file per frame (named by its frame id)."""
    from vlm_driving.kitti import write_labels

    for t, frame in enumerate(ranges.frames):
        path = item.folder / f"{name}.kitti" / f"{_name(ranges, t)}.txt"
        write_labels(path, kitti_objects(frame))
        item.add(path)


def export_json(item: Any, name: str, ranges: Ranges) -> None:
    """``<name>.json``: the summary (as in ``result.json``)."""
    from vlm_core.export.writer import dumps

    item.write_text(dumps(item.summarise(ranges)), item.folder / f"{name}.json")


def _overlays(ranges: Ranges, scene: Scene | None) -> Iterator[np.ndarray]:
    names = ranges.class_names
    for t, frame in enumerate(ranges.frames):
        yield ranges_overlay(_image_of(scene, frame, t), frame, names)


def export_overlay(item: Any, name: str, ranges: Ranges) -> None:
    """A preview: ``<name>_overlay.jpg`` (``.png`` with ``--preview-format png``); for a
    sequence ``<name>_overlay.mp4`` (with PyAV), else ``<name>_overlay/NNNNNN.jpg``."""
    from vlm_core.export.video import encode_mp4, mp4_available

    scene = _scene_of(item, ranges)
    views = _overlays(ranges, scene)
    if len(ranges) == 1:
        item.image(next(views), item.folder / f"{name}_overlay")
    elif mp4_available():
        item.write_bytes(encode_mp4(views, ranges.fps), item.folder / f"{name}_overlay.mp4")
    else:
        for t, view in enumerate(views):
            item.image(view, item.folder / f"{name}_overlay" / _name(ranges, t))


def export_points(item: Any, name: str, ranges: Ranges) -> None:
    """``<name>_points.png`` (a sequence: ``.mp4``): the sweep's points on the camera image,
    coloured by depth, as the core draws a scene; nothing without the input scene."""
    from vlm_core.export.exporters import scene_points

    scene = _scene_of(item, ranges)
    if scene is not None:
        scene_points(item, name, scene)


def export_bev(item: Any, name: str, ranges: Ranges) -> None:
    """``<name>_bev.png`` (a sequence: ``<name>_bev/NNNNNN.png``): the bird's-eye view of the
    sweep with the measured objects marked; nothing without the input scene."""
    from vlm_core.export.scene_views import bird_eye_view

    scene = _scene_of(item, ranges)
    if scene is None:
        return
    names = ranges.class_names
    for t, frame in enumerate(ranges.frames):
        view = bird_eye_view(scene, t, marks=bev_marks(frame, scene, t, names))
        path = item.folder / f"{name}_bev"
        item.image(view, path if len(ranges) == 1 else path / _name(ranges, t))


# --------------------------------------------------------------------------- dashboard


def table_rows(frame: RangedFrame) -> list[dict[str, Any]]:
    """The dashboard's table: one row per object, nearest first (unmeasured last)."""
    rows = frame_objects(frame)
    for row in rows:
        row["box"] = ", ".join(f"{v:.0f}" for v in row["box"])
        row.pop("location", None)
    return sorted(rows, key=lambda r: (r["distance_m"] is None, r["distance_m"] or 0.0))


def render(name: str, ranges: Ranges, source: Any, key: str, **_: Any) -> None:
    """The Run page: a frame slider for a sequence; the camera image with boxes and distances
    beside the bird's-eye view, the LiDAR points on the image coloured by depth, and a table
    of the objects."""
    import streamlit as st

    from vlm_core.export.scene_views import bird_eye_view, points_overlay

    scene = source if isinstance(source, Scene) and len(source) == len(ranges) else None
    t = 0
    if len(ranges) > 1:
        t = int(st.slider("Frame", 0, len(ranges) - 1, 0, key=f"{key}:{name}:frame"))
    frame = ranges.frames[t]
    count, measured = len(frame), int(frame.measured.sum())
    st.caption(
        f"frame {_name(ranges, t)} · {count} objects, {measured} with distances "
        f"(at least {ranges.min_points} LiDAR points in the box)"
    )
    image = ranges_overlay(_image_of(scene, frame, t), frame, ranges.class_names)
    if scene is None:
        st.image(image, caption="objects and distances (no input scene to draw on)")
    else:
        left, right = st.columns([3, 2])
        left.image(image, caption="objects and distances")
        marks = bev_marks(frame, scene, t, ranges.class_names)
        right.image(bird_eye_view(scene, t, marks=marks), caption="bird's-eye view · forward up")
        st.image(points_overlay(scene, t), caption="LiDAR points on the image · near red, far blue")
    if count:
        st.dataframe(table_rows(frame), hide_index=True, key=f"{key}:{name}:table")
    else:
        st.info("No objects in this frame.")
