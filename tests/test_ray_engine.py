"""`vlm run --engine ray` (issue 24): the same run through a Ray Data actor pool.

The default tier checks the refusals and that one worker, in this process, answers a batch as
the local loop does. The slow tier starts Ray (about 10 s on 2 cores): 200 images of
driving.detect and 200 volumes of medical.classify give a local run's files byte for byte, and
a worker killed mid-run leaves every input's result exactly once.

    .venv/bin/pytest -m slow tests/test_ray_engine.py
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import REPO, builtin_plugins, cli

from vlm_core.runner import RunRequest, prepare, run_task
from vlm_core.runtime.engines import RAY_EXTRA, RayOptions
from vlm_core.runtime.ray_engine import TaskWorker

STREET = REPO / "plugins" / "driving" / "vlm_driving" / "samples" / "street.png"


def _need(plugin: str) -> None:
    if plugin not in builtin_plugins():
        pytest.fail(
            f"the {plugin} plugin (plugins/{plugin}) is not installed: run scripts/setup.sh"
        )


def test_engine_ray_without_ray_exits_2_naming_the_extra(vlm_home, capsys, monkeypatch):
    _need("driving")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _out, err = cli(["run", "driving.detect", str(STREET), "--engine", "ray"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --engine ray needs Ray, which is not installed: {RAY_EXTRA}"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "3"], "--gpus-per-worker and --threads-per-worker go with --engine ray"),
        (["--engine", "ray", "--threads-per-worker", "0"], "--threads-per-worker must be at least"),
        (["--engine", "ray", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must be 0 or more"),
    ],
)
def test_ray_flags_are_checked_before_anything_runs(vlm_home, capsys, flags, message):
    _need("driving")
    code, _out, err = cli(["run", "driving.detect", str(STREET), *flags], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_task_without_input_files_is_not_spread_over_workers(vlm_home, capsys):
    _need("art")
    code, _out, err = cli(["run", "art.generate", "--engine", "ray"], capsys)
    assert code == 2 and "takes no input files: --engine ray has nothing to spread" in err, err


def test_a_worker_answers_a_batch_as_the_local_run_does(vlm_home):
    """The actor's work, in this process: the same results (outputs, ood, provenance but the
    run's own fields) as `run_task` on the same inputs."""
    from vlm_core.export.writer import output_summary
    from vlm_core.plugins import get_registry

    _need("driving")
    request = RunRequest("driving.detect", [str(STREET)])
    local = run_task(request)
    registry = get_registry()
    _, _, probes, _ = prepare(request, registry)
    base = {"run_id": "r", "task": "driving.detect", "plugin": "driving", "plugin_version": None,
            "core_version": "0", "seed": 0, "params": {}, "started_at": ""}  # fmt: skip
    import torch

    done = TaskWorker(request, base, threads=torch.get_num_threads()).run(probes)
    assert not done.failures and not done.refused and len(done.results) == 1
    for mine, theirs in zip(done.results, local.results, strict=True):
        assert mine.outputs.keys() == theirs.outputs.keys()
        for name in mine.outputs:
            ours, local_one = (output_summary(r.outputs[name]) for r in (mine, theirs))
            assert ours == local_one, name
        assert mine.ood == theirs.ood and mine.provenance.inputs == theirs.provenance.inputs
        assert mine.provenance.weights_sha256 == theirs.provenance.weights_sha256


# ----------------------------------------------------------------------------- slow: with Ray


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a run's output folder but what names the run itself (run.json, and the
    run id, times and timings in each result.json's provenance)."""
    files: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == "run.json":
            continue
        data = path.read_bytes()
        if path.name == "result.json":
            document = json.loads(data)
            for key in ("run_id", "started_at", "timings_ms"):
                document["provenance"].pop(key)
            data = json.dumps(document, sort_keys=True).encode()
        files[path.relative_to(folder).as_posix()] = data
    return files


def _images(folder: Path, count: int) -> Path:
    from vlm_driving.scenes import write_dataset

    write_dataset(folder, count=count, size=(320, 180), seed=8_600_000)
    return folder / "images"


