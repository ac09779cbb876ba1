"""KITTI's file formats: calibration ``.txt``, Velodyne ``.bin`` sweeps and ``label_2`` labels.

KITTI's layout is the common exchange format of camera + LiDAR frames (nuScenes' devkit
exports to it; pykitti, OpenPCDet and mmdetection3d read it), so the driving plugin reads and
writes it byte for byte as KITTI's devkit documents it (``devkit_object/readme.txt``):

- calibration: one matrix per line, ``KEY: v1 v2 ...`` row-major. The object-detection
  layout names them ``P0..P3`` (3x4), ``R0_rect`` (3x3), ``Tr_velo_to_cam`` and
  ``Tr_imu_to_velo`` (3x4); the tracking layout writes ``R_rect``, ``Tr_velo_cam`` and
  ``Tr_imu_velo`` (without a colon). Both are read; the object layout is written.
- a sweep: little-endian float32 ``x, y, z, reflectance`` per point, no header (read as the
  devkit and pykitti do: ``np.fromfile(path, np.float32).reshape(-1, 4)``).
- labels (and detection results, which add a score): one object per line,
  ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]``.

numpy and the standard library only: this module is imported by the readers and the writers
of the synthetic data alike. Every refusal is an :class:`~vlm_core.errors.InputError` of one
line naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlm_core.errors import InputError
from vlm_core.fileio import atomic_write_bytes, atomic_write_text

# ---------------------------------------------------------------------------------------------
# calibration

#: Matrices of a calibration file and their shapes (rows, columns).
CALIB_SHAPES: dict[str, tuple[int, int]] = {
    "P0": (3, 4),
    "P1": (3, 4),
    "P2": (3, 4),
    "P3": (3, 4),
    "R0_rect": (3, 3),
    "Tr_velo_to_cam": (3, 4),
    "Tr_imu_to_velo": (3, 4),
}
#: The keys every calibration must have (the camera of ``image_2`` and the LiDAR → camera chain).
CALIB_REQUIRED = ("P2", "R0_rect", "Tr_velo_to_cam")
#: Tracking-layout names of the object-layout keys.
CALIB_ALIASES = {
    "R_rect": "R0_rect",
    "Tr_velo_cam": "Tr_velo_to_cam",
    "Tr_imu_velo": "Tr_imu_to_velo",
}
#: A KITTI calibration file is under 4 KB; anything over this is not one.
MAX_CALIB_BYTES = 64 * 1024
#: How far from orthonormal a rotation may be: |R·R^T - I| (KITTI's own files: about 1e-6).
ROTATION_TOLERANCE = 1e-3
#: The condition number over which P2's left 3x3 counts as singular.
MAX_PROJECTION_CONDITION = 1e10


def _matrix(value: np.ndarray | Sequence[float] | None, key: str) -> np.ndarray | None:
    if value is None:
        return None
    rows, cols = CALIB_SHAPES[key]
    array = np.asarray(value, dtype=np.float64)
    if array.size != rows * cols:
        raise ValueError(f"{key} must have {rows * cols} values ({rows}x{cols}), got {array.size}")
    return array.reshape(rows, cols).copy()


def _padded(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` (3x3 or 3x4) as a 4x4 homogeneous transform."""
    out = np.eye(4)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


