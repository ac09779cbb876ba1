"""Detect a file's format from its first bytes, never from its name."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

from vlm_core.kinds import Kind

#: Allowed formats and the kind each loads as. Anything else is refused.
ALLOWED: dict[str, Kind] = {
    "png": Kind.IMAGE,
    "jpeg": Kind.IMAGE,
    "tiff": Kind.IMAGE,
    "bmp": Kind.IMAGE,
    "webp": Kind.IMAGE,
    "nifti": Kind.VOLUME,
    "nifti-gz": Kind.VOLUME,
    "dicom": Kind.VOLUME,
    "mp4": Kind.VIDEO,
    "text": Kind.TEXT,
    # LiDAR point clouds: a scene's sweep, read with the camera image and calibration beside it
    "kitti-bin": Kind.SCENE,
    "pcd": Kind.SCENE,
    "las": Kind.SCENE,
    "laz": Kind.SCENE,
}

#: Formats recognised only to name them in an error.
KNOWN_REFUSED = {
    b"PK\x03\x04": "zip",
    b"PK\x05\x06": "zip",
    b"%PDF": "pdf",
    b"\x7fELF": "elf",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"\x89HDF": "hdf5",
    b"7z\xbc\xaf": "7z",
    b"Rar!": "rar",
}

#: Bytes read to sniff a format (of a gzip file: decompressed): enough for NIfTI-2's header,
#: 540 bytes and the 4-byte extension flag, the longest header a sniff looks into.
HEAD_BYTES = 544


def nifti_version(header: bytes) -> int | None:
    """1 or 2 when ``header`` starts a NIfTI-1 or NIfTI-2 file, else None.

    NIfTI-1: ``sizeof_hdr`` 348 (either byte order) and the magic ``n+1`` (``ni1`` for a
    header/image pair) at offset 344. NIfTI-2: ``sizeof_hdr`` 540 and the magic ``n+2`` (or
    ``ni2``) at offset 4, and at least the 544 bytes of the header and its extension flag.
    """
    if (
        len(header) >= 348
        and header[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")  # 348, LE or BE
        and header[344:348] in (b"n+1\x00", b"ni1\x00")
    ):
        return 1
    if (
        len(header) >= 544
        and header[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # 540, LE or BE
        and header[4:8] in (b"n+2\x00", b"ni2\x00")
    ):
        return 2
    return None


def _nifti_magic(header: bytes) -> bool:
    return nifti_version(header) is not None


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample
        return exc.start >= len(head) - 3
    return True


def gzip_head(path: Path) -> bytes | None:
    """The first :data:`HEAD_BYTES` of a gzip file's decompressed content; None when it is
    not a readable gzip stream. Decompresses no more than that."""
    try:
        with gzip.open(path, "rb") as gz:
            return gz.read(HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return None


#: What the first points of a KITTI Velodyne ``.bin`` may hold (it has no header: float32
#: x, y, z, reflectance per point): finite, within this many metres, reflectance 0..255.
KITTI_BIN_RANGE_M = 1000.0
KITTI_BIN_POINTS = 16  # points a sniff looks at: more than any text or other binary survives


def _pcd_header(head: bytes) -> bool:
    """A PCD file starts with optional ``#`` comment lines, then ``VERSION`` or ``FIELDS``."""
    for line in head.split(b"\n")[:4]:
        word = line.strip().split(b" ")[0]
        if word.startswith(b"#") or not word:
            continue
        return word in (b"VERSION", b"FIELDS")
    return False


def _las_format(head: bytes) -> str:
    """``las`` or ``laz`` for a file starting ``LASF``: LAZ sets bit 7 (or 6) of the point
    data format byte at offset 104 (the LAS 1.0-1.4 header)."""
    compressed = len(head) > 104 and head[104] & 0xC0
    return "laz" if compressed else "las"


def _kitti_bin(head: bytes) -> bool:
    """Whether ``head`` starts a KITTI Velodyne scan: of its first :data:`KITTI_BIN_POINTS`
    points (fewer in a smaller file) at least half finite, and those within
    :data:`KITTI_BIN_RANGE_M` metres, not all at the origin, with a reflectance of 0 to 255.
    The format has no magic number, so the content's shape is the only sign; an image, text
    or archive fails it at its first bytes (their float32 reading is huge, tiny or not a
    number). Whether the length is a whole number of points, and NaN points, are the
    reader's checks, which name the problem."""
    import struct

    count = min(KITTI_BIN_POINTS, len(head) // 16)
    if count == 0:
        return False
    values = struct.unpack(f"<{count * 4}f", head[: count * 16])
    points = [values[i : i + 4] for i in range(0, len(values), 4)]
    finite = [p for p in points if all(math.isfinite(v) for v in p)]
    if 2 * len(finite) < len(points):  # a few NaN points: a scan the reader refuses by name
        return False
    xyz = [abs(v) for p in finite for v in p[:3]]
    reflectance = [p[3] for p in finite]
    tiny = [v for v in xyz if 0 < v < 1e-6]  # a denormal or near-zero float: not metres
    return (
        max(xyz) <= KITTI_BIN_RANGE_M
        and max(xyz) > 0
        and not tiny
        and all(0.0 <= r <= 255.0 for r in reflectance)
    )


def sniff_format(path: Path) -> str:
    """The format name of ``path`` from its content: a key of :data:`ALLOWED`, a name from
    :data:`KNOWN_REFUSED`, or ``"unknown"``."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    # first: DICOM's 128-byte preamble is free-form and often a TIFF header (dual-personality
    # files such as pydicom's CT_small.dcm), so "DICM" at 128 outranks any magic at 0
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if _nifti_magic(head):
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        inner = gzip_head(path)
        return "nifti-gz" if inner is not None and _nifti_magic(inner) else "gzip"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"LASF"):
        return _las_format(head)
    for magic, name in KNOWN_REFUSED.items():
        if head.startswith(magic):
            return name
    if _pcd_header(head):
        return "pcd"
    if _kitti_bin(head):
        return "kitti-bin"
    if _is_text(head):
        return "text"
    return "unknown"
