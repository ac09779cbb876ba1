"""LiDAR point-cloud files as (N, 4) float32 ``x, y, z, intensity``: KITTI ``.bin``, PCD, LAS
and LAZ.

Formats are read with their reference libraries: PCD (``ascii``, ``binary`` and
``binary_compressed``) with pypcd4, LAS and LAZ with laspy (LAZ through its lazrs backend); a
KITTI sweep with numpy (:mod:`vlm_driving.kitti`). Every file goes through two steps, as every
reader of the core does:

- :func:`cloud_header` reads the header only (for a KITTI sweep, which has none, the file
  size) and returns the point count, refusing a count of zero, one over
  ``VLM_MAX_CLOUD_POINTS``, a file shorter than its header says, or a PCD without x, y, z —
  before any point is decoded.
- :func:`read_cloud` decodes the points and refuses NaN or infinite values (an organised
  cloud's missing returns must be removed by the user: dropping them silently would change
  what the file says) and data that ends before the header's count.

Intensity: a PCD's ``intensity`` field as stored (zeros without one: fields other than x, y,
z and intensity are ignored); a LAS/LAZ intensity (uint16) divided by 65535 into [0, 1]; a
KITTI reflectance as stored ([0, 1] in KITTI). Coordinates are metres in the sensor's frame;
a LAS file's scaled coordinates (``scale · X + offset``) are used as they are.

Every refusal is an :class:`~vlm_core.errors.InputError` of one line naming the file; the
libraries' own exceptions on corrupt files are turned into one too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlm_core.config import settings
from vlm_core.errors import InputError, describe_exception
from vlm_driving.kitti import bin_point_count, read_bin

#: The point-cloud formats (names of the core's sniffer, :mod:`vlm_core.io.sniff`).
CLOUD_FORMATS = ("kitti-bin", "pcd", "las", "laz")
#: A PCD header is a dozen short lines; more than this before ``DATA`` is not one.
MAX_PCD_HEADER_BYTES = 64 * 1024
#: Values a PCD point may hold (the sum of COUNT): a LiDAR point has a handful; a descriptor
#: cloud (PCL's SHOT: 352) more, and pypcd4 makes a numpy field of every one.
MAX_PCD_VALUES = 1024
#: The full scale of a LAS intensity (uint16).
LAS_INTENSITY_SCALE = 65535.0


def _reason(exc: BaseException) -> str:
    """One line for a library's exception (a pydantic validation error: its first problem)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return f"{where}: {first.get('msg', '')}".strip(": ")
        except Exception:  # fall back to the plain description
            pass
    return describe_exception(exc)


def _check_count(path: Path, fmt: str, count: int) -> int:
    """``count`` when it is a usable number of points for one sweep, else :class:`InputError`."""
    if count <= 0:
        raise InputError(f"{path}: {fmt} file holds no points")
    limit = settings().max_cloud_points
    if count > limit:
        raise InputError(
            f"{path}: header claims {count:,} points, over the limit of {limit:,} "
            "(VLM_MAX_CLOUD_POINTS)"
        )
    return count


#: Bytes per point the decoded records of a cloud may take on average, times
#: ``VLM_MAX_CLOUD_POINTS``: the budget that keeps a header with a huge record (a PCD field with
#: a COUNT of millions, a LAS record length of 65,535) from allocating gigabytes. A LAS format 10
#: point is 67 bytes, a rich PCD point (xyz, intensity, ring, time, rgb, normals) about 60.
DECODED_BYTES_PER_POINT = 128


def _check_decoded(path: Path, fmt: str, count: int, point_bytes: int) -> None:
    """Refuse records that would decode to more than the budget of
    :data:`DECODED_BYTES_PER_POINT` per allowed point, from the header alone."""
    limit = settings().max_cloud_points
    budget = limit * DECODED_BYTES_PER_POINT
    if count * point_bytes > budget:
        raise InputError(
            f"{path}: {fmt} header claims {count:,} points of {point_bytes:,} bytes, "
            f"{count * point_bytes:,} bytes to decode, over the {budget:,} allowed "
            f"({DECODED_BYTES_PER_POINT} bytes a point of VLM_MAX_CLOUD_POINTS {limit:,})"
        )


