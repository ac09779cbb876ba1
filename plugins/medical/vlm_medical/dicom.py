"""DICOM input: single files, multi-frame files and series folders as RAS volumes (pydicom).

The core sniffs DICOM by content but does not decode it; this module is the medical plugin's
reader for it, registered through the core's ``register_readers`` hook, so every ``volume``
task of every plugin receives DICOM input as a :class:`vlm_core.types.Volume`.

- :func:`group` turns the DICOM files found under a folder into one input per series
  (SeriesInstanceUID), slices sorted along the slice normal, and rejects inconsistent series
  (different sizes, orientations or pixel spacings, duplicate positions, uneven gaps, slices
  shifted in plane, slices with and without positions).
- :func:`probe` reads headers only (``stop_before_pixels``, :mod:`vlm_medical.dicom_header`)
  and checks the voxel cap of :func:`vlm_core.config.settings` before any pixel data is read;
  a file whose pixel data is shorter than its header declares is refused here.
- :func:`load` decodes the pixels, applies RescaleSlope/RescaleIntercept (DoseGridScaling for
  RT dose) and builds the affine from ImagePositionPatient, ImageOrientationPatient and
  PixelSpacing, the slice step from the positions (per-frame functional groups or
  GridFrameOffsetVector for multi-frame files), converted from DICOM's LPS to RAS as nibabel
  and MONAI do. Without orientation or positions it falls back to InstanceNumber order and
  SpacingBetweenSlices/SliceThickness.

Geometry is never defaulted in silence, so that no measurement in mm or mL rests on a made-up
1 mm. A PixelSpacing, ImageOrientationPatient, ImagePositionPatient or GridFrameOffsetVector
that is present but not valid numbers (text, zero or negative spacing, NaN, infinity, a wrong
count, cosines that are not two orthogonal unit vectors) is refused with an
:class:`~vlm_core.errors.InputError` naming the file, the attribute and its value. A missing
PixelSpacing is refused (ImagerPixelSpacing stands in, with a warning). Between slices the
positions give the spacing: a present but invalid SliceThickness/SpacingBetweenSlices is then
only a warning; without positions that attribute must be valid, a stack without either is
refused, and a single slice without a thickness is 1 mm thick with a warning. Every fallback
is a line in the volume's ``warnings`` (and logged once, at load), which the core writes into
each result's summary.

Voxel order is (i, j, k[, c]) = (column, row, slice[, sample]), as MONAI's ``PydicomReader``
returns it. Error messages and logs name files, folders, attribute keywords and the values of
geometry attributes only, never patient data: the reader reads no identifying attribute, and
silences pydicom's warnings, which may quote the values they complain about.

Importing this module imports neither pydicom nor numpy; they load on first use.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import statistics
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vlm_core import hookimpl
from vlm_core.config import settings
from vlm_core.errors import InputError
from vlm_core.io.readers import InputReader
from vlm_medical.dicom_header import Header, NoPixelData, SpacingTag, cross, dot, norm, read_header

if TYPE_CHECKING:
    import numpy as np

    from vlm_core.io.load import Probe
    from vlm_core.types import Volume

log = logging.getLogger("vlm.medical.dicom")

READER = InputReader(
    format="dicom",
    probe="vlm_medical.dicom:probe",
    load="vlm_medical.dicom:load",
    group="vlm_medical.dicom:group",
    description="DICOM files and series (pydicom) as RAS volumes",
)

#: Two slices closer than this along the slice normal (mm) are duplicates.
DUPLICATE_MM = 1e-3
#: Gaps between neighbouring slices may differ from the median gap by this fraction ...
GAP_TOLERANCE = 0.02
#: ... or by this many millimetres, whichever is larger (positions are rounded in headers).
GAP_TOLERANCE_MM = 0.01
#: Direction cosines of two slices differing by more than this are different orientations.
ORIENTATION_TOLERANCE = 1e-4
#: A slice may lie this many pixels off the line through the first and last slice.
IN_PLANE_TOLERANCE = 0.5


@hookimpl
def register_readers(register: Callable[[InputReader], None]) -> None:
    """The medical plugin's input readers: DICOM."""
    register(READER)


@dataclass(frozen=True)
class _Slice:
    """One 2D plane of the volume: a frame of a file."""

    header: Header
    frame: int

    @property
    def position(self) -> tuple[float, float, float] | None:
        positions = self.header.positions
        return positions[self.frame] if positions else None


@dataclass(frozen=True)
class _Geometry:
    """Slices in volume order and the voxel → RAS mm affine (4x4, row-major)."""

    slices: tuple[_Slice, ...]
    affine: tuple[tuple[float, ...], ...]
    notes: tuple[str, ...] = ()  # what the geometry had to fall back on, for the warnings


