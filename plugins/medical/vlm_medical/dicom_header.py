"""DICOM headers for the medical plugin's reader (:mod:`vlm_medical.dicom`): what one file says
about its pixels and its geometry, read up to the pixel data, checked and never defaulted.

:func:`read_header` reads a file with ``stop_before_pixels``, checks that the pixel data the
header declares is all there, and returns a :class:`Header` holding only what the reader needs:
sizes, the stored value range, the transfer syntax, series and instance numbers, orientation,
positions, pixel spacing, slice spacing attributes and rescale values — never patient data.
A geometry attribute that is present but not valid numbers raises an
:class:`~vlm_core.errors.InputError` naming the file, the attribute and its value.

Importing this module imports neither pydicom nor numpy; they load on first use.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.errors import InputError

#: ImageOrientationPatient's vectors may differ from unit length and from a right angle (as a
#: dot product) by this much (headers round them).
ORTHONORMAL_TOLERANCE = 0.01

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}  # Pixel, Float Pixel, Double Float Pixel
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_UNDEFINED_LENGTH = 0xFFFFFFFF


class NoPixelData(InputError):
    """A DICOM file that is not an image (DICOMDIR, structured report, ...)."""


@dataclass(frozen=True)
class SpacingTag:
    """A slice spacing attribute present in a header: its keyword, its value as written
    (quoted, for messages) and its value in mm, or None when that is not a positive number."""

    keyword: str
    written: str
    mm: float | None


@dataclass(frozen=True)
class Header:
    """What the reader needs from one file's header (never any patient data)."""

    path: Path
    rows: int
    columns: int
    frames: int
    samples: int
    value_range: tuple[int, int] | None  # stored integer range; None for float pixel data
    compressed: str | None  # the transfer syntax's name when the pixel data is compressed
    series: str | None  # SeriesInstanceUID: grouping only, never shown
    instance: int | None  # InstanceNumber
    orientation: tuple[float, ...] | None  # row then column direction cosines, LPS
    positions: tuple[tuple[float, float, float], ...] | None  # one per frame, LPS mm
    origin: tuple[float, float, float] | None  # ImagePositionPatient (first frame), LPS mm
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    pixel_spacing_from: str  # the attribute pixel_spacing comes from; "" when absent
    slice_tags: tuple[SpacingTag, ...]  # SpacingBetweenSlices, SliceThickness when present
    rescale: tuple[tuple[float, float], ...]  # (slope, intercept) per frame


# ---------------------------------------------------------------------------------------------
# Headers