@dataclass(frozen=True, eq=False, kw_only=True)
class Calibration:
    """One KITTI calibration: the rectified cameras' projections ``P0..P3`` (3x4; ``P2`` is the
    left colour camera of ``image_2``, the one a scene uses), the rectifying rotation
    ``R0_rect`` (3x3), the LiDAR → camera transform ``Tr_velo_to_cam`` (3x4) and the IMU →
    LiDAR transform ``Tr_imu_to_velo`` (3x4). ``P0``, ``P1``, ``P3`` and ``Tr_imu_to_velo`` are
    optional (None: the file had none); matrices are float64 copies.
    """

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    P0: np.ndarray | None = None
    P1: np.ndarray | None = None
    P3: np.ndarray | None = None
    Tr_imu_to_velo: np.ndarray | None = None

    def __post_init__(self) -> None:
        for key in CALIB_SHAPES:
            object.__setattr__(self, key, _matrix(getattr(self, key), key))

    @classmethod
    def from_matrices(cls, projection: np.ndarray, lidar_to_camera: np.ndarray) -> Calibration:
        """The calibration of a scene's ``projection`` (3x4) and ``lidar_to_camera`` (4x4):
        ``R0_rect`` the identity, so ``Tr_velo_to_cam`` is the rigid transform itself."""
        l2c = np.asarray(lidar_to_camera, dtype=np.float64)
        if l2c.shape != (4, 4):
            raise ValueError(f"lidar_to_camera must be 4x4, got {l2c.shape}")
        return cls(P2=projection, R0_rect=np.eye(3), Tr_velo_to_cam=l2c[:3, :4])

    @property
    def projection(self) -> np.ndarray:
        """``P2``, the projection of the rectified left colour camera (3x4)."""
        return self.P2.copy()

    @property
    def lidar_to_camera(self) -> np.ndarray:
        """LiDAR → rectified camera frame (4x4): ``R0_rect · Tr_velo_to_cam``, each padded."""
        return _padded(self.R0_rect) @ _padded(self.Tr_velo_to_cam)

    def matrices(self) -> dict[str, np.ndarray]:
        """The matrices present, by their object-layout key, in file order."""
        return {k: getattr(self, k) for k in CALIB_SHAPES if getattr(self, k) is not None}

    def problem(self) -> str | None:
        """What makes this calibration unusable (one phrase), or None when it is usable."""
        for key, matrix in self.matrices().items():
            bad = int(np.count_nonzero(~np.isfinite(matrix)))
            if bad:
                values = "values that are" if bad > 1 else "value that is"
                return f"{key} has {bad} {values} NaN or infinite"
        r0 = self.R0_rect
        det = float(np.linalg.det(r0))
        if abs(det) < 1e-6:
            return f"R0_rect is singular (determinant {det:.3g}): calibration does not invert"
        off = float(np.abs(r0 @ r0.T - np.eye(3)).max())
        if off > ROTATION_TOLERANCE or det < 0:
            return (
                f"R0_rect is not a rotation (|R·R^T - I| = {off:.3g}, determinant {det:.3g}; "
                f"allowed {ROTATION_TOLERANCE:g})"
            )
        rot = self.Tr_velo_to_cam[:, :3]
        off = float(np.abs(rot @ rot.T - np.eye(3)).max())
        det = float(np.linalg.det(rot))
        if off > ROTATION_TOLERANCE or det < 0:
            return (
                f"the rotation part of Tr_velo_to_cam is not orthonormal (|R·R^T - I| = {off:.3g}, "
                f"determinant {det:.3g}; allowed {ROTATION_TOLERANCE:g})"
            )
        left = self.P2[:, :3]
        cond = float(np.linalg.cond(left))
        if not math.isfinite(cond) or cond > MAX_PROJECTION_CONDITION:
            return "P2's left 3x3 is singular: calibration does not invert"
        return None

    def check(self, where: str | Path) -> None:
        """Raise :class:`InputError` (one line naming ``where``) when the calibration is unusable:
        a value that is not finite, ``R0_rect`` singular or not a rotation, the rotation of
        ``Tr_velo_to_cam`` not orthonormal, or ``P2``'s left 3x3 singular."""
        problem = self.problem()
        if problem is not None:
            raise InputError(f"{where}: {problem}")