# ---------------------------------------------------------------------------------------------
# Reader functions (named in READER)


def group(files: Sequence[Path]) -> list[list[Path]]:
    """One group per series (SeriesInstanceUID), members sorted along the slice normal.

    A multi-frame file, or a file without a series UID, is a group of its own; files without
    pixel data (DICOMDIR, reports) are left out. An inconsistent series raises
    :class:`InputError` naming its folder and the problem.
    """
    return [[h.path for h in headers] for headers in _grouped_headers(files)]


def _grouped_headers(files: Sequence[Path]) -> list[list[Header]]:
    """The headers of :func:`group`'s groups, each file's header read once."""
    series: dict[str, list[Header]] = {}
    groups: list[list[Header]] = []
    for path in files:
        try:
            header = read_header(Path(path))
        except NoPixelData as exc:
            log.info("skipping %s", exc)
            continue
        if header.frames > 1 or header.series is None:
            groups.append([header])
        else:
            series.setdefault(header.series, []).append(header)
    for headers in series.values():
        geometry = _geometry(headers, _folder_of([h.path for h in headers]))
        groups.append([s.header for s in geometry.slices])
    return sorted(groups, key=lambda headers: min(h.path for h in headers))


@dataclass(frozen=True)
class SeriesLayout:
    """Where each slice of one input comes from: its shape, its affine (RAS) and the
    (file, frame) of each slice k, in volume order."""

    shape: tuple[int, ...]
    affine: tuple[tuple[float, ...], ...]
    slices: tuple[tuple[Path, int], ...]


def layouts(files: Sequence[Path]) -> list[SeriesLayout]:
    """The layout of every input among ``files`` (grouped as :func:`group` does), from headers
    only: what a writer needs to refer back to the source slices (a DICOM SEG)."""
    found = []
    for headers in _grouped_headers(files):
        geometry = _geometry(headers, _folder_of([h.path for h in headers]))
        found.append(
            SeriesLayout(
                shape=_shape(headers[0], len(geometry.slices)),
                affine=geometry.affine,
                slices=tuple((s.header.path, s.frame) for s in geometry.slices),
            )
        )
    return found


def probe(files: Sequence[Path]) -> tuple[int, ...]:
    """The shape (columns, rows, slices[, samples]) of one input, from headers only.

    Checks the voxel cap (``VLM_MAX_VOLUME_VOXELS``) before any pixel data is read.
    """
    paths = [Path(f) for f in files]
    where = paths[0] if len(paths) == 1 else _folder_of(paths)
    first = read_header(paths[0])
    _check_cap(where, _shape(first, first.frames * len(paths)))
    headers = [first, *(read_header(p) for p in paths[1:])]
    geometry = _geometry(headers, where)
    return _shape(first, len(geometry.slices))


def load(probe: Probe) -> Volume:
    """Decode ``probe.files`` into a :class:`Volume` in RAS millimetres."""
    import numpy as np

    from vlm_core.types import Volume

    where = probe.path
    headers = [read_header(p) for p in probe.files]
    geometry = _geometry(headers, where)
    shape = _shape(headers[0], len(geometry.slices))
    _check_cap(where, shape)
    out = np.empty(shape, dtype=_output_dtype(headers))
    for k, (plane, (slope, intercept)) in enumerate(_planes(geometry)):
        values = _rescaled(plane, slope, intercept, out.dtype)
        if np.issubdtype(out.dtype, np.integer) and values.size:
            low, high = int(values.min()), int(values.max())
            if low < np.iinfo(out.dtype).min or high > np.iinfo(out.dtype).max:
                out = out.astype(np.int64)  # stored values beyond BitsStored: widen, once
        out[:, :, k] = np.swapaxes(values, 0, 1)  # (rows, columns) → (i, j) = (column, row)
    name = where.name if probe.members else _stem(where)
    for note in geometry.notes:
        log.warning("%s: %s", where, note)
    return Volume(
        array=out,
        affine=np.array(geometry.affine),
        name=name,
        source=probe.path,
        warnings=geometry.notes,
    )


# ---------------------------------------------------------------------------------------------
# Geometry