def read_header(path: Path) -> Header:
    """Read ``path`` up to its pixel data and check the pixel data is all there."""
    import pydicom
    from pydicom.uid import UID

    size = path.stat().st_size
    try:
        with warnings.catch_warnings(), open(path, "rb") as fh:
            warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixel_at = fh.tell()
            element = fh.read(12)
    except Exception as exc:  # pydicom raises many types for broken headers
        raise InputError(f"{path}: not a readable DICOM header ({type(exc).__name__})") from None
    meta = getattr(ds, "file_meta", None)
    syntax_uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax_uid:
        raise InputError(f"{path}: DICOM header is truncated or has no transfer syntax")
    syntax = UID(str(syntax_uid))
    float_pixels = False
    if not syntax.is_deflated:  # a deflated dataset is read whole: no position to check
        found = _pixel_element(element, syntax.is_little_endian, syntax.is_implicit_VR)
        if found is None:
            raise NoPixelData(f"{path}: DICOM file has no pixel data (not an image, or cut off)")
        tag, length, offset = found
        float_pixels = tag != 0x7FE00010
        available = size - pixel_at - offset
        if length != _UNDEFINED_LENGTH and available < length:
            raise InputError(
                f"{path}: DICOM pixel data is truncated ({max(available, 0):,} of {length:,} "
                "bytes in the file)"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = _header_from(
                path, ds, float_pixels, syntax.name if syntax.is_compressed else None
            )
    except _BadValue as exc:
        raise InputError(f"{path}: {exc.describe()}") from None
    except Exception as exc:  # a malformed sequence item, an unconvertible nested value
        raise InputError(
            f"{path}: DICOM header has an invalid image attribute ({type(exc).__name__})"
        ) from None
    if header.rows < 1 or header.columns < 1 or header.frames < 1 or header.samples < 1:
        raise InputError(
            f"{path}: DICOM header claims an empty image "
            f"({header.rows} rows, {header.columns} columns, {header.frames} frames)"
        )
    return header


def _pixel_element(element: bytes, little: bool, implicit: bool) -> tuple[int, int, int] | None:
    """(tag, declared value length, bytes before the value) of the pixel data element that
    starts ``element``, or None when ``element`` is not a whole pixel data element header (the
    file has none)."""
    if len(element) < 8:
        return None
    order = "<" if little else ">"
    group_number, element_number = struct.unpack(order + "HH", element[:4])
    tag = group_number << 16 | element_number
    if tag not in _PIXEL_TAGS:
        return None
    vr = element[4:6]
    if not implicit and not (vr.isalpha() and vr.isupper()):
        implicit = True  # encoded implicit despite its transfer syntax (pydicom reads it so)
    elif implicit and vr in _LONG_VRS and element[6:8] == b"\x00\x00":
        implicit = False
    if implicit:
        return tag, int(struct.unpack(order + "I", element[4:8])[0]), 8
    if vr in _LONG_VRS:
        if len(element) < 12:
            return None
        return tag, int(struct.unpack(order + "I", element[8:12])[0]), 12
    return tag, int(struct.unpack(order + "H", element[6:8])[0]), 8


def _item(ds: Any, sequence: str) -> Any:
    """The first item of ``sequence`` in ``ds``, or None."""
    value = ds.get(sequence)
    return value[0] if value else None


def _functional(ds: Any, sequence: str, keyword: str, frame: int | None = None) -> Any:
    """``keyword`` from an enhanced multi-frame functional group (shared, else per frame)."""
    groups = []
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        groups.append(shared)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame:
        groups.append(per_frame[frame or 0])
    for functional_group in groups:
        item = _item(functional_group, sequence)
        if item is not None and item.get(keyword) is not None:
            return item.get(keyword)
    return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers from a multi-valued attribute, or None (missing or invalid)."""
    if value is None:
        return None
    items = [value] if isinstance(value, str | bytes | float | int) else value
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def _absent(value: Any) -> bool:
    """Whether an attribute's value is missing or empty (type 2 attributes may be empty)."""
    if value is None or isinstance(value, str | bytes):
        return not value
    try:
        return len(value) == 0
    except TypeError:
        return False


def _shown(value: Any) -> str:
    """A geometry attribute's value as the header holds it, quoted for a message: values of a
    multi-valued attribute joined by DICOM's backslash, non-printable characters as ``?``, cut
    at 40 characters. Only geometry attributes are ever shown (never patient data)."""
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, str | float | int):
        text = str(value)
    else:
        try:
            text = "\\".join(str(v) for v in value)
        except TypeError:
            text = str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return f"'{text[:40]}...'" if len(text) > 40 else f"'{text}'"


class _BadValue(ValueError):
    """A header attribute the reader needs is missing or not a valid value.

    ``value`` (when given) is what the header holds and ``expected`` what it should be, so that
    the message can name both: ``PixelSpacing is 'abc\\abc', not two positive numbers (mm)``.
    """

    def __init__(self, keyword: str, value: Any = None, expected: str = "") -> None:
        super().__init__(keyword)
        self.keyword = keyword
        self.value = value
        self.expected = expected

    def describe(self) -> str:
        if self.value is None or not self.expected:
            return f"DICOM header has no valid {self.keyword}"
        return f"DICOM {self.keyword} is {_shown(self.value)}, not {self.expected}"


