"""The scene reader: a LiDAR sweep (KITTI ``.bin``, PCD, LAS, LAZ) read with the camera image
and calibration found beside it, into the core's :class:`~vlm_core.types.Scene`.

The plugin registers :func:`probe`, :func:`load` and :func:`group` as the
:class:`~vlm_core.io.readers.InputReader` of the formats ``kitti-bin``, ``pcd``, ``las`` and
``laz``. A sweep's companions are looked up in one of three layouts (:func:`companions`):

1. KITTI object detection: ``X/velodyne/NAME.ext`` with ``X/image_2/NAME.png`` and
   ``X/calib/NAME.txt`` (also what nuScenes' ``export_kitti.py`` writes);
2. KITTI tracking: ``X/velodyne/SSSS/NNNNNN.ext`` with ``X/image_02/SSSS/NNNNNN.png`` and
   ``X/calib/SSSS.txt`` — the sweeps of one sequence folder are one scene (:func:`group`);
3. flat: ``NAME.ext`` with ``NAME.png`` (or ``.jpg``, ``.jpeg``) and ``NAME.txt`` (or one
   ``calib.txt``) in the same folder: a dashboard upload of a frame's three files.

The images go through the core's own image reader (its format allow-list and pixel caps); the
calibration must pass :meth:`vlm_driving.kitti.Calibration.check`. Every refusal is an
:class:`~vlm_core.errors.InputError` of one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_core.errors import InputError
from vlm_core.io import load_input, probe_input, sniff_format
from vlm_core.io.probe import Probe
from vlm_core.kinds import Kind
from vlm_core.types import Image, Scene
from vlm_driving.kitti import read_calib
from vlm_driving.pointclouds import CLOUD_FORMATS, cloud_header, read_cloud

#: Image file names tried, in order, for a sweep's camera image.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: KITTI's sweeps are 10 per second (a Velodyne HDL-64E turning at 10 Hz).
KITTI_FPS = 10.0


@dataclass(frozen=True)
class Companions:
    """Where a sweep's camera image and calibration are, and what the layout names it.

    ``images``: the image paths tried, in order (the first that exists is used).
    ``calibs``: likewise for the calibration. ``layout``: ``"object"``, ``"tracking"`` or
    ``"flat"``. ``sequence``: the tracking sequence's name (``"0001"``), else ``""``.
    """

    cloud: Path
    images: tuple[Path, ...]
    calibs: tuple[Path, ...]
    layout: str
    sequence: str = ""

    @property
    def frame_id(self) -> str:
        return self.cloud.stem

    @property
    def root(self) -> Path:
        """The folder the layout's relative names start from (for messages)."""
        if self.layout == "object":
            return self.cloud.parent.parent
        if self.layout == "tracking":
            return self.cloud.parent.parent.parent
        return self.cloud.parent

    def _named(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def image(self) -> Path:
        """The camera image; :class:`InputError` naming what was looked for when none is there."""
        for candidate in self.images:
            if candidate.is_file():
                return candidate
        others = ", ".join(c.suffix for c in self.images[1:])
        raise InputError(
            f"no camera image for {self.cloud}: looked for {self._named(self.images[0])} "
            f"(or {others}) in {self.root}"
        )

    def calib(self) -> Path:
        """The calibration file; :class:`InputError` naming what was looked for when none is."""
        for candidate in self.calibs:
            if candidate.is_file():
                return candidate
        looked = " or ".join(self._named(c) for c in self.calibs)
        raise InputError(f"no calibration for {self.cloud}: looked for {looked} in {self.root}")


def companions(cloud: Path) -> Companions:
    """Where the camera image and calibration of the sweep ``cloud`` are (module docstring)."""
    cloud = Path(cloud)
    stem = cloud.stem

    def images_in(folder: Path) -> tuple[Path, ...]:
        return tuple(folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES)

    if cloud.parent.name == "velodyne":
        root = cloud.parent.parent
        return Companions(
            cloud=cloud,
            images=images_in(root / "image_2"),
            calibs=(root / "calib" / f"{stem}.txt",),
            layout="object",
        )
    if cloud.parent.parent.name == "velodyne":
        sequence = cloud.parent.name
        root = cloud.parent.parent.parent
        return Companions(
            cloud=cloud,
            images=images_in(root / "image_02" / sequence),
            calibs=(root / "calib" / f"{sequence}.txt",),
            layout="tracking",
            sequence=sequence,
        )
    return Companions(
        cloud=cloud,
        images=images_in(cloud.parent),
        calibs=(cloud.parent / f"{stem}.txt", cloud.parent / "calib.txt"),
        layout="flat",
    )


def _frame_order(path: Path) -> tuple[int, int | str]:
    """Sort key of a sequence's sweeps: by the number of the name, then by name."""
    stem = path.stem
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def group(files: Sequence[Path]) -> list[tuple[Path, ...]]:
    """One input per KITTI tracking sequence (the sweeps of ``velodyne/SSSS/``, in frame order);
    every other sweep is an input of its own."""
    groups: dict[Path, list[Path]] = {}  # a sequence folder or a lone sweep → its sweeps
    for f in files:
        path = Path(f)
        key = path.parent if companions(path).layout == "tracking" else path
        groups.setdefault(key, []).append(path)
    return [tuple(sorted(sweeps, key=_frame_order)) for sweeps in groups.values()]


def _cloud_format(path: Path) -> str:
    fmt = sniff_format(path)
    if fmt not in CLOUD_FORMATS:
        raise InputError(
            f"{path}: content is {fmt}, not a point cloud ({', '.join(CLOUD_FORMATS)})"
        )
    return fmt


def _sequence(files: Sequence[Path]) -> list[Companions]:
    """The companions of every sweep of one input; the sweeps of one input must share one
    layout and calibration file (a tracking sequence) or be one sweep."""
    found = [companions(Path(f)) for f in files]
    if len(found) > 1:
        calibs = {c.calibs for c in found}
        if len(calibs) > 1 or found[0].layout != "tracking":
            raise InputError(
                f"{files[0]}: {len(files)} sweeps of different sequences given as one scene"
            )
    return found


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header, through the core's checks."""
    shape = probe_input(path, [Kind.IMAGE]).shape
    return int(shape[0]), int(shape[1])


def _one_size(found: Sequence[Companions], sizes: Sequence[tuple[int, int]]) -> None:
    first = sizes[0]
    for comp, size in zip(found, sizes, strict=True):
        if size != first:
            raise InputError(
                f"{comp.image()}: image is {size[1]}x{size[0]}, but frame "
                f"{found[0].frame_id}'s is {first[1]}x{first[0]}: the frames of a sequence "
                "share one camera"
            )


def probe(files: Sequence[Path]) -> tuple[int, int]:
    """``(frames, points of the largest sweep)`` of one scene input, from headers only: each
    cloud's header (:func:`vlm_driving.pointclouds.cloud_header`: caps, truncation), each
    camera image's through the core's image checks, the calibration read and checked. No point
    or pixel is decoded."""
    found = _sequence(files)
    largest = 0
    sizes = []
    for comp in found:
        largest = max(largest, cloud_header(comp.cloud, _cloud_format(comp.cloud)))
        sizes.append(_image_size(comp.image()))
    _one_size(found, sizes)
    read_calib(found[0].calib())
    return (len(found), largest)


def _name(found: Sequence[Companions]) -> str:
    if found[0].layout == "tracking":
        return found[0].sequence
    return found[0].frame_id


def load(probe: Probe) -> Scene:
    """The :class:`~vlm_core.types.Scene` of a probed input: every sweep, its camera image
    (through the core's image reader) and the calibration; ``fps`` 10 (KITTI's), frame ids
    from the sweeps' names, the name of the sweep (one frame) or of the sequence."""
    found = _sequence(probe.files)
    calib = read_calib(found[0].calib())
    images: list[Image] = []
    clouds: list[np.ndarray] = []
    for comp in found:
        clouds.append(read_cloud(comp.cloud, _cloud_format(comp.cloud)))
        image = load_input(probe_input(comp.image(), [Kind.IMAGE]))
        if not isinstance(image, Image):  # the core's image reader returns one
            raise InputError(f"{comp.image()}: not read as an image")
        images.append(image)
    _one_size(found, [(im.height, im.width) for im in images])
    warnings = _warnings(calib.projection, images[0])
    return Scene(
        images=tuple(images),
        clouds=tuple(clouds),
        projection=calib.projection,
        lidar_to_camera=calib.lidar_to_camera,
        fps=KITTI_FPS,
        frame_ids=tuple(c.frame_id for c in found),
        name=_name(found),
        source=probe.path,
        warnings=warnings,
    )


def _warnings(projection: np.ndarray, image: Image) -> tuple[str, ...]:
    """What looks wrong but may be meant: a principal point outside the image (a calibration
    of another camera, or an image cropped after calibrating)."""
    cx, cy = float(projection[0, 2]), float(projection[1, 2])  # P2's third row is (0, 0, 1, t)
    if not (0 <= cx <= image.width and 0 <= cy <= image.height):
        return (
            f"P2's principal point ({cx:.0f}, {cy:.0f}) lies outside the {image.width}x"
            f"{image.height} image: the calibration may be another camera's",
        )
    return ()
