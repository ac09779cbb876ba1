"""Where a medical run's CPU time goes beyond the network: CPU ms per input of a whole run and
of its parts, alternating in one process, medians over the rounds.

`vlm bench --pipeline` gives the ratio and the stages' wall time; the stages overlap (reading
and writing run in threads), so this script takes the run apart instead, on the same inputs
(the task's `vlm bench --pipeline` case, seed 1234 as there):

- ``run``: ``vlm run TASK FOLDER --out DIR`` as the CLI runs it (default outputs);
- ``no_preview``: the same with ``--no-preview`` (no overlay images);
- ``no_export``: the same without ``--out`` (nothing written);
- ``read``: the core's reader on every file;
- ``task``: the task's ``run`` on the decoded inputs, batch by batch;
- ``model``: the case's model-only callable (what ``vlm bench --pipeline`` divides by).

Run from the repository root, e.g. with torch on one thread (see the README's "Speed")::

    OMP_NUM_THREADS=1 .venv/bin/python plugins/medical/benchmarks/pipeline_cpu.py \\
        --task medical.classify --count 64 --rounds 3
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def measure(task: str, count: int, rounds: int, seed: int = 1234) -> dict[str, Any]:
    import torch

    from vlm_core.io import load_input, probe_input
    from vlm_core.params import validate_params
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.tasks import RunContext

    spec = get_registry().task(task)
    case = spec.resolve_bench()
    params = validate_params(spec, dict(case.params))
    root = Path(tempfile.mkdtemp(prefix="vlm-medical-cpu-"))
    try:
        folder = root / "inputs"
        folder.mkdir()
        case.make_inputs(folder, count, seed)
        files = sorted(folder.iterdir())
        batch = spec.batch_size
        model = case.model_only(files, params, batch, "cpu")
        module, name = str(spec.run).split(":")
        task_run = getattr(importlib.import_module(module), name)
        items = [load_input(probe_input(f, spec.inputs)) for f in files]

        def whole(out: bool, previews: bool = True) -> Callable[[], Any]:
            def go() -> None:
                target = root / "out" if out else None
                if target is not None:
                    shutil.rmtree(target, ignore_errors=True)
                request = RunRequest(task, [str(folder)], dict(case.params), out_dir=target,
                                     device="cpu", seed=0, previews=previews)  # fmt: skip
                run_task(request, keep_results=False)

            return go

        def read() -> None:
            for f in files:
                load_input(probe_input(f, spec.inputs))

        def task_alone() -> None:
            ctx = RunContext(task=task, plugin=spec.plugin, requested_device="cpu", seed=0,
                             batch_size=batch)  # fmt: skip
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                task_run(chunk, params, ctx)
                ctx.take_ood(len(chunk))

        parts: dict[str, Callable[[], Any]] = {
            "run": whole(True),
            "no_preview": whole(True, previews=False),
            "no_export": whole(False),
            "read": read,
            "task": task_alone,
            "model": model,
        }
        cpu: dict[str, list[float]] = {k: [] for k in parts}
        for i in range(rounds + 1):  # round 0 warms every part up and is not counted
            for key, fn in parts.items():
                c0 = time.process_time()
                fn()
                if i:
                    cpu[key].append((time.process_time() - c0) / count * 1e3)
        row: dict[str, Any] = {
            "task": task, "inputs": count, "batch": batch, "rounds": rounds,
            "torch_threads": torch.get_num_threads(),
            "cpu_ms_per_input": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
            "spread": {k: [round(min(v), 2), round(max(v), 2)] for k, v in cpu.items()},
        }  # fmt: skip
        med = row["cpu_ms_per_input"]
        row["ratio_cpu"] = round(med["model"] / med["run"], 3)
        row["ratio_cpu_no_preview"] = round(med["model"] / med["no_preview"], 3)
        return row
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="medical.classify")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.task, args.count, args.rounds), indent=2))


if __name__ == "__main__":
    main()