def _measured(
    value: Any, keyword: str, count: int, expected: str, positive: bool = False
) -> tuple[float, ...] | None:
    """``count`` finite numbers from a geometry attribute's ``value``; None when the attribute
    is missing or empty. Anything else (text, a wrong count, NaN, infinity, and with
    ``positive`` zero or a negative number) is a :class:`_BadValue` quoting it: a geometry
    value is never replaced by a default in silence."""
    if _absent(value):
        return None
    numbers = _floats(value, count)
    if numbers is None or (positive and not all(v > 0 for v in numbers)):
        raise _BadValue(keyword, value, expected)
    return numbers


def _get(ds: Any, keyword: str) -> Any:
    """``ds.keyword`` or None; a value pydicom cannot convert is a :class:`_BadValue`."""
    try:
        return ds.get(keyword)
    except Exception:  # pydicom's value conversion raises several types
        raise _BadValue(keyword) from None


def _int(ds: Any, keyword: str, default: int | None = None) -> int:
    value = _get(ds, keyword)
    if value is None or value == "":
        if default is None:
            raise _BadValue(keyword)
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _BadValue(keyword) from None


def _header_from(path: Path, ds: Any, float_pixels: bool, compressed: str | None) -> Header:
    """The reader's view of a header; raises :class:`_BadValue` naming a bad attribute."""
    frames = _int(ds, "NumberOfFrames", 1)
    value_range = None
    if not float_pixels:
        bits = _int(ds, "BitsStored", _int(ds, "BitsAllocated"))
        if not 1 <= bits <= 64:
            raise _BadValue("BitsStored")
        signed = _int(ds, "PixelRepresentation", 0) == 1
        value_range = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    orientation = _orientation(ds)
    positions, origin = _positions(ds, frames, orientation)
    spacing, spacing_from = _pixel_spacing(ds)
    try:
        instance: int | None = _int(ds, "InstanceNumber")
    except _BadValue:  # only orders slices without positions: missing is not fatal
        instance = None
    series = _get(ds, "SeriesInstanceUID")
    return Header(
        path=path,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        frames=frames,
        samples=_int(ds, "SamplesPerPixel", 1),
        value_range=value_range,
        compressed=compressed,
        series=str(series) if series else None,
        instance=instance,
        orientation=orientation,
        positions=positions,
        origin=origin or (positions[0] if positions else None),
        pixel_spacing=spacing,
        pixel_spacing_from=spacing_from,
        slice_tags=_slice_tags(ds),
        rescale=tuple(_rescale(ds, f) for f in range(frames)),
    )


def _orientation(ds: Any) -> tuple[float, ...] | None:
    """ImageOrientationPatient (or the functional groups'): two unit vectors at right angles,
    else a :class:`_BadValue`; None when absent."""
    keyword = "ImageOrientationPatient"
    value = _get(ds, keyword)
    if _absent(value):
        value = _functional(ds, "PlaneOrientationSequence", keyword)
    cosines = _measured(value, keyword, 6, "six direction cosines")
    if cosines is None:
        return None
    row, col = cosines[:3], cosines[3:]
    if not (
        abs(norm(row) - 1) < ORTHONORMAL_TOLERANCE
        and abs(norm(col) - 1) < ORTHONORMAL_TOLERANCE
        and abs(dot(row, col)) < ORTHONORMAL_TOLERANCE
    ):
        raise _BadValue(keyword, value, "two orthogonal unit vectors")
    return cosines


