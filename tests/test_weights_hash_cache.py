"""Weights files are hashed once per version of the file, across processes, and again whenever
the file changes (vlm_core.weights.hashing)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from vlm_core.weights import hashing


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The files hashing read, in a private VLM_HOME, with nothing remembered in the process."""
    monkeypatch.setenv("VLM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hashing, "_known", {})
    seen: list[Path] = []

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        seen.append(Path(path))
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    monkeypatch.setattr(hashing, "sha256_file", counting)
    return seen


def settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled 20 ms after their last change (2 s by default); wait that long."""
    monkeypatch.setattr(hashing, "SETTLED_S", 0.02)
    time.sleep(0.05)


def new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_known", {})


def test_a_settled_file_is_read_once_across_processes(reads, tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    settle(monkeypatch)
    digest = hashlib.sha256(b"a" * 1000).hexdigest()
    assert hashing.sha256_of(weights) == digest
    assert hashing.sha256_of(weights) == digest  # the same process
    new_process(monkeypatch)
    assert hashing.sha256_of(tmp_path / "." / "model.safetensors") == digest  # another spelling
    assert reads == [weights.resolve()]
    cached = json.loads((tmp_path / "home" / hashing.CACHE_FILE).read_text())["files"]
    assert cached[str(weights.resolve())][-1] == digest


def test_a_file_rewritten_at_the_same_size_is_read_again(reads, tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    settle(monkeypatch)
    first = hashing.sha256_of(weights)
    before = weights.stat()
    with open(weights, "r+b") as fh:  # in place: the same inode and size
        fh.write(b"b")
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back, too
    assert weights.stat().st_size == before.st_size and weights.stat().st_ino == before.st_ino
    settle(monkeypatch)
    new_process(monkeypatch)
    assert hashing.sha256_of(weights) == hashlib.sha256(b"b" + b"a" * 999).hexdigest() != first
    assert len(reads) == 2


def test_a_file_replaced_by_another_is_read_again(reads, tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    settle(monkeypatch)
    hashing.sha256_of(weights)
    other = tmp_path / "other"
    other.write_bytes(b"c" * 1000)
    stat = weights.stat()
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(other, weights)
    settle(monkeypatch)
    assert hashing.sha256_of(weights) == hashlib.sha256(b"c" * 1000).hexdigest()
    assert len(reads) == 2


def test_a_file_changed_just_now_is_not_remembered(reads, tmp_path, monkeypatch):
    """Within the timestamp granularity a rewrite keeps the file's times, so a file that
    changed less than SETTLED_S ago is read on every call."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    assert hashing.SETTLED_S == 2.0
    hashing.sha256_of(weights)
    hashing.sha256_of(weights)
    assert len(reads) == 2
    assert not (tmp_path / "home" / hashing.CACHE_FILE).exists()


def test_an_unreadable_or_foreign_cache_entry_is_not_trusted(reads, tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    settle(monkeypatch)
    cache = tmp_path / "home" / hashing.CACHE_FILE
    cache.parent.mkdir()
    cache.write_text("{not json")
    digest = hashing.sha256_of(weights)
    assert len(reads) == 1 and json.loads(cache.read_text())["files"]  # rewritten
    # an entry for an older version of the file (another size) is not used for this one
    entry = json.loads(cache.read_text())
    version = entry["files"][str(weights.resolve())]
    version[2] += 1
    version[-1] = "0" * 64
    cache.write_text(json.dumps(entry))
    new_process(monkeypatch)
    assert hashing.sha256_of(weights) == digest
    assert len(reads) == 2