def _calib_lines(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line number, key, value tokens)`` of each non-blank line; the key without its colon."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read calibration ({exc.strerror or exc})") from None
    if size > MAX_CALIB_BYTES:
        raise InputError(
            f"{path}: calibration file is {size:,} bytes, over the {MAX_CALIB_BYTES:,} of any "
            "KITTI calibration (under 4 KB)"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read calibration ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: calibration is not a text file") from None
    lines: list[tuple[int, str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        head, colon, rest = line.partition(":")
        if colon and head.strip() and not any(c.isspace() for c in head.strip()):
            key, tokens = head.strip(), rest.split()
        else:
            parts = line.split()
            if not parts:
                continue
            key, tokens = parts[0], parts[1:]
        lines.append((number, key, tokens))
    return lines


def read_calib(path: str | Path, check: bool = True) -> Calibration:
    """Read a KITTI calibration file, object or tracking layout (see the module docstring).

    ``P2``, ``R0_rect`` (``R_rect``) and ``Tr_velo_to_cam`` (``Tr_velo_cam``) are required,
    the other KITTI keys optional; unknown keys are ignored. With ``check`` (default) the
    calibration must also pass :meth:`Calibration.check`. Raises :class:`InputError` with one
    line naming the file (and the key) otherwise.
    """
    path = Path(path)
    values: dict[str, np.ndarray] = {}
    for number, raw_key, tokens in _calib_lines(path):
        key = CALIB_ALIASES.get(raw_key, raw_key)
        if key not in CALIB_SHAPES:
            continue
        if key in values:
            raise InputError(f"{path}: {raw_key} appears twice (line {number})")
        rows, cols = CALIB_SHAPES[key]
        if len(tokens) != rows * cols:
            raise InputError(
                f"{path}: {raw_key} has {len(tokens)} values on line {number}, expected "
                f"{rows * cols} ({rows}x{cols})"
            )
        try:
            numbers = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise InputError(
                f"{path}: {raw_key} on line {number}: {bad[:20]!r} is not a number"
            ) from None
        values[key] = np.array(numbers, dtype=np.float64).reshape(rows, cols)
    missing = [k for k in CALIB_REQUIRED if k not in values]
    if len(missing) == len(CALIB_REQUIRED):
        raise InputError(
            f"{path}: not a KITTI calibration file (no P2, R0_rect or Tr_velo_to_cam line)"
        )
    if missing:
        aliases = {v: k for k, v in CALIB_ALIASES.items()}
        names = ", ".join(f"{k} (or {aliases[k]})" if k in aliases else k for k in missing)
        raise InputError(f"{path}: calibration has no {names} line")
    calib = Calibration(**values)
    if check:
        calib.check(path)
    return calib


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def format_calib(calib: Calibration) -> str:
    """The object-layout text of ``calib``, as KITTI's own files and nuScenes' export write it:
    ``KEY: v ...`` with ``%.12e`` values, in the order P0, P1, P2, P3, R0_rect, Tr_velo_to_cam,
    Tr_imu_to_velo. Readers that pick lines by position (OpenPCDet: line 3 is P2) need every
    line, so a matrix the calibration lacks is written as zeros, as nuScenes' export does."""
    lines = []
    for key, (rows, cols) in CALIB_SHAPES.items():
        matrix = getattr(calib, key)
        if matrix is None:
            matrix = np.zeros((rows, cols))
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in matrix.ravel()))
    return "\n".join(lines) + "\n"


def write_calib(path: str | Path, calib: Calibration) -> None:
    """Write ``calib`` to ``path`` in KITTI's object layout (:func:`format_calib`)."""
    atomic_write_text(Path(path), format_calib(calib))


# ---------------------------------------------------------------------------------------------
# Velodyne sweeps

#: Bytes of one KITTI point: four little-endian float32 (x, y, z, reflectance).
KITTI_POINT_BYTES = 16


def bin_point_count(path: str | Path) -> int:
    """Points in a KITTI ``.bin`` from its size alone; :class:`InputError` when the size is not
    a whole number of 16-byte points (a truncated or foreign file)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size % KITTI_POINT_BYTES:
        raise InputError(
            f"{path}: {size:,} bytes is not a whole number of {KITTI_POINT_BYTES}-byte KITTI points"
        )
    return size // KITTI_POINT_BYTES


def read_bin(path: str | Path) -> np.ndarray:
    """A KITTI Velodyne sweep as (N, 4) float32 ``x, y, z, reflectance`` (LiDAR frame).

    Refuses a size that is not a whole number of points; values are not checked here (the
    point-cloud reader refuses NaN and infinite coordinates)."""
    path = Path(path)
    count = bin_point_count(path)
    try:
        points = np.fromfile(path, dtype="<f4", count=count * 4)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if points.size != count * 4:
        raise InputError(f"{path}: file shrank while it was read")
    return points.reshape(-1, 4).astype(np.float32, copy=False)


def write_bin(path: str | Path, points: np.ndarray) -> None:
    """Write (N, 4) ``x, y, z, reflectance`` as a KITTI ``.bin`` (little-endian float32)."""
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"KITTI points must be (N, 4), got {array.shape}")
    atomic_write_bytes(Path(path), np.ascontiguousarray(array, dtype="<f4").tobytes())


# ---------------------------------------------------------------------------------------------
# labels

#: KITTI's object types (devkit_object/readme.txt).
KITTI_TYPES = (
    "Car",
    "Van",
    "Truck",
    "Pedestrian",
    "Person_sitting",
    "Cyclist",
    "Tram",
    "Misc",
    "DontCare",
)

#: The plugin's classes (:data:`vlm_driving.classes.CLASSES`) as KITTI types. KITTI's
#: ``Cyclist`` is a bicycle with its rider in one box, which is what the plugin's ``bicycle``
#: box holds when ridden (a parked bicycle, which KITTI leaves unlabelled, is written
#: ``Cyclist`` too). Classes KITTI has no type for keep their own name, capitalised, spaces as
#: underscores (a label field cannot hold a space): ``Bus``, ``Motorcycle``,
#: ``Traffic_light``, ``Traffic_sign``; KITTI's evaluation ignores them.
DRIVING_TO_KITTI: dict[str, str] = {
    "car": "Car",
    "truck": "Truck",
    "bus": "Bus",
    "motorcycle": "Motorcycle",
    "bicycle": "Cyclist",
    "pedestrian": "Pedestrian",
    "traffic light": "Traffic_light",
    "traffic sign": "Traffic_sign",
}

#: KITTI types (and the names above) as plugin classes: a ``Van`` is a car and a
#: ``Person_sitting`` a pedestrian; ``Tram``, ``Misc`` and ``DontCare`` have no plugin class.
KITTI_TO_DRIVING: dict[str, str] = {
    **{kitti: driving for driving, kitti in DRIVING_TO_KITTI.items()},
    "Van": "car",
    "Person_sitting": "pedestrian",
}


def to_kitti_type(label: str) -> str:
    """The KITTI type of a plugin class; another label is capitalised with underscores for
    spaces (``"road work"`` → ``"Road_work"``), so it stays one field of a label line."""
    if label in DRIVING_TO_KITTI:
        return DRIVING_TO_KITTI[label]
    name = "_".join(label.split()) or "DontCare"
    return name[:1].upper() + name[1:]


def from_kitti_type(kitti_type: str) -> str | None:
    """The plugin class of a KITTI type (see :data:`KITTI_TO_DRIVING`); None for a type the
    plugin has no class for (``Tram``, ``Misc``, ``DontCare``, anything else)."""
    return KITTI_TO_DRIVING.get(kitti_type)


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label (or results) file.

    ``bbox``: (x1, y1, x2, y2) pixels in ``image_2``. ``dimensions``: (height, width, length)
    metres. ``location``: (x, y, z) of the bottom centre in the rectified camera frame, metres.
    ``rotation_y``: yaw around the camera's y axis, [-pi, pi]. ``alpha``: the observation angle.
    ``truncated`` in [0, 1], ``occluded`` 0..3 (fully visible .. unknown). A 2D-only result
    keeps the devkit's "unknown" values (the defaults: truncated -1, occluded -1, alpha -10,
    dimensions -1, location -1000, rotation_y -10). ``score`` is written only when set (a
    detection result, not ground truth).
    """

    type: str
    bbox: tuple[float, float, float, float]
    truncated: float = -1.0
    occluded: int = -1
    alpha: float = -10.0
    dimensions: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    location: tuple[float, float, float] = (-1000.0, -1000.0, -1000.0)
    rotation_y: float = -10.0
    score: float | None = None

    @property
    def has_3d(self) -> bool:
        """Whether the object has a 3D box (positive dimensions), not the devkit's -1s."""
        return all(d > 0 for d in self.dimensions)

    @property
    def distance(self) -> float | None:
        """Metres from the camera to the box's bottom centre; None without a 3D box."""
        if not self.has_3d:
            return None
        return float(math.sqrt(sum(c * c for c in self.location)))

    def line(self) -> str:
        """The object as one KITTI label line (2 decimals, as KITTI's own label files)."""
        if not self.type or any(c.isspace() for c in self.type):
            raise ValueError(f"a KITTI type is one word, got {self.type!r}")
        numbers = (
            f"{self.truncated:.2f} {int(self.occluded)} {self.alpha:.2f} "
            + " ".join(f"{v:.2f}" for v in (*self.bbox, *self.dimensions, *self.location))
            + f" {self.rotation_y:.2f}"
        )
        score = "" if self.score is None else f" {self.score:.4f}"
        return f"{self.type} {numbers}{score}"


#: Fields of a label line: the type and 14 numbers, then an optional score.
LABEL_FIELDS = 15
#: A label file this large is not one (KITTI's hold at most a few dozen lines).
MAX_LABEL_BYTES = 4 * 1024 * 1024


def parse_label_line(line: str, where: str = "") -> KittiObject:
    """One :class:`KittiObject` from one label line; :class:`InputError` naming ``where``."""
    tokens = line.split()
    prefix = f"{where}: " if where else ""
    if len(tokens) not in (LABEL_FIELDS, LABEL_FIELDS + 1):
        raise InputError(
            f"{prefix}{len(tokens)} fields, expected {LABEL_FIELDS} (type truncated occluded "
            "alpha x1 y1 x2 y2 h w l x y z rotation_y) or 16 with a score"
        )
    try:
        numbers = [float(t) for t in tokens[1:]]
    except ValueError:
        bad = next(t for t in tokens[1:] if not _is_float(t))
        raise InputError(f"{prefix}{bad[:20]!r} is not a number") from None
    if not all(math.isfinite(v) for v in numbers):
        raise InputError(f"{prefix}a value is NaN or infinite")
    if numbers[1] != int(numbers[1]):
        raise InputError(f"{prefix}occluded is {numbers[1]:g}, not a whole number")
    return KittiObject(
        type=tokens[0],
        truncated=numbers[0],
        occluded=int(numbers[1]),
        alpha=numbers[2],
        bbox=(numbers[3], numbers[4], numbers[5], numbers[6]),
        dimensions=(numbers[7], numbers[8], numbers[9]),
        location=(numbers[10], numbers[11], numbers[12]),
        rotation_y=numbers[13],
        score=numbers[14] if len(numbers) == 15 else None,
    )


def read_labels(path: str | Path) -> list[KittiObject]:
    """The objects of a KITTI label (or results) file, in file order; blank lines skipped."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_LABEL_BYTES:
            raise InputError(
                f"{path}: label file is {size:,} bytes, over the limit of {MAX_LABEL_BYTES:,}"
            )
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read labels ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: label file is not a text file") from None
    return [
        parse_label_line(line, f"{path} line {number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def format_labels(objects: Iterable[KittiObject]) -> str:
    """KITTI label text of ``objects``, one line each (an empty string for none, as KITTI
    writes an empty file for a frame without objects)."""
    return "".join(obj.line() + "\n" for obj in objects)


def write_labels(path: str | Path, objects: Iterable[KittiObject]) -> None:
    """Write ``objects`` as a KITTI label file (with scores where set: a results file)."""
    atomic_write_text(Path(path), format_labels(objects))