def _folder_of(paths: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _stem(path: Path) -> str:
    return path.name[: -len(".dcm")] if path.name.lower().endswith(".dcm") else path.name


def _shape(header: Header, slices: int) -> tuple[int, ...]:
    shape = (header.columns, header.rows, slices)
    return (*shape, header.samples) if header.samples > 1 else shape


def _check_cap(where: Path, shape: tuple[int, ...]) -> None:
    limit = settings().max_volume_voxels
    voxels = math.prod(shape)
    if voxels > limit:
        raise InputError(
            f"{where}: DICOM headers claim {voxels:,} voxels {shape}, over the limit of "
            f"{limit:,} (VLM_MAX_VOLUME_VOXELS)"
        )


def _check_consistent(headers: Sequence[Header], where: Path) -> None:
    """Every file of one volume has the first file's size, samples, orientation and spacing."""
    first = headers[0]
    if len(headers) > 1 and any(h.frames > 1 for h in headers):
        raise InputError(f"{where}: a multi-frame DICOM file cannot be stacked with other files")
    for h in headers[1:]:
        problem = None
        if (h.rows, h.columns) != (first.rows, first.columns):
            problem = (
                f"slices of different sizes ({first.path.name} is {first.columns}x{first.rows}, "
                f"{h.path.name} is {h.columns}x{h.rows})"
            )
        elif h.samples != first.samples:
            problem = f"slices with different samples per pixel ({h.path.name})"
        elif (h.orientation is None) != (first.orientation is None) or (
            h.orientation is not None
            and first.orientation is not None
            and max(abs(a - b) for a, b in zip(h.orientation, first.orientation, strict=True))
            > ORIENTATION_TOLERANCE
        ):
            problem = (
                f"slices of different orientations ({first.path.name} and {h.path.name}); "
                "a series must be one stack of parallel slices"
            )
        elif h.pixel_spacing != first.pixel_spacing and not (
            h.pixel_spacing
            and first.pixel_spacing
            and all(
                math.isclose(a, b, rel_tol=1e-4)
                for a, b in zip(h.pixel_spacing, first.pixel_spacing, strict=True)
            )
        ):
            problem = f"slices of different pixel spacing ({first.path.name} and {h.path.name})"
        if problem:
            raise InputError(f"{where}: DICOM series has {problem}")


def _geometry(headers: Sequence[Header], where: Path) -> _Geometry:
    """Order the slices of one volume along its normal, check their spacing, build the affine.

    The in-plane spacing must be known: PixelSpacing, else ImagerPixelSpacing (noted). Between
    slices, the slice positions projected on the normal give the spacing, and a present but
    invalid SpacingBetweenSlices/SliceThickness is only noted; without positions those
    attributes must give it (a single slice without thickness is taken as 1 mm thick, noted),
    and slices go in InstanceNumber order (noted). Nothing defaults in silence: every fallback
    is in the geometry's ``notes``; a geometry that cannot be known is an :class:`InputError`.
    """
    _check_consistent(headers, where)
    first = headers[0]
    notes: list[str] = []
    if first.pixel_spacing is None:
        raise InputError(
            f"{where}: DICOM has no PixelSpacing (nor ImagerPixelSpacing): the size of its "
            "pixels in mm is unknown"
        )
    if first.pixel_spacing_from != "PixelSpacing":
        notes.append(
            f"no PixelSpacing: pixel size from {first.pixel_spacing_from}, at the detector "
            "(not corrected for magnification)"
        )
    row_mm, col_mm = first.pixel_spacing
    slices = [_Slice(h, f) for h in headers for f in range(h.frames)]
    unplaced = [s for s in slices if s.position is None]
    if unplaced and len(unplaced) < len(slices):
        raise InputError(
            f"{where}: DICOM series has slices with and without ImagePositionPatient "
            f"({_label(unplaced[0])} has none)"
        )
    orientation = first.orientation
    if orientation is not None and not unplaced:
        row, col = orientation[:3], orientation[3:]
        normal = cross(row, col)
        slices.sort(key=lambda s: dot(normal, s.position or (0.0, 0.0, 0.0)))
        depths = [dot(normal, s.position or (0.0, 0.0, 0.0)) for s in slices]
        _check_spacing(slices, depths, where)
        origin = slices[0].position or (0.0, 0.0, 0.0)
        if len(slices) > 1:
            last = slices[-1].position or origin
            step = tuple((b - a) / (len(slices) - 1) for a, b in zip(origin, last, strict=True))
            _check_line(slices, step, normal, min(row_mm, col_mm), where)
            notes += _tag_notes(first.slice_tags, (depths[-1] - depths[0]) / (len(slices) - 1))
        else:
            thickness = _tag_spacing(first, where, len(slices), notes)
            step = tuple(n * thickness for n in normal)
    else:
        if orientation is None:
            notes.append("no ImageOrientationPatient: axial slices assumed")
        slices = _by_instance(slices, where)
        cosines = orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # axial, when unknown
        row, col = cosines[:3], cosines[3:]
        normal = cross(row, col)
        thickness = _tag_spacing(first, where, len(slices), notes)
        step = tuple(n * thickness for n in normal)
        origin = slices[0].position or slices[0].header.origin or (0.0, 0.0, 0.0)
        if slices[0].position is None and slices[0].header.origin is None:
            notes.append("no ImagePositionPatient: origin (0, 0, 0) assumed")
    # voxel (i, j, k) = (column, row, slice) → LPS mm (one row per axis x, y, z), then
    # LPS → RAS by negating x and y
    lps = [[row[a] * col_mm, col[a] * row_mm, step[a], origin[a]] for a in range(3)]
    ras = [[0.0 - v for v in lps[0]], [0.0 - v for v in lps[1]], lps[2], [0.0, 0.0, 0.0, 1.0]]
    return _Geometry(slices=tuple(slices), affine=tuple(tuple(r) for r in ras), notes=tuple(notes))


def _tag_spacing(header: Header, where: Path, count: int, notes: list[str]) -> float:
    """The slice spacing (mm) from the header's attributes, for ``count`` slices that have no
    positions to measure it from (or one slice): for one slice its SliceThickness first, for a
    stack SpacingBetweenSlices first. The attribute used must be a positive number; one slice
    without either is taken as 1 mm thick (noted); a stack without either is refused."""
    order = ["SpacingBetweenSlices", "SliceThickness"]
    if count == 1:
        order.reverse()
    tags = sorted(header.slice_tags, key=lambda t: order.index(t.keyword))
    if tags:
        tag = tags[0]
        if tag.mm is None:
            instead = (
                "and a single slice has no other measure of its thickness"
                if count == 1
                else "and there are no slice positions to measure the slice spacing from"
            )
            raise InputError(
                f"{where}: DICOM {tag.keyword} is {tag.written}, not a positive number (mm), "
                f"{instead}"
            )
        if count > 1:
            notes.append(
                f"no slice positions along a known normal: slices in InstanceNumber order, "
                f"{tag.mm:g} mm apart by {tag.keyword}"
            )
        return tag.mm
    if count == 1:
        notes.append("no SliceThickness: the slice is taken as 1 mm thick (volumes scale with it)")
        return 1.0
    raise InputError(
        f"{where}: DICOM has {count} slices and neither their positions "
        "(ImagePositionPatient with ImageOrientationPatient) nor SpacingBetweenSlices or "
        "SliceThickness: the spacing between slices is unknown"
    )


def _tag_notes(tags: Sequence[SpacingTag], gap: float) -> list[str]:
    """Notes on slice spacing attributes that disagree with the ``gap`` (mm) measured from the
    slice positions, which the geometry uses: an invalid value, or a SpacingBetweenSlices that
    says otherwise (SliceThickness may differ from the gap: slices may overlap or leave gaps)."""
    notes = []
    for tag in tags:
        if tag.mm is None:
            notes.append(
                f"{tag.keyword} is {tag.written}, not a positive number (mm): slice spacing "
                f"{gap:.3f} mm measured from the slice positions"
            )
        elif tag.keyword == "SpacingBetweenSlices" and abs(tag.mm - gap) > max(
            GAP_TOLERANCE * gap, GAP_TOLERANCE_MM
        ):
            notes.append(
                f"SpacingBetweenSlices is {tag.written} but the slice positions lie "
                f"{gap:.3f} mm apart: the positions are used"
            )
    return notes


def _check_line(
    slices: Sequence[_Slice],
    step: Sequence[float],
    normal: Sequence[float],
    pixel_mm: float,
    where: Path,
) -> None:
    """Every slice lies in plane where even steps from the first slice put it, within
    :data:`IN_PLANE_TOLERANCE` pixels (the gaps along the normal are :func:`_check_spacing`'s)."""
    origin = slices[0].position or (0.0, 0.0, 0.0)
    tolerance = max(IN_PLANE_TOLERANCE * pixel_mm, GAP_TOLERANCE_MM)
    for k, s in enumerate(slices):
        position = s.position or origin
        off = [position[a] - origin[a] - k * step[a] for a in range(3)]
        along = dot(off, normal)
        shift = norm([off[a] - along * normal[a] for a in range(3)])
        if shift > tolerance:
            raise InputError(
                f"{where}: DICOM series slices are not stacked in line: {_label(s)} lies "
                f"{shift:.3f} mm in plane off the line through the first and last slice"
            )


def _check_spacing(slices: Sequence[_Slice], depths: Sequence[float], where: Path) -> None:
    """No two slices at one position, and even gaps (a missing slice doubles one)."""
    if len(slices) < 2:
        return
    gaps = [b - a for a, b in itertools.pairwise(depths)]
    for index, gap in enumerate(gaps):
        if gap < DUPLICATE_MM:
            a, b = _label(slices[index]), _label(slices[index + 1])
            raise InputError(
                f"{where}: DICOM series has two slices at the same position "
                f"{depths[index]:.3f} mm along the slice normal ({a} and {b})"
            )
    typical = statistics.median(gaps)
    tolerance = max(GAP_TOLERANCE * typical, GAP_TOLERANCE_MM)
    for index, gap in enumerate(gaps):
        if abs(gap - typical) > tolerance:
            a, b = _label(slices[index]), _label(slices[index + 1])
            hint = " (a missing slice?)" if gap > typical else ""
            raise InputError(
                f"{where}: DICOM series has uneven slice spacing: {gap:.3f} mm between {a} and "
                f"{b}, {typical:.3f} mm elsewhere{hint}"
            )


def _label(s: _Slice) -> str:
    return s.header.path.name + (f" frame {s.frame + 1}" if s.header.frames > 1 else "")


def _by_instance(slices: list[_Slice], where: Path) -> list[_Slice]:
    """Slices by InstanceNumber (frames of one file stay in file order)."""
    if len(slices) < 2 or slices[0].header.frames > 1:
        return slices
    numbers = [s.header.instance for s in slices]
    if any(n is None for n in numbers):
        raise InputError(
            f"{where}: DICOM series has no slice positions and no InstanceNumber to order "
            "its slices by"
        )
    if len(set(numbers)) != len(numbers):
        raise InputError(f"{where}: DICOM series has duplicate InstanceNumbers and no positions")
    return sorted(slices, key=lambda s: s.header.instance or 0)


# ---------------------------------------------------------------------------------------------
# Pixels


def _planes(geometry: _Geometry) -> Iterator[tuple[np.ndarray, tuple[float, float]]]:
    """Each slice's pixels (rows, columns[, samples]) with its (slope, intercept), in order."""
    if geometry.slices[0].header.frames > 1:  # one multi-frame file
        header = geometry.slices[0].header
        frames = _pixels(header)
        for s in geometry.slices:
            yield frames[s.frame], header.rescale[s.frame]
        return
    for s in geometry.slices:
        yield _pixels(s.header), s.header.rescale[0]


def _pixels(header: Header) -> np.ndarray:
    """Decode one file's pixel data: (rows, columns[, samples]) or (frames, rows, ...)."""
    import pydicom

    path = header.path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = pydicom.dcmread(path).pixel_array
    except Exception as exc:  # decoders raise many types for truncated or corrupt data
        first = (str(exc).strip().splitlines() or [""])[0].split(" - ")[0][:160]
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        hint = ""
        if header.compressed:
            hint = f"; {header.compressed} needs a decoder such as pylibjpeg or python-gdcm"
        raise InputError(
            f"{path}: cannot decode DICOM pixel data, truncated or corrupt ({detail}){hint}"
        ) from None
    expected = (header.rows, header.columns) + ((header.samples,) if header.samples > 1 else ())
    if header.frames > 1:
        expected = (header.frames, *expected)
    if tuple(pixels.shape) != expected:
        raise InputError(
            f"{path}: DICOM pixel data decodes to shape {tuple(pixels.shape)}, the header "
            f"declares {expected}"
        )
    return pixels


def _output_dtype(headers: Sequence[Header]) -> np.dtype:
    """The smallest dtype that holds every rescaled value: an integer type when every slope is
    1 and every intercept whole (CT in HU stays int16), else float32."""
    import numpy as np

    rescales = [r for h in headers for r in h.rescale]
    ranges = [h.value_range for h in headers]
    if any(r is None for r in ranges) or any(
        slope != 1 or not intercept.is_integer() for slope, intercept in rescales
    ):
        return np.dtype(np.float32)
    low = min(r[0] for r in ranges if r) + int(min(i for _, i in rescales))
    high = max(r[1] for r in ranges if r) + int(max(i for _, i in rescales))
    for candidate in (np.uint8, np.int16, np.uint16, np.int32, np.uint32):
        info = np.iinfo(candidate)
        if info.min <= low and high <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.int64)


def _rescaled(plane: np.ndarray, slope: float, intercept: float, dtype: np.dtype) -> np.ndarray:
    """Stored values → modality values (HU for CT): ``slope * stored + intercept``."""
    import numpy as np

    if np.issubdtype(dtype, np.integer) and np.issubdtype(plane.dtype, np.integer):
        return plane.astype(np.int64) + int(intercept) if intercept else plane
    return plane.astype(np.float32) * np.float32(slope) + np.float32(intercept)
