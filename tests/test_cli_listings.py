"""What `vlm runs` and `vlm weights list` show people: local date-times instead of epoch
floats, and the sha256 of every present weights file (issue 27, items 8b and 8c)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vlm_core import hookimpl
from vlm_core.fileio import sha256_file
from vlm_core.kinds import Kind
from vlm_core.runstore import RunStore
from vlm_core.tasks import TaskSpec, WeightsRef

Vlm = Callable[..., subprocess.CompletedProcess[str]]


def test_runs_show_local_date_times(vlm_cli: Vlm) -> None:
    store = RunStore.default()
    store.start("a" * 32, "good.invert", {"gain": 1.0}, ["/x/square.png"], None)
    store.finish("a" * 32, "ok")
    record = store.get("a" * 32)
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
    listed = vlm_cli("runs", "list")
    assert listed.returncode == 0 and started in listed.stdout
    assert f"{record.started_at:.0f}"[:6] not in listed.stdout  # no epoch seconds
    shown = vlm_cli("runs", "show", "aaaa").stdout.splitlines()
    assert f"started: {started}" in shown
    assert any(line.startswith("finished: 20") for line in shown)
    assert any(line.startswith("duration: ") and line.endswith(" ms") for line in shown)
    assert not [line for line in shown if line.startswith(("started_at", "finished_at"))]
    # --json keeps the store's numbers for programs
    assert json.loads(vlm_cli("runs", "list", "--json").stdout)[0]["started_at"] == (
        record.started_at
    )


@pytest.fixture
def weights_task(vlm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A task that declares two unpinned local weights files: one with the model.json that
    `vlm weights ship` writes (its sha256 recorded), one bare."""
    from vlm_core import plugins

    shipped = tmp_path / "shipped" / "model.safetensors"
    bare = tmp_path / "bare" / "model.safetensors"
    for i, path in enumerate((shipped, bare)):
        path.parent.mkdir()
        save_file({"w": torch.full((4,), float(i))}, str(path))
    files = {"model.safetensors": sha256_file(shipped)}
    (shipped.parent / "model.json").write_text(json.dumps({"files": files}))

    class Plugin:
        @hookimpl
        def register_tasks(self, register):  # type: ignore[no-untyped-def]
            refs = (WeightsRef(name="shipped", filename=str(shipped)),
                    WeightsRef(name="bare", filename=str(bare)))  # fmt: skip
            register(TaskSpec(id="wt.task", title="T", description="Declares weights.",
                              domain="test", run="vlm_core.tasks:package_file",
                              outputs=(Kind.METRICS,), weights=refs))  # fmt: skip

    registry = plugins.load_registry(extra={"wt": Plugin()}, use_entry_points=False)
    monkeypatch.setattr(plugins, "_cached", registry)
    return [shipped, bare]


def test_weights_list_shows_the_sha256_of_present_files(
    vlm_cli: Vlm, weights_task: list[Path]
) -> None:
    shipped, bare = weights_task
    rows = {r["name"]: r for r in json.loads(vlm_cli("weights", "list", "--json").stdout)}
    assert rows["shipped"]["sha256"] == sha256_file(shipped)
    assert rows["shipped"]["sha256_from"] == "sidecar"
    assert rows["bare"]["sha256"] == sha256_file(bare) and rows["bare"]["sha256_from"] == "file"
    text = vlm_cli("weights", "list").stdout
    assert sha256_file(shipped)[:12] in text and sha256_file(bare)[:12] in text
