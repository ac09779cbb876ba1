"""Detect a file's format from its first bytes, never from its name."""

from __future__ import annotations

import gzip
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

HEAD_BYTES = 512


def _nifti_magic(header: bytes) -> bool:
    return (len(header) >= 348 and header[344:348] in (b"n+1\x00", b"ni1\x00")) or (
        len(header) >= 544 and header[4:8] in (b"n+2\x00", b"ni2\x00")
    )


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample
        return exc.start >= len(head) - 3
    return True


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
        try:
            with gzip.open(path, "rb") as gz:
                inner = gz.read(HEAD_BYTES)
        except (OSError, EOFError, zlib.error):
            return "gzip"
        return "nifti-gz" if _nifti_magic(inner) else "gzip"
    if head[4:8] == b"ftyp":
        return "mp4"
    for magic, name in KNOWN_REFUSED.items():
        if head.startswith(magic):
            return name
    if _is_text(head):
        return "text"
    return "unknown"