def _check_finite(path: Path, points: np.ndarray) -> np.ndarray:
    bad = int(np.count_nonzero(~np.isfinite(points).all(axis=1)))
    if bad:
        verb = "is" if bad == 1 else "are"
        raise InputError(f"{path}: {bad:,} of {len(points):,} points {verb} NaN or infinite")
    return points


# ---------------------------------------------------------------------------------------------
# PCD


@dataclass(frozen=True)
class PcdHeader:
    """A PCD file's header as pypcd4 parses it, and where its data starts."""

    metadata: Any  # pypcd4.pypcd4.MetaData
    data_offset: int
    point_bytes: int

    @property
    def points(self) -> int:
        return int(self.metadata.points)

    @property
    def encoding(self) -> str:
        return str(self.metadata.data.value)


def pcd_header(path: Path) -> PcdHeader:
    """Parse a PCD header with pypcd4 (its lines up to ``DATA``), reading no point data."""
    from pypcd4.pypcd4 import MetaData

    lines: list[str] = []
    with open(path, "rb") as fh:
        while True:
            raw = fh.readline(MAX_PCD_HEADER_BYTES)
            if fh.tell() > MAX_PCD_HEADER_BYTES:
                raise InputError(f"{path}: PCD header has no DATA line in its first 64 KB")
            if not raw:
                raise InputError(f"{path}: PCD header ends without a DATA line")
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(f"{path}: PCD header is not text") from None
            if line and not line.startswith("#"):
                lines.append(line)
            if line.startswith("DATA"):
                break
        offset = fh.tell()
    try:
        metadata = MetaData.parse_header(lines)
    except Exception as exc:  # pydantic's validation error
        raise InputError(f"{path}: PCD header is not valid ({_reason(exc)})") from None
    lengths = [len(metadata.fields), len(metadata.size), len(metadata.type), len(metadata.count)]
    if len(set(lengths)) > 1:
        raise InputError(
            f"{path}: PCD header is not valid (FIELDS, SIZE, TYPE and COUNT have "
            f"{', '.join(map(str, lengths))} entries)"
        )
    values = sum(metadata.count)
    if values > MAX_PCD_VALUES:  # pypcd4 makes a numpy field of each: refuse before it does
        raise InputError(
            f"{path}: PCD points have {values:,} values each (COUNT), over the "
            f"{MAX_PCD_VALUES:,} a point cloud's fields take"
        )
    try:
        point_bytes = int(metadata.build_dtype().itemsize)
    except KeyError as exc:  # a TYPE and SIZE pair that is no numpy type, e.g. F 2
        raise InputError(f"{path}: PCD header is not valid (TYPE/SIZE {exc})") from None
    return PcdHeader(metadata=metadata, data_offset=offset, point_bytes=point_bytes)


def _pcd_fields(path: Path, header: PcdHeader) -> None:
    fields = dict(zip(header.metadata.fields, header.metadata.count, strict=True))
    missing = [f for f in ("x", "y", "z") if fields.get(f) != 1]
    if missing:
        have = " ".join(header.metadata.fields)
        raise InputError(f"{path}: PCD has no {', '.join(missing)} field (fields: {have})")


def _pcd_data_check(path: Path, header: PcdHeader) -> None:
    """Refuse records over the decoding budget and, for binary encodings, data shorter than
    the header's points need, from the file size (and the compressed block's sizes) alone."""
    _check_decoded(path, "PCD", header.points, header.point_bytes)
    size = path.stat().st_size
    available = size - header.data_offset
    needed = header.points * header.point_bytes
    if header.encoding == "binary" and available < needed:
        raise InputError(
            f"{path}: PCD data is truncated: {available:,} bytes, the header's "
            f"{header.points:,} points of {header.point_bytes} bytes need {needed:,}"
        )
    if header.encoding in ("binary_compressed", "binaryscompressed"):
        with open(path, "rb") as fh:
            fh.seek(header.data_offset)
            sizes = fh.read(8)
        if len(sizes) < 8:
            raise InputError(f"{path}: PCD data is truncated: no compressed block")
        compressed, uncompressed = struct.unpack("<II", sizes)
        if uncompressed != needed:
            raise InputError(
                f"{path}: PCD compressed block holds {uncompressed:,} bytes, the header's "
                f"{header.points:,} points of {header.point_bytes} bytes need {needed:,}"
            )
        if available - 8 < compressed:
            raise InputError(
                f"{path}: PCD data is truncated: {available - 8:,} bytes of a "
                f"{compressed:,}-byte compressed block"
            )


