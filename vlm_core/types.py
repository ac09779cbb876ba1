"""Core typed data: what tasks receive and return.

Arrays are numpy arrays in the layouts stated on each class. Every output type has an exporter
in :mod:`vlm_core.export` and a renderer in the dashboard, so plugins get both for free.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import numpy as np

from vlm_core.kinds import Kind


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, eq=False)
class Image:
    """A 2D image. ``pixels``: (H, W) or (H, W, C) with C in {1, 3, 4}; uint8, uint16 or float."""

    kind: ClassVar[Kind] = Kind.IMAGE
    pixels: np.ndarray
    name: str = ""
    source: Path | None = None

    def __post_init__(self) -> None:
        p = self.pixels
        _check(p.ndim in (2, 3), f"image pixels must be (H, W) or (H, W, C), got shape {p.shape}")
        _check(p.ndim == 2 or p.shape[2] in (1, 3, 4), f"image has {p.shape[-1]} channels")

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def to_rgb_uint8(self) -> np.ndarray:
        """(H, W, 3) uint8 for display and overlays; other dtypes are rescaled to their range."""
        p = self.pixels
        if p.dtype != np.uint8:
            p = p.astype(np.float32)
            lo, hi = (
                (0.0, 1.0)
                if p.max(initial=0) <= 1.0 and p.min(initial=0) >= 0
                else (float(p.min(initial=0)), float(p.max(initial=1)))
            )
            p = np.clip((p - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
        if p.ndim == 2:
            p = p[:, :, None]
        if p.shape[2] == 1:
            p = np.repeat(p, 3, axis=2)
        return np.ascontiguousarray(p[:, :, :3])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D (or 3D + channels) volume in voxel order (i, j, k[, c]).

    ``affine`` maps voxel indices to world millimetres (RAS+, as in NIfTI). ``spacing`` is the
    voxel size in millimetres along i, j, k, derived from the affine. ``warnings`` are what the
    reader had to assume about the geometry (one line each, e.g. a slice spacing measured from
    the slice positions because SliceThickness was invalid); they go into the result summary
    of every result made from this volume.
    """

    kind: ClassVar[Kind] = Kind.VOLUME
    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    name: str = ""
    source: Path | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(self.array.ndim in (3, 4), f"volume must be 3D or 4D, got shape {self.array.shape}")
        _check(self.affine.shape == (4, 4), f"affine must be 4x4, got {self.affine.shape}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        s = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(s[0]), float(s[1]), float(s[2]))


@dataclass(frozen=True, eq=False)
class Video:
    """Frames (T, H, W, 3) uint8 at ``fps`` frames per second."""

    kind: ClassVar[Kind] = Kind.VIDEO
    frames: np.ndarray
    fps: float = 25.0
    name: str = ""
    source: Path | None = None

    def __post_init__(self) -> None:
        _check(self.frames.ndim == 4, f"video frames must be (T, H, W, C), got {self.frames.shape}")
        _check(self.fps > 0, f"fps must be positive, got {self.fps}")


@dataclass(frozen=True, eq=False)
class Scene:
    """Camera and LiDAR frames of one sensor rig: ``images[t]`` and ``clouds[t]`` were taken
    together. One frame (a KITTI object frame) or a sequence at ``fps`` (a KITTI tracking
    sequence).

    ``clouds[t]``: (N, 4) float32 — x, y, z in metres in the LiDAR frame (x forward, y left,
    z up, as KITTI's Velodyne) and the return's intensity. ``lidar_to_camera``: (4, 4), the
    rigid transform from the LiDAR frame to the rectified camera frame (x right, y down,
    z forward): KITTI's ``R0_rect · Tr_velo_to_cam``. ``projection``: (3, 4), the rectified
    camera's projection onto image pixels (KITTI's ``P2``). ``frame_ids`` name the frames
    (``"000042"``); ``warnings`` are what the reader had to assume, one line each.
    """

    kind: ClassVar[Kind] = Kind.SCENE
    images: tuple[Image, ...]
    clouds: tuple[np.ndarray, ...]
    projection: np.ndarray
    lidar_to_camera: np.ndarray
    fps: float = 10.0
    frame_ids: tuple[str, ...] = ()
    name: str = ""
    source: Path | None = None
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        object.__setattr__(self, "clouds", tuple(self.clouds))
        _check(len(self.images) > 0, "a scene needs at least one frame")
        _check(
            len(self.images) == len(self.clouds),
            f"a scene has {len(self.images)} images but {len(self.clouds)} point clouds",
        )
        for t, cloud in enumerate(self.clouds):
            _check(
                cloud.ndim == 2 and cloud.shape[1] == 4 and cloud.dtype == np.float32,
                f"scene cloud {t} must be (N, 4) float32, got {cloud.shape} {cloud.dtype}",
            )
        _check(self.projection.shape == (3, 4), f"projection must be 3x4, got "
               f"{self.projection.shape}")  # fmt: skip
        _check(
            self.lidar_to_camera.shape == (4, 4),
            f"lidar_to_camera must be 4x4, got {self.lidar_to_camera.shape}",
        )
        _check(self.fps > 0, f"fps must be positive, got {self.fps}")
        _check(
            not self.frame_ids or len(self.frame_ids) == len(self.images),
            "scene frame_ids must match the number of frames",
        )

    def __len__(self) -> int:
        return len(self.images)

    def frame_id(self, t: int) -> str:
        """The name of frame ``t``: its ``frame_ids`` entry, or its index as six digits."""
        return self.frame_ids[t] if self.frame_ids else f"{t:06d}"

    def camera_points(self, t: int) -> np.ndarray:
        """Frame ``t``'s points in the rectified camera frame, (N, 3) float64 metres."""
        xyz1 = np.c_[self.clouds[t][:, :3].astype(np.float64), np.ones(len(self.clouds[t]))]
        return (xyz1 @ self.lidar_to_camera.T)[:, :3]

    def project(self, t: int, min_depth: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """The points of frame ``t`` that fall on its image: their indices into ``clouds[t]``,
        (M,) int64, and their pixels and depths, (M, 3) float64 (u, v, camera-frame z).

        ``P2 · R0_rect · Tr_velo_to_cam`` applied to every point in front of the camera (depth
        over ``min_depth`` metres), kept where the pixel is inside the image. The two matrices
        are composed once and applied column by column in float32 (a 0.1 M-point sweep in
        about 2 ms, with no BLAS call whose threads a busy machine can stall); pixels agree
        with a float64 projection to about 1e-4 px.
        """
        cloud = self.clouds[t]
        x, y, z = cloud[:, 0], cloud[:, 1], cloud[:, 2]
        to_camera = self.lidar_to_camera.astype(np.float32)
        to_pixels = (self.projection @ self.lidar_to_camera).astype(np.float32)

        def row(m: np.ndarray, i: int, keep: np.ndarray | slice) -> np.ndarray:
            return m[i, 0] * x[keep] + m[i, 1] * y[keep] + m[i, 2] * z[keep] + m[i, 3]

        ahead = np.flatnonzero(row(to_camera, 2, slice(None)) > min_depth)
        w = row(to_pixels, 2, ahead)
        u, v = row(to_pixels, 0, ahead) / w, row(to_pixels, 1, ahead) / w
        image = self.images[t]
        inside = np.flatnonzero((u >= 0) & (u < image.width) & (v >= 0) & (v < image.height))
        index = ahead[inside]
        depth = row(to_camera, 2, index)
        return index, np.stack([u[inside], v[inside], depth], axis=1).astype(np.float64)


@dataclass(frozen=True)
class Text:
    """A piece of text (a customer's message, a prompt)."""

    kind: ClassVar[Kind] = Kind.TEXT
    text: str
    name: str = ""
    source: Path | None = None


@dataclass(frozen=True, eq=False)
class Boxes:
    """Detections on one image or frame.

    ``xyxy``: (N, 4) float pixel corners (x1, y1, x2, y2); ``labels``: N class names;
    ``scores``: (N,) in [0, 1]; ``track_ids``: (N,) ints for tracked video, else None;
    ``image_size``: (height, width) of the image the boxes refer to.
    """

    kind: ClassVar[Kind] = Kind.BOXES
    xyxy: np.ndarray
    labels: tuple[str, ...]
    scores: np.ndarray
    image_size: tuple[int, int]
    track_ids: np.ndarray | None = None
    class_names: tuple[str, ...] = ()  # the full label set, for COCO categories / YOLO ids

    def __post_init__(self) -> None:
        n = len(self.labels)
        _check(self.xyxy.shape == (n, 4), f"xyxy must be ({n}, 4), got {self.xyxy.shape}")
        _check(self.scores.shape == (n,), f"scores must be ({n},), got {self.scores.shape}")
        if self.track_ids is not None:
            _check(self.track_ids.shape == (n,), f"track_ids must be ({n},)")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def all_class_names(self) -> tuple[str, ...]:
        extra = sorted(set(self.labels) - set(self.class_names))
        return tuple(self.class_names) + tuple(extra)


@dataclass(frozen=True)
class TrackSummary:
    """One track of a :class:`Tracks`: where it starts and ends, how often and how surely seen."""

    track_id: int
    label: str  # the label it carries most often (the first seen on a tie)
    first_frame: int
    last_frame: int
    frames: int  # frames it is seen in
    mean_score: float


@dataclass(frozen=True, eq=False)
class Tracks:
    """Tracked detections on a video: ``frames[t]`` holds frame t's :class:`Boxes`.

    Every frame's boxes (possibly none) have ``track_ids`` set, and a track id names the same
    object in every frame it appears in. All frames share one ``image_size`` (height, width);
    ``fps`` is frames per second; ``class_names`` is the full label set, for COCO / YOLO ids.
    """

    kind: ClassVar[Kind] = Kind.TRACKS
    frames: tuple[Boxes, ...]
    fps: float
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(self.frames))
        _check(self.fps > 0, f"fps must be positive, got {self.fps}")
        _check(len(self.frames) > 0, "tracks need at least one frame")
        size = None
        for t, boxes in enumerate(self.frames):
            what = type(boxes).__name__
            _check(isinstance(boxes, Boxes), f"tracks frame {t} is a {what}, not Boxes")
            _check(boxes.track_ids is not None, f"tracks frame {t} has boxes without track_ids")
            size = size or tuple(boxes.image_size)
            _check(
                tuple(boxes.image_size) == size,
                f"tracks frame {t} is {tuple(boxes.image_size)}, frame 0 is {size} (height, width)",
            )

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every frame."""
        height, width = self.frames[0].image_size
        return (int(height), int(width))

    @property
    def num_boxes(self) -> int:
        return sum(len(boxes) for boxes in self.frames)

    @property
    def all_class_names(self) -> tuple[str, ...]:
        """``class_names``, then every other class of the frames in the order first seen."""
        names = dict.fromkeys(self.class_names)
        for boxes in self.frames:
            names.update(dict.fromkeys(boxes.all_class_names))
        return tuple(names)

    def track_ids(self) -> tuple[int, ...]:
        """The ids of every track, sorted."""
        ids: set[int] = set()
        for boxes in self.frames:
            if boxes.track_ids is not None:  # always: checked in __post_init__
                ids.update(int(i) for i in boxes.track_ids.tolist())
        return tuple(sorted(ids))

    def track_summaries(self) -> tuple[TrackSummary, ...]:
        """One summary per track, by id."""
        seen: dict[int, list[Any]] = {}  # id → [first, last, frames, score sum, label counts]
        for t, boxes in enumerate(self.frames):
            assert boxes.track_ids is not None  # checked in __post_init__
            for i, track in enumerate(boxes.track_ids.tolist()):
                entry = seen.setdefault(int(track), [t, t, 0, 0.0, {}])
                entry[1] = t
                entry[2] += 1
                entry[3] += float(boxes.scores[i])
                entry[4][boxes.labels[i]] = entry[4].get(boxes.labels[i], 0) + 1
        return tuple(
            TrackSummary(
                track_id=track,
                label=max(labels, key=labels.get),
                first_frame=first,
                last_frame=last,
                frames=count,
                mean_score=total / count,
            )
            for track, (first, last, count, total, labels) in sorted(seen.items())
        )


@dataclass(frozen=True, eq=False)
class Mask:
    """A label map: (H, W) for images or (i, j, k) for volumes; 0 is background.

    ``class_names[v]`` names label value v. ``affine`` is set for volume masks (voxel → mm).
    """

    kind: ClassVar[Kind] = Kind.MASK
    labels: np.ndarray
    class_names: tuple[str, ...] = ("background", "foreground")
    affine: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check(self.labels.ndim in (2, 3), f"mask must be 2D or 3D, got {self.labels.shape}")
        _check(
            np.issubdtype(self.labels.dtype, np.integer) or self.labels.dtype == bool,
            f"mask labels must be integers, got {self.labels.dtype}",
        )
        top = int(self.labels.max(initial=0))
        _check(
            top < len(self.class_names),
            f"mask has label {top} but only {len(self.class_names)} class names",
        )


@dataclass(frozen=True)
class Caption:
    """A caption for an image, with optional zero-shot tags (tag → probability)."""

    kind: ClassVar[Kind] = Kind.CAPTION
    text: str
    score: float | None = None
    tags: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A reply to a customer: the text, how sure the task is, and what it based it on."""

    kind: ClassVar[Kind] = Kind.REPLY
    text: str
    confidence: float = 1.0
    clarifying_question: bool = False
    evidence: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSet:
    """A gallery of images with optional per-image labels."""

    kind: ClassVar[Kind] = Kind.IMAGE_SET
    images: tuple[Image, ...]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(
            not self.labels or len(self.labels) == len(self.images),
            "image set labels must match the number of images",
        )


@dataclass(frozen=True, eq=False)
class Embeddings:
    """Vectors (N, D) float32 with their ids, from ``model``."""

    kind: ClassVar[Kind] = Kind.EMBEDDINGS
    vectors: np.ndarray
    ids: tuple[str, ...]
    model: str = ""

    def __post_init__(self) -> None:
        _check(
            self.vectors.ndim == 2 and self.vectors.shape[0] == len(self.ids),
            f"vectors must be ({len(self.ids)}, D), got {self.vectors.shape}",
        )


@dataclass(frozen=True)
class Metrics:
    """Named scalar metrics, optionally per class (class → metric → value)."""

    kind: ClassVar[Kind] = Kind.METRICS
    values: Mapping[str, float]
    per_class: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Attribution:
    """An attribution map: how much each pixel or voxel of the input counts for one explained
    number (a class logit, a box's score, a region's summed logit; ``target`` says which).

    ``heat``: float32 in [0, 1] on ``background``'s grid — (H, W) over an image, (i, j, k)
    over a volume — the positive evidence, min-max scaled, for display; ``values``: the
    method's raw signed attribution on the model's input grid, channels summed, float32;
    ``background``: the image or volume the map is shown over; ``method``: the explainer
    (``integrated_gradients``, ``gradcam``, ...); ``score``: the explained number at the input;
    ``faithfulness``: the deletion/insertion areas and their random-order baselines when
    scored (empty otherwise); ``details``: forward passes, seconds, Integrated Gradients'
    completeness, the task's own notes (the box or region explained).
    """

    kind: ClassVar[Kind] = Kind.ATTRIBUTION
    heat: np.ndarray
    values: np.ndarray
    background: Image | Volume
    method: str
    target: str
    score: float
    faithfulness: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        grid = (
            (self.background.height, self.background.width)
            if isinstance(self.background, Image)
            else tuple(self.background.array.shape[:3])
        )
        _check(
            self.heat.shape == grid,
            f"attribution heat {self.heat.shape} must match its background's grid {grid}",
        )
        _check(self.values.ndim in (2, 3), f"attribution values must be 2D or 3D, got "
               f"{self.values.shape}")  # fmt: skip


#: A file suffix: one to three dot-parts of letters and digits (".dcm", ".seg.dcm", ".pdf").
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,16}){1,3}")


