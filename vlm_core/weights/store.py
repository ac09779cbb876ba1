"""The vlm weights store: files imported by hand, content-addressed by sha256.

Layout: ``<data_dir>/weights/sha256/<64 hex digits>/<original file name>``. A file is copied
into a temporary file inside the store while it is hashed, checked against the expected
sha256, made read-only and renamed into place, so the store never holds a partial or
unverified file. :func:`vlm_core.weights.resolve` looks here first whenever a sha256 is known.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vlm_core.config import settings
from vlm_core.fileio import copy_and_hash
from vlm_core.weights.errors import ChecksumError, WeightsError
from vlm_core.weights.refs import normalize_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreEntry:
    """One file in the store."""

    sha256: str
    path: Path
    size_bytes: int

    @property
    def filename(self) -> str:
        return self.path.name


def store_dir() -> Path:
    """The store's root folder (``<data_dir>/weights``; set ``VLM_HOME`` to move it)."""
    return settings().data_dir / "weights"


def _hash_dir(sha256: str) -> Path:
    return store_dir() / "sha256" / sha256


def find_in_store(sha256: str, filename: str | None = None) -> Path | None:
    """The stored file with this sha256, or None.

    When several names share the content, the one called ``filename`` wins, then one with the
    same suffix (the loader picks the format by suffix), then any.
    """
    folder = _hash_dir(sha256)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return None
    if filename:
        name = Path(filename).name
        for f in files:
            if f.name == name:
                return f
        suffix = Path(name).suffix
        for f in files:
            if suffix and f.suffix == suffix:
                return f
    return files[0]


def import_file(path: Path, *, sha256: str | None = None, plugin: str = "core") -> StoreEntry:
    """Copy ``path`` into the store (atomically) and return its entry.

    Args:
        path: a weights file.
        sha256: the expected sha256; the copy is refused (and nothing is left behind) when the
            content differs. None: store under whatever the content hashes to.
        plugin: named in error messages.

    Raises:
        WeightsError: ``path`` is not a file, or its content does not match ``sha256``.
    """
    expected = normalize_sha256(sha256, plugin=plugin, filename=path.name)
    if not path.is_file():
        raise WeightsError(
            f"cannot import {path}: no such file",
            plugin=plugin,
            filename=path.name,
            sha256=expected,
            hint="give the path of the weights file itself",
        )
    tmp_dir = store_dir() / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=tmp_dir)
    tmp = Path(tmp_name)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            found = copy_and_hash(src, dst)
        if expected is not None and found != expected:
            raise ChecksumError(
                f"refusing to import {path}: its sha256 is {found}",
                found=found,
                plugin=plugin,
                filename=path.name,
                sha256=expected,
                hint="this is not the file the spec names; find the right one",
            )
        folder = _hash_dir(found)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / path.name
        if dest.is_file():
            log.info("%s is already in the weights store as %s", path, dest)
        else:
            tmp.chmod(0o444)
            os.replace(tmp, dest)
            log.info("imported %s into the weights store as %s", path, dest)
        return StoreEntry(found, dest, dest.stat().st_size)
    finally:
        tmp.unlink(missing_ok=True)


def list_store() -> list[StoreEntry]:
    """Every file in the store, sorted by file name then sha256."""
    root = store_dir() / "sha256"
    if not root.is_dir():
        return []
    entries = [
        StoreEntry(folder.name, f, f.stat().st_size)
        for folder in root.iterdir()
        if folder.is_dir()
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".")
    ]
    return sorted(entries, key=lambda e: (e.filename, e.sha256))