def _pcd_points(path: Path) -> int:
    header = pcd_header(path)
    _pcd_fields(path, header)
    _check_count(path, "PCD", header.points)
    _pcd_data_check(path, header)
    return header.points


def read_pcd(path: Path) -> np.ndarray:
    """A PCD file's x, y, z and intensity (zeros without one) as (N, 4) float32."""
    from pypcd4 import PointCloud

    header = pcd_header(path)
    _pcd_fields(path, header)
    count = _check_count(path, "PCD", header.points)
    _pcd_data_check(path, header)
    try:
        data = np.atleast_1d(PointCloud.from_path(path).pc_data)
    except Exception as exc:  # the library's own errors on corrupt data
        raise InputError(f"{path}: PCD data is truncated or corrupt ({_reason(exc)})") from None
    if len(data) != count:
        raise InputError(
            f"{path}: PCD data is truncated: {len(data):,} of the {count:,} points the header "
            "claims"
        )
    names = data.dtype.names or ()
    intensity = data["intensity"] if "intensity" in names else np.zeros(len(data))
    points = np.stack([data["x"], data["y"], data["z"], intensity], axis=1).astype(np.float32)
    return _check_finite(path, points)


# ---------------------------------------------------------------------------------------------
# LAS / LAZ


def _las_header(path: Path) -> Any:
    """The LAS/LAZ header and VLRs (laspy's ``LasHeader.read_from``): no point is touched and no
    decompressor is created."""
    import laspy

    try:
        with open(path, "rb") as fh:
            return laspy.LasHeader.read_from(fh)
    except OSError:
        raise
    except Exception as exc:  # LaspyException, struct and value errors of a corrupt header
        raise InputError(f"{path}: not a readable LAS/LAZ file ({_reason(exc)})") from None


#: LASzip's chunked compressors (point-wise and layered); the only ones laz-rs decodes.
LAZ_CHUNKED_COMPRESSORS = (2, 3)
LAZ_VARIABLE_CHUNK_SIZE = 0xFFFFFFFF


