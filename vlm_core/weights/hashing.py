"""sha256 of weights files, computed once per file version in a process."""

from __future__ import annotations

import threading
from pathlib import Path

from vlm_core.fileio import sha256_file
from vlm_core.weights.errors import ChecksumError

_lock = threading.Lock()
_known: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The sha256 of ``path`` (64 lower-case hex digits).

    The digest is remembered for the file's (real path, size, modification time), so resolving
    and then loading a file hashes it once. Use :func:`vlm_core.fileio.sha256_file` to force a
    fresh read.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _known.get(key)
    if known is not None:
        return known
    digest = sha256_file(path)
    with _lock:
        _known[key] = digest
    return digest


def check_sha256(
    path: Path, expected: str | None, *, plugin: str = "core", filename: str | None = None
) -> str:
    """Hash ``path`` and compare it with ``expected`` (skipped when None); return the digest.

    Raises:
        WeightsError: the digests differ; the message gives both and the file's path.
    """
    found = sha256_of(path)
    if expected is not None and found != expected:
        raise ChecksumError(
            f"sha256 mismatch: {path} has sha256 {found}",
            found=found,
            plugin=plugin,
            filename=filename or path.name,
            sha256=expected,
            hint="the file is corrupt or not the one the spec names; delete it and fetch or "
            "import the right file, or correct the sha256 in the spec",
        )
    return found
