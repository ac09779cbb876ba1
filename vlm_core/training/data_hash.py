"""A fingerprint of the training data, recorded in every checkpoint's sidecar."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from vlm_core.fileio import sha256_file

#: Above this many bytes the fingerprint hashes names, sizes and modification times only.
CONTENT_HASH_LIMIT = 2 * 2**30


def data_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 over the sorted (relative path, size, content sha256) of every file under
    ``path`` (or of the file itself); listing-only above :data:`CONTENT_HASH_LIMIT` bytes."""
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "sha256": sha256_file(path), "files": 1,
                "bytes": path.stat().st_size, "method": "content"}  # fmt: skip
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
    )
    sizes = [f.stat() for f in files]
    total = sum(s.st_size for s in sizes)
    method = "content" if total <= CONTENT_HASH_LIMIT else "listing"
    digest = hashlib.sha256()
    for file, st in zip(files, sizes, strict=True):
        rel = file.relative_to(path).as_posix()
        part = sha256_file(file) if method == "content" else str(st.st_mtime_ns)
        digest.update(f"{rel}\0{st.st_size}\0{part}\n".encode())
    return {
        "path": str(path.resolve()),
        "sha256": digest.hexdigest(),
        "files": len(files),
        "bytes": total,
        "method": method,
    }


def same_data(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(a and b and a.get("sha256") == b.get("sha256"))


__all__ = ["CONTENT_HASH_LIMIT", "data_fingerprint", "same_data"]
