"""Files → results against the model alone: `vlm bench --pipeline`.

For every task that declares a pipeline benchmark (``TaskSpec.bench``, a
:class:`PipelineCase`), in one process:

- **pipeline**: ``vlm run TASK FOLDER --out DIR`` as the CLI runs it (:func:`run_task`, default
  outputs, the task's batch size, results exported as they come) over a folder of ``count``
  inputs the case writes;
- **model**: the bare network passes those default outputs need (the case's
  :attr:`PipelineCase.model_only`), on the same inputs already decoded and preprocessed in
  memory, at the same batch size.

The two alternate for ``rounds`` rounds after one warm-up each (so drift and caches hit both
alike). Each is measured in process CPU time (every thread of the process: the reader and
writer threads, torch's intra-op pool) and in wall time; the table reports the medians with
their spread, the ratio of throughputs ``model CPU s / pipeline CPU s`` (1.0: the pipeline
costs nothing beyond the network) and the pipeline's stages from the run's own timings.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("vlm.bench")


@dataclass(frozen=True)
class PipelineCase:
    """How `vlm bench --pipeline` measures one task.

    Attributes:
        make_inputs: ``make_inputs(folder, count, seed)`` writes ``count`` input files into
            ``folder`` (in-domain data the plugin generates).
        model_only: ``model_only(files, params, batch_size, device)`` loads what the model
            needs (the same weights a run loads), decodes and preprocesses ``files`` into
            memory, and returns a callable that runs the network passes the task's default
            outputs need over all of them, ``batch_size`` at a time — nothing else.
        params: task parameters for both (the task's defaults under them).
        note: what "model" counts for this task, shown in the table and the docs.
    """

    make_inputs: Callable[[Path, int, int], None]
    model_only: Callable[[list[Path], Any, int, str], Callable[[], Any]]
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def _measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(process CPU seconds, wall seconds, what ``fn`` returned)."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def bench_pipeline(
    task: str,
    *,
    count: int = 200,
    rounds: int = 3,
    device: str = "cpu",
    seed: int = 1234,
    batch_size: int | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """One row of the table for ``task`` (see the module docstring)."""
    from vlm_core.params import validate_params
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.runstore import RunStore

    registry = get_registry()
    spec = registry.task(task)
    case = spec.resolve_bench()
    if case is None:
        return {"task": task, "skipped": "the task declares no pipeline benchmark"}
    batch = batch_size or spec.batch_size
    params = validate_params(spec, dict(case.params))
    own = work is None
    root = Path(tempfile.mkdtemp(prefix="vlm-bench-pipeline-")) if work is None else work
    try:
        folder = root / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        case.make_inputs(folder, count, seed)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        store = RunStore(root / "runs.sqlite")
        runs = iter(range(10_000))

        def pipeline() -> Any:
            out = root / f"out-{next(runs)}"
            request = RunRequest(task, [str(folder)], dict(case.params), out_dir=out,
                                 device=device, batch_size=batch, seed=0)  # fmt: skip
            outcome = run_task(request, store=store, keep_results=False)
            return outcome

        model = case.model_only(files, params, batch, device)
        cpu: dict[str, list[float]] = {"pipeline": [], "model": []}
        wall: dict[str, list[float]] = {"pipeline": [], "model": []}
        stages: list[dict[str, float]] = []
        last: Any = None
        for i in range(rounds + 1):  # round 0 warms both up and is not counted
            c, w, outcome = _measure(pipeline)
            if outcome.failures:
                raise RuntimeError(f"{task}: {len(outcome.failures)} inputs failed in the run: "
                                   f"{outcome.failures[0].error}")  # fmt: skip
            last = outcome
            shutil.rmtree(outcome.out_dir, ignore_errors=True)
            if i:
                cpu["pipeline"].append(c)
                wall["pipeline"].append(w)
                stages.append(dict(outcome.timings_ms))
            c, w, _ = _measure(model)
            if i:
                cpu["model"].append(c)
                wall["model"].append(w)
        row: dict[str, Any] = {
            "task": task,
            "inputs": len(files),
            "batch": batch,
            "device": device,
            "rounds": rounds,
            "model_is": case.note,
            "pipeline_cpu_s": _spread(cpu["pipeline"]),
            "model_cpu_s": _spread(cpu["model"]),
            "pipeline_wall_s": _spread(wall["pipeline"]),
            "model_wall_s": _spread(wall["model"]),
        }
        row["ratio_cpu"] = round(row["model_cpu_s"]["median"] / row["pipeline_cpu_s"]["median"], 3)
        row["ratio_wall"] = round(
            row["model_wall_s"]["median"] / row["pipeline_wall_s"]["median"], 3
        )
        row["pipeline_img_s_cpu"] = round(len(files) / row["pipeline_cpu_s"]["median"], 2)
        row["model_img_s_cpu"] = round(len(files) / row["model_cpu_s"]["median"], 2)
        # each stage's wall ms per input, median over the rounds (stages overlap: reading and
        # writing run in threads beside the task)
        keys = sorted({k for s in stages for k in s})
        row["stages_ms_per_input"] = {
            k: round(statistics.median(s.get(k, 0.0) for s in stages) / len(files), 3) for k in keys
        }
        row["files_per_input"] = round(len(last.files) / max(len(files), 1), 2)
        return row
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def pipeline_tasks() -> list[str]:
    """The installed tasks that declare a pipeline benchmark."""
    from vlm_core.plugins import get_registry

    return [t for t, spec in get_registry().tasks.items() if spec.bench is not None]


def bench_pipelines(
    tasks: list[str] | None = None,
    *,
    count: int = 200,
    rounds: int = 3,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """One row per task (default: every task with a pipeline benchmark); a task that fails
    gives a row with its error, not a lost table."""
    rows = []
    for task in tasks or pipeline_tasks():
        t0 = time.perf_counter()
        try:
            row = bench_pipeline(task, count=count, rounds=rounds, device=device)
        except Exception as exc:
            log.exception("pipeline bench of %s failed", task)
            row = {"task": task, "error": f"{type(exc).__name__}: {exc}"}
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return rows


_PEAK_RSS = """
import resource, sys
from vlm_core.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
open(sys.argv[1], "w").write(f"{peak} {code}")
"""


def memory_growth(
    task: str,
    *,
    sizes: tuple[int, ...] = (10, 100, 1000),
    device: str = "cpu",
    seed: int = 4321,
) -> dict[str, Any]:
    """Peak resident memory of ``vlm run TASK FOLDER --out DIR`` (each in a fresh process, as
    a user runs it) for folders of ``sizes`` inputs: the growth from the smallest folder to
    the largest should stay within 10% (results are exported as they come and dropped).

    The folders share files: the case writes ``min(sizes[-1], 100)`` distinct inputs and the
    larger folders hold hard links to them under new names (reading is per file all the same).
    """
    import os
    import subprocess
    import sys

    from vlm_core.plugins import get_registry

    case = get_registry().task(task).resolve_bench()
    if case is None:
        return {"task": task, "skipped": "the task declares no pipeline benchmark"}
    with tempfile.TemporaryDirectory(prefix="vlm-bench-memory-") as tmp:
        root = Path(tmp)
        distinct = root / "distinct"
        distinct.mkdir()
        case.make_inputs(distinct, min(max(sizes), 100), seed)
        files = sorted(p for p in distinct.iterdir() if p.is_file())
        peaks: dict[str, float] = {}
        for n in sizes:
            folder = root / f"n{n}"
            folder.mkdir()
            for i in range(n):
                source = files[i % len(files)]
                os.link(source, folder / f"{i:06d}-{source.name}")
            report = root / f"peak-{n}.txt"
            argv = ["run", task, str(folder), "--out", str(root / f"out-{n}"), "--device", device]
            subprocess.run([sys.executable, "-c", _PEAK_RSS, str(report), *argv], check=False,
                           capture_output=True)  # fmt: skip
            peak, code = report.read_text().split()
            if code not in ("0", "None"):
                raise RuntimeError(f"vlm run {task} on {n} inputs exited {code}")
            peaks[str(n)] = round(float(peak), 1)
            shutil.rmtree(root / f"out-{n}", ignore_errors=True)
    low, high = peaks[str(min(sizes))], peaks[str(max(sizes))]
    return {
        "task": task,
        "bench": "memory",
        "peak_rss_mb": peaks,
        "growth": round(high / low - 1, 4),
        "goal": "peak RSS of the largest folder within 10% of the smallest's",
    }
