"""A task's run with two sets of weights on the same inputs: does a new default model cost
more time per input than the one it replaces?

    python benchmarks/weights_latency.py medical.segment INPUTS --old OLD_WEIGHTS \
        [--new NEW_WEIGHTS] [--old-param K=V ...] [--rounds 7] [--device cpu] [--out results/]

Each round runs the task through the core runner (``vlm run``'s path: reading, the task's
own pre- and post-processing, no files written) once with ``--old`` and once with ``--new``
(empty: the weights the task ships now), alternating which goes first; every run's parameters
are the defaults, so each set of weights runs at the settings its card records (a 2D UNet
trained at roi 128 runs at 128). ``--old-param`` gives the old weights' runs the settings the
code they shipped with ran them at (the 2D UNet's former window: ``--old-param roi=64``).
Reports the median ms per input of each, and their ratio.
Old weights come from the repository's history, e.g. for the 2D UNet before issue 21::

    W=plugins/medical/vlm_medical/weights/segment-unet2d
    for f in model.safetensors model.json familiarity.safetensors; do
        git show b5d52f5:$W/$f > old/$f; done
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def _timed(
    task: str, inputs: list[str], weights: str, device: str, store: Any,
    extra: dict[str, Any] | None = None,
) -> tuple[float, int]:  # fmt: skip
    """Seconds of one run of ``inputs`` with ``weights``, and how many inputs it answered."""
    from vlm_core.runner import RunRequest, run_task

    params = {**({"weights": weights} if weights else {}), **(extra or {})}
    request = RunRequest(task, inputs=inputs, params=params, device=device, previews=False)
    start = time.perf_counter()
    outcome = run_task(request, store=store, keep_results=False)
    elapsed = time.perf_counter() - start
    if outcome.failures:
        raise SystemExit(f"{len(outcome.failures)} inputs failed: {outcome.failures[0]}")
    return elapsed, len(outcome.summaries)


def compare(
    task: str, inputs: list[str], old: str, new: str, rounds: int, device: str,
    old_params: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    import tempfile

    from vlm_core.runstore import RunStore

    with tempfile.TemporaryDirectory() as scratch:  # the runs stay out of the user's run store
        store = RunStore(Path(scratch) / "runs.sqlite")
        _, count = _timed(task, inputs, old, device, store, old_params)  # warm-up: both cached
        _timed(task, inputs, new, device, store)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for n in range(rounds):
            order = (("old", old), ("new", new)) if n % 2 == 0 else (("new", new), ("old", old))
            for name, ref in order:
                extra = old_params if name == "old" else None
                times[name].append(_timed(task, inputs, ref, device, store, extra)[0])
    old_ms = 1000 * statistics.median(times["old"]) / count
    new_ms = 1000 * statistics.median(times["new"]) / count
    return {"bench": "weights_latency", "task": task, "inputs": count, "rounds": rounds,
            "device": device, "old": old, "old_params": old_params or {},
            "new": new or "shipped",
            "old_ms_per_input": round(old_ms, 2), "new_ms_per_input": round(new_ms, 2),
            "new_over_old": round(new_ms / old_ms, 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task")
    parser.add_argument("inputs", nargs="+", help="input files or folders")
    parser.add_argument("--old", required=True, help="the weights replaced")
    parser.add_argument("--new", default="", help="the new weights (default: the shipped ones)")
    parser.add_argument(
        "--old-param",
        action="append",
        default=[],
        metavar="K=V",
        help="a run parameter of the old weights' runs (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from vlm_core.params import parse_pairs

    row = compare(args.task, args.inputs, args.old, args.new, args.rounds, args.device,
                  parse_pairs(args.old_param))  # fmt: skip
    text = json.dumps(row, indent=2)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"weights_latency_{args.task}.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
