"""sha256 of weights files, computed once per file version, not on every run.

A digest is remembered in the process and in ``weights-sha256.json`` under the data folder
(``VLM_HOME``), keyed by the file's real path and its version: device, inode, size,
modification time and change time (ns). Any write to the file changes its modification and
change times (and a file replaced by another is another inode), so a changed file is hashed
again, even one rewritten at the same size or with its modification time set back: the
change time follows the system clock and no call sets it.

Writers of the cache file take a file lock and replace the file atomically, so it is never
half-written; two writers racing may drop each other's newest entry, which costs one more hash
later, never a wrong digest.

One case a version cannot tell apart: a file rewritten twice within the file system's
timestamp granularity (milliseconds on ext4) keeps its times. So, as git does for its index, a
digest is remembered only for a file whose last change is at least :data:`SETTLED_S` seconds
older than the moment hashing started, and whose version did not change while it was read;
a file that changed just now is hashed on every call until it settles.

The cache is as trusted as the data folder (whoever can write it can also change the config
and the run store); ``vlm weights verify`` always reads the files afresh
(:func:`vlm_core.fileio.sha256_file`). A cache that cannot be read or written is ignored: the
file is hashed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from vlm_core.fileio import sha256_file
from vlm_core.weights.errors import ChecksumError

log = logging.getLogger(__name__)

#: Seconds a file must have been unchanged before its digest is remembered (see above).
SETTLED_S = 2.0
#: The cache file's name in the data folder.
CACHE_FILE = "weights-sha256.json"
#: Entries kept in the cache file (the most recently added).
MAX_ENTRIES = 2000

#: (real path, device, inode, size, mtime_ns, ctime_ns)
Version = tuple[str, int, int, int, int, int]

_lock = threading.Lock()
_known: dict[Version, str] = {}


def _version(real: Path, stat: os.stat_result) -> Version:
    return (
        str(real),
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
    )


def cache_path() -> Path | None:
    """Where digests are remembered across processes (None when the settings cannot be read:
    then nothing is remembered)."""
    from vlm_core.config import settings

    try:
        return settings().data_dir / CACHE_FILE
    except Exception as exc:  # a malformed VLM_* variable is reported where it is used
        log.debug("no weights hash cache: %s", exc)
        return None


def _read_cache(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("ignoring the weights hash cache %s: %s", path, exc)
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return files if isinstance(files, dict) else {}


def _cached(version: Version) -> str | None:
    """The digest the cache file holds for this exact version of the file, if any."""
    path = cache_path()
    if path is None:
        return None
    entry = _read_cache(path).get(version[0])
    if not isinstance(entry, list) or len(entry) != 6:
        return None
    *rest, digest = entry
    if tuple(rest) != version[1:] or not isinstance(digest, str) or len(digest) != 64:
        return None
    return digest


def _remember(version: Version, digest: str) -> None:
    """Add one digest to the cache file (merged with what other processes added)."""
    from filelock import FileLock

    from vlm_core.fileio import atomic_write_text

    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=5):
            files = _read_cache(path)
            files.pop(version[0], None)
            files[version[0]] = [*version[1:], digest]
            kept = dict(list(files.items())[-MAX_ENTRIES:])
            atomic_write_text(path, json.dumps({"version": 1, "files": kept}, indent=0))
    except Exception as exc:  # a read-only home, a lock held too long: hash next time
        log.debug("could not remember the sha256 of %s in %s: %s", version[0], path, exc)


def sha256_of(path: Path) -> str:
    """The sha256 of ``path`` (64 lower-case hex digits), read from the file once per version
    of it (see the module docstring); :func:`vlm_core.fileio.sha256_file` forces a fresh read.
    """
    real = Path(path).resolve()
    version = _version(real, real.stat())
    with _lock:
        known = _known.get(version)
    if known is not None:
        return known
    known = _cached(version)
    if known is not None:
        with _lock:
            _known[version] = known
        return known
    started = time.time_ns()
    digest = sha256_file(real)
    settled = started - max(version[4], version[5]) >= SETTLED_S * 1e9
    if settled and _version(real, real.stat()) == version:
        with _lock:
            _known[version] = digest
        _remember(version, digest)
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
