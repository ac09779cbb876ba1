"""The run store under concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from vlm_core.errors import UsageError
from vlm_core.runstore import RunStore


def _writer(path: str, worker: int, runs: int) -> None:
    store = RunStore(Path(path))
    for i in range(runs):
        run_id = f"w{worker}-{i:03d}"
        store.start(run_id, "p.t", {"i": i}, [f"in{i}.png"], None)
        store.finish(run_id, "ok", outputs=[f"out{i}.png"], provenance={"worker": worker})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "runs.sqlite"
    RunStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = RunStore(path).list(limit=1000)
    assert len(records) == 160
    assert {r.status for r in records} == {"ok"}
    assert all(r.duration_ms is not None and r.duration_ms >= 0 for r in records)
    assert RunStore(path).get("w3-039").provenance == {"worker": 3}


def test_lookup_by_prefix_and_errors(tmp_path):
    store = RunStore(tmp_path / "r.sqlite")
    store.start("abc123", "p.t", {}, [], None)
    store.start("abd456", "p.u", {}, [], None)
    assert store.get("abc").id == "abc123"
    with pytest.raises(UsageError, match="ambiguous"):
        store.get("ab")
    with pytest.raises(UsageError, match="no run with id"):
        store.get("zzz")
    assert [r.task for r in store.list(task="p.u")] == ["p.u"]