def _positions(
    ds: Any, frames: int, orientation: tuple[float, ...] | None
) -> tuple[tuple[tuple[float, float, float], ...] | None, tuple[float, float, float] | None]:
    """(the position of each frame, or None; the first frame's position, or None), LPS mm.

    Per-frame functional groups give each frame's position; a single frame has the file's
    ImagePositionPatient; an RT dose grid has its GridFrameOffsetVector along the normal. A
    position that is present but not three finite numbers is a :class:`_BadValue`.
    """
    keyword = "ImagePositionPatient"
    expected = "three numbers (mm)"
    positions: tuple[tuple[float, float, float], ...] | None = None
    per_frame_groups = _get(ds, "PerFrameFunctionalGroupsSequence") or ()
    if len(per_frame_groups) == frames:
        per_frame = [
            _measured(_functional_position(item), keyword, 3, expected) for item in per_frame_groups
        ]
        if all(p is not None for p in per_frame):
            positions = tuple((p[0], p[1], p[2]) for p in per_frame if p is not None)
    single = _measured(_get(ds, keyword), keyword, 3, expected)
    origin = (single[0], single[1], single[2]) if single else None
    if positions is None and frames == 1 and origin is not None:
        positions = (origin,)
    offsets = None
    if frames > 1:
        offsets = _measured(
            _get(ds, "GridFrameOffsetVector"), "GridFrameOffsetVector", frames,
            f"{frames} numbers (mm), one per frame",
        )  # fmt: skip
    if positions is None and offsets and origin is not None and orientation is not None:
        # RT dose grids: frame f lies offsets[f] mm from the origin along the slice normal
        normal = cross(orientation[:3], orientation[3:])
        positions = tuple(
            (origin[0] + d * normal[0], origin[1] + d * normal[1], origin[2] + d * normal[2])
            for d in offsets
        )
    return positions, origin or (positions[0] if positions else None)


def _functional_position(item: Any) -> Any:
    position = _item(item, "PlanePositionSequence")
    return position.get("ImagePositionPatient") if position is not None else None


def _pixel_spacing(ds: Any) -> tuple[tuple[float, float] | None, str]:
    """(the in-plane spacing (between rows, between columns) in mm, the attribute it comes
    from): PixelSpacing (or the functional groups'), else ImagerPixelSpacing (projection
    radiographs: at the detector), else (None, ""). A value present but not two positive
    numbers is a :class:`_BadValue`, even when another attribute could stand in for it."""
    expected = "two positive numbers (mm)"
    for keyword, value in (
        ("PixelSpacing", _get(ds, "PixelSpacing")),
        ("PixelSpacing", _functional(ds, "PixelMeasuresSequence", "PixelSpacing")),
        ("ImagerPixelSpacing", _get(ds, "ImagerPixelSpacing")),
    ):
        spacing = _measured(value, keyword, 2, expected, positive=True)
        if spacing is not None:
            return (spacing[0], spacing[1]), keyword
    return None, ""


def _slice_tags(ds: Any) -> tuple[SpacingTag, ...]:
    """SpacingBetweenSlices and SliceThickness (the file's, else its functional groups'), those
    present, valid or not: whether an invalid one matters depends on the slice positions."""
    tags = []
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = _get(ds, keyword)
        except _BadValue:
            tags.append(SpacingTag(keyword, "(unreadable)", None))
            continue
        if _absent(value):
            value = _functional(ds, "PixelMeasuresSequence", keyword)
        if _absent(value):
            continue
        number = _floats(value, 1)
        mm = number[0] if number and number[0] > 0 else None
        tags.append(SpacingTag(keyword, _shown(value), mm))
    return tuple(tags)


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    """(slope, intercept) of ``frame``: the file's, else its functional groups', else (1, 0)."""
    slope, intercept = _get(ds, "RescaleSlope"), _get(ds, "RescaleIntercept")
    if slope is None and intercept is None and _get(ds, "DoseGridScaling") is not None:
        slope = _get(ds, "DoseGridScaling")  # RT dose: stored value x scaling = Gy
    if slope is None and intercept is None:
        sequence = "PixelValueTransformationSequence"
        slope = _functional(ds, sequence, "RescaleSlope", frame)
        intercept = _functional(ds, sequence, "RescaleIntercept", frame)
    values = []
    for keyword, value, default in (
        ("RescaleSlope", slope, 1.0),
        ("RescaleIntercept", intercept, 0.0),
    ):
        number = _floats(value, 1) if value not in (None, "") else (default,)
        if number is None:
            raise _BadValue(keyword)
        values.append(number[0])
    if values[0] == 0:
        raise _BadValue("RescaleSlope")
    return values[0], values[1]


# ---------------------------------------------------------------------------------------------
# Vectors (3D, plain floats: no numpy on the header path)


def norm(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
