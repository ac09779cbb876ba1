"""Small file helpers: atomic writes and hashing."""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO


@functools.cache
def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file (0o644 under umask 022)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    The file gets the usual permissions (``tempfile`` would leave it readable by its owner only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file: say which one
        raise


def atomic_leftovers(path: Path) -> list[Path]:
    """The temporary files (``.NAME.XXXXXXXX.tmp``) that :func:`atomic_write_bytes` left beside
    ``path`` when its process was killed between creating one and renaming it into place.

    Only the folder's owner may remove them, at its start: a concurrent writer's are alike.
    """
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def copy_and_hash(src: BinaryIO, dst: BinaryIO, chunk: int = 1 << 20) -> str:
    """Stream ``src`` into ``dst``, fsync ``dst`` and return the sha256 of what was copied."""
    digest = hashlib.sha256()
    while block := src.read(chunk):
        digest.update(block)
        dst.write(block)
    dst.flush()
    os.fsync(dst.fileno())
    return digest.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