@dataclass(frozen=True, eq=False)
class File:
    """A file the task made in a format the core does not model (a DICOM SEG, a PDF report).

    The writer writes ``data`` as ``{output name}{suffix}``; the dashboard offers it as a
    download. ``media_type`` is its MIME type; ``description`` says what it is in one line.
    """

    kind: ClassVar[Kind] = Kind.FILE
    data: bytes
    suffix: str
    media_type: str = "application/octet-stream"
    description: str = ""

    def __post_init__(self) -> None:
        _check(isinstance(self.data, bytes), f"file data must be bytes, got {type(self.data)}")
        _check(
            _SUFFIX.fullmatch(self.suffix) is not None,
            f"file suffix must look like '.dcm' (letters and digits after dots), "
            f"got {self.suffix!r}",
        )


Input: TypeAlias = Image | Volume | Video | Text | Scene
Output: TypeAlias = (
    Image
    | Volume
    | Video
    | Text
    | Scene
    | Boxes
    | Tracks
    | Mask
    | Caption
    | Reply
    | ImageSet
    | Embeddings
    | Metrics
    | File
    | Attribution
)


#: The classes an output may be an instance of (what tasks may return).
OUTPUT_TYPES: tuple[type[Output], ...] = (
    Image, Volume, Video, Text, Scene, Boxes, Tracks, Mask, Caption, Reply, ImageSet, Embeddings,
    Metrics, File, Attribution,
)  # fmt: skip


@dataclass(frozen=True)
class InputRecord:
    """Where an input came from: its path, sha256 and detected format."""

    path: str
    sha256: str
    format: str
    kind: str


@dataclass(frozen=True)
class Provenance:
    """How a result was made; written beside every output."""

    run_id: str
    task: str
    plugin: str
    plugin_version: str | None
    core_version: str
    weights_sha256: Mapping[str, str]
    device: str
    dtype: str
    seed: int
    params: Mapping[str, Any]
    inputs: tuple[InputRecord, ...]
    timings_ms: Mapping[str, float]
    started_at: str


@dataclass(frozen=True)
class Result:
    """The outputs of a task for one input (or for a task without inputs), with provenance."""

    task: str
    outputs: Mapping[str, Output]
    provenance: Provenance
    input: Input | None = None
    #: whether the input looks unlike the training data of the task's network:
    #: ``{"flagged": bool, "score": float, "threshold": float}``, or None when the weights
    #: have no familiarity model (see :mod:`vlm_core.familiarity`)
    ood: Mapping[str, Any] | None = None
