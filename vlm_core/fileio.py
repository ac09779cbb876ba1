"""Small file helpers: atomic writes and hashing.

Every write is atomic (a temporary file renamed into place) and, by default, durable on its
own (fsync before the rename). A writer of many files that publishes them together — a run's
export into its staging folder — writes them under :func:`deferred_sync` instead and pays for
durability once, with :func:`sync_folder` before it publishes: one filesystem sync per run, not
one fsync per file.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import glob
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: Whether :func:`atomic_write_bytes` skips its fsync (see :func:`deferred_sync`).
_DEFERRED: contextvars.ContextVar[bool] = contextvars.ContextVar("vlm_deferred_sync", default=False)


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


@contextlib.contextmanager
def deferred_sync() -> Iterator[None]:
    """Within this block (in this thread), :func:`atomic_write_bytes` renames without its
    fsync: the caller makes the files durable together with :func:`sync_folder` before it
    publishes them (and must not publish them otherwise)."""
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def sync_folder(folder: Path) -> None:
    """Make everything written under ``folder`` durable: one ``syncfs`` of its file system
    (Linux), else a ``sync`` of all of them; then fsync the folder itself, so its entries are."""
    import ctypes
    import ctypes.util

    fd = os.open(folder, os.O_RDONLY)
    try:
        done = False
        name = ctypes.util.find_library("c")
        if name is not None:
            syncfs = getattr(ctypes.CDLL(name, use_errno=True), "syncfs", None)
            done = syncfs is not None and syncfs(fd) == 0
        if not done:
            os.sync()
    finally:
        os.close(fd)
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so that the entries renamed into it are durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place
    (the fsync left to the caller under :func:`deferred_sync`).

    The file gets the usual permissions (``tempfile`` would leave it readable by its owner only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode())
            fh.write(data)
            fh.flush()
            if not _DEFERRED.get():
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