def _laz_chunk_table(path: Path, header: Any, count: int) -> None:
    """Refuse a LAZ file whose chunk table does not fit its header, before laz-rs reads it:
    laz-rs sizes its table from the count stored there and aborts the whole process (no
    exception) when that allocation fails, so a corrupt count must never reach it.

    LASzip's layout: the LASzip VLR holds the compressor and the chunk size (points per chunk,
    or 0xFFFFFFFF for variable chunks); the 8 bytes at the start of the point data give the
    chunk table's offset (-1: stored in the file's last 8 bytes); the table starts with its
    version (0) and its number of chunks, which is at most ``ceil(points / chunk size)`` (at
    most the points for variable chunks).
    """
    vlr = next((v for v in header.vlrs if type(v).__name__ == "LasZipVlr"), None)
    if vlr is None:
        raise InputError(f"{path}: LAZ file has no LASzip VLR")
    data = bytes(vlr.record_data_bytes())
    if len(data) < 16:
        raise InputError(f"{path}: LAZ file's LASzip VLR is {len(data)} bytes, too short")
    compressor = struct.unpack_from("<H", data, 0)[0]
    chunk_size = struct.unpack_from("<I", data, 12)[0]
    if compressor not in LAZ_CHUNKED_COMPRESSORS or chunk_size == 0:
        raise InputError(
            f"{path}: LAZ compressor {compressor} with chunk size {chunk_size} is not supported"
        )
    size = path.stat().st_size
    start = int(header.offset_to_point_data)
    with open(path, "rb") as fh:
        fh.seek(start)
        raw = fh.read(8)
        if len(raw) < 8:
            raise InputError(f"{path}: LAZ data is truncated: no chunk table offset")
        table = struct.unpack("<q", raw)[0]
        if table == -1:  # written at the end by a writer that could not seek back
            fh.seek(max(size - 8, 0))
            table = struct.unpack("<q", fh.read(8).rjust(8, b"\0"))[0]
        if not start + 8 <= table <= size - 8:
            raise InputError(
                f"{path}: LAZ data is truncated or corrupt: its chunk table offset {table:,} is "
                f"outside the {size:,}-byte file"
            )
        fh.seek(table)
        version, chunks = struct.unpack("<II", fh.read(8))
    most = count if chunk_size == LAZ_VARIABLE_CHUNK_SIZE else -(-count // chunk_size)
    if version != 0 or chunks > most:
        raise InputError(
            f"{path}: LAZ data is truncated or corrupt: chunk table version {version} with "
            f"{chunks:,} chunks, for {count:,} points in chunks of {chunk_size:,}"
        )


def _las_points(path: Path, fmt: str) -> int:
    header = _las_header(path)
    count = _check_count(path, fmt.upper(), int(header.point_count))
    _check_decoded(path, fmt.upper(), count, int(header.point_format.size))
    if header.are_points_compressed:
        _laz_chunk_table(path, header, count)
    else:
        record = int(header.point_format.size)
        needed = int(header.offset_to_point_data) + count * record
        size = path.stat().st_size
        if size < needed:
            have = max(size - int(header.offset_to_point_data), 0) // record
            raise InputError(
                f"{path}: LAS data is truncated: {have:,} of the {count:,} point records "
                "the header claims"
            )
    return count


def read_las(path: Path, fmt: str = "las") -> np.ndarray:
    """A LAS/LAZ file's scaled x, y, z and intensity / 65535 as (N, 4) float32."""
    import laspy

    count = _las_points(path, fmt)
    try:
        # laz-rs' single-threaded decompressor: it reads chunk by chunk, with no buffer sized
        # from the (unchecked) byte counts of the chunk table
        with laspy.open(path, laz_backend=laspy.LazBackend.Lazrs) as reader:
            las = reader.read()
    except OSError:
        raise
    except Exception as exc:  # lazrs' IoError on a cut LAZ, numpy's on a cut LAS
        raise InputError(
            f"{path}: {fmt.upper()} data is truncated or corrupt ({_reason(exc)})"
        ) from None
    if len(las.points) != count:
        raise InputError(
            f"{path}: {fmt.upper()} data is truncated: {len(las.points):,} of the {count:,} "
            "point records the header claims"
        )
    points = np.empty((count, 4), dtype=np.float32)
    points[:, 0] = np.asarray(las.x, dtype=np.float64)
    points[:, 1] = np.asarray(las.y, dtype=np.float64)
    points[:, 2] = np.asarray(las.z, dtype=np.float64)
    points[:, 3] = np.asarray(las.intensity, dtype=np.float64) / LAS_INTENSITY_SCALE
    return _check_finite(path, points)


# ---------------------------------------------------------------------------------------------
# any format


def _format(fmt: str) -> str:
    if fmt not in CLOUD_FORMATS:
        raise ValueError(f"not a point-cloud format: {fmt!r} (one of {', '.join(CLOUD_FORMATS)})")
    return fmt


def cloud_header(path: str | Path, fmt: str) -> int:
    """The points in the cloud at ``path`` (a format of :data:`CLOUD_FORMATS`), from its header
    only (a KITTI sweep's from its size): no point is decoded. :class:`InputError` for a count
    of zero or over ``VLM_MAX_CLOUD_POINTS``, a file shorter than its header says (binary PCD,
    LAS), a size that is not whole KITTI points, or a PCD without x, y, z."""
    path = Path(path)
    fmt = _format(fmt)
    try:
        if fmt == "kitti-bin":
            return _check_count(path, "KITTI .bin", bin_point_count(path))
        if fmt == "pcd":
            return _pcd_points(path)
        return _las_points(path, fmt)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_cloud(path: str | Path, fmt: str) -> np.ndarray:
    """The cloud at ``path`` as (N, 4) float32 ``x, y, z, intensity`` (see the module
    docstring), after :func:`cloud_header`'s checks; NaN or infinite values and data shorter
    than the header are refused with :class:`InputError`."""
    path = Path(path)
    fmt = _format(fmt)
    try:
        if fmt == "kitti-bin":
            cloud_header(path, fmt)
            return _check_finite(path, read_bin(path))
        if fmt == "pcd":
            return read_pcd(path)
        return read_las(path, fmt)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