def _volumes(folder: Path, count: int) -> Path:
    from vlm_medical.synthetic_classes import write_class_dataset

    return write_class_dataset(folder, per_class=count // 2, seed=8_600_000)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "make", "count"),
    [("driving.detect", _images, 200), ("medical.classify", _volumes, 200)],
)
def test_a_ray_run_writes_the_local_runs_files_byte_for_byte(vlm_home, tmp_path, task, make, count):
    from vlm_core.runstore import RunStore

    _need(task.split(".")[0])
    inputs = make(tmp_path / "inputs", count)
    local = run_task(RunRequest(task, [str(inputs)], out_dir=tmp_path / "local"))
    ray = run_task(
        RunRequest(task, [str(inputs)], out_dir=tmp_path / "ray", engine="ray",
                   ray=RayOptions(workers=2)),
    )  # fmt: skip
    assert len(local.summaries) == len(ray.summaries) == count
    ours, theirs = _files(tmp_path / "ray"), _files(tmp_path / "local")
    assert ours.keys() == theirs.keys()
    differ = [name for name in ours if ours[name] != theirs[name]]
    assert not differ, differ[:5]
    record = RunStore.default().get(ray.run_id)
    assert record is not None and record.status == "ok" and len(record.inputs) == count
    assert record.provenance["engine"]["name"] == "ray"


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_every_result_exactly_once(vlm_home, tmp_path):
    """SIGKILL one actor's process after the first batch: Ray Data restarts it and re-runs
    its batch; the run completes with one result per input and no failures."""
    import psutil

    _need("driving")
    images = _images(tmp_path / "inputs", 48)
    killed: list[int] = []
    reported: list[float] = []

    def kill_one(fraction: float, message: str) -> None:
        reported.append(fraction)  # the core's progress across workers, as batches complete
        if killed or fraction <= 0:
            return
        for process in psutil.process_iter(["pid", "cmdline"]):
            if "TaskWorker" in " ".join(process.info["cmdline"] or ()):
                os.kill(process.info["pid"], signal.SIGKILL)
                killed.append(process.info["pid"])
                return

    request = RunRequest("driving.detect", [str(images)], out_dir=tmp_path / "out",
                         batch_size=4, engine="ray", ray=RayOptions(workers=2))  # fmt: skip
    outcome = run_task(request, progress=kill_one)
    assert killed, "no worker process was found to kill"
    assert reported == sorted(reported) and reported[-1] == 1.0 and len(reported) >= 6
    assert not outcome.failures and len(outcome.summaries) == 48
    names = [Path(s["input"]).stem for s in outcome.summaries]
    assert sorted(names) == sorted(p.stem for p in images.iterdir())  # each once
    folders = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert len(folders) == 48
    kept = json.loads((tmp_path / "out" / "run.json").read_text())
    assert sorted(item["item"] for item in kept["items"]) == sorted(f.name for f in folders)


POISON_PLUGIN = '''
"""A test plugin: measures images; one named *poison* kills its process, one named *flat*
raises."""
import os

from vlm_core import hookimpl
from vlm_core.kinds import Kind
from vlm_core.tasks import TaskSpec


def run(inputs, params, ctx):
    from vlm_core.types import Metrics

    out = []
    for image in inputs:
        name = str(image.source)
        if "poison" in name:
            os._exit(1)  # what an out-of-memory kill looks like to Ray
        if "flat" in name:
            raise ZeroDivisionError("a flat image")
        out.append({"mean": Metrics({"mean": float(image.pixels.mean())})})
    return out


@hookimpl
def register_tasks(register):
    register(TaskSpec(id="poison.mean", title="Mean", description="The mean pixel.",
                      domain="test", run=run, inputs=(Kind.IMAGE,), outputs=(Kind.METRICS,)))
'''


@pytest.mark.slow
def test_an_input_that_kills_its_worker_every_time_is_reported_not_retried_forever(
    vlm_home, tmp_path, monkeypatch
):
    """A batch whose actor dies on every try is given up after TASK_RETRIES retries and its
    input reported as failed; an input the task raises on is reported as in a local run; the
    others are answered and the run ends (partial)."""
    import numpy as np
    from PIL import Image

    from vlm_core.plugins import load_registry

    site = tmp_path / "site"
    (site / "vlm_poison").mkdir(parents=True)
    (site / "vlm_poison" / "__init__.py").write_text("")
    (site / "vlm_poison" / "plugin.py").write_text(POISON_PLUGIN)
    info = site / "vlm_poison-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vlm-poison\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[vlm.plugins]\npoison = vlm_poison.plugin\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b", "poison", "flat", "c"):
        pixels = np.full((8, 8, 3), 40 if name == "flat" else (ord(name[0]) % 200), np.uint8)
        Image.fromarray(pixels).save(images / f"{name}.png")
    request = RunRequest("poison.mean", [str(images)], out_dir=tmp_path / "out", batch_size=1,
                         engine="ray", ray=RayOptions(workers=2))  # fmt: skip
    outcome = run_task(request, registry=load_registry())
    answered = sorted(Path(s["input"]).stem for s in outcome.summaries)
    assert answered == ["a", "b", "c"]
    failed = {Path(f.input).stem: f.error for f in outcome.failures}
    assert set(failed) == {"poison", "flat"}
    assert "failed 3 times on the Ray workers" in failed["poison"]
    assert "ZeroDivisionError" in failed["flat"]
