"""medical.segment: `vlm run` at its defaults against `vlm eval` on the same held-out images.

    python plugins/medical/benchmarks/run_matches_eval.py --dims 2 --count 500

Draws ``--count`` images (``--dims 3``: volumes) from the acceptance seed of the task's shifts
(7,200,000, the "none" shift), measures the shipped weights' Dice with `vlm eval` and from the
masks of a `vlm run` over the same files, and prints both with their difference (the issue's
bar: within 0.005). The run writes no previews; its run record goes to a scratch store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, choices=(2, 3), default=2)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None, help="default: the shifts' seed")
    parser.add_argument("--shift", default="none")
    args = parser.parse_args()
    from vlm_medical.run_check import run_dice
    from vlm_medical.segment import default_weights
    from vlm_medical.shift_data import write_shift_set
    from vlm_medical.shifts import EVAL_SEED

    from vlm_core.runstore import RunStore
    from vlm_core.training.api import evaluate_task

    seed = EVAL_SEED if args.seed is None else args.seed
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = write_shift_set(root / "data", args.shift, args.count, seed, dims=args.dims)
        evaluated = evaluate_task("medical.segment", data, weights=default_weights(args.dims),
                                  device="cpu")  # fmt: skip
        ran, count = run_dice(data, root / "out", store=RunStore(root / "runs.sqlite"))
    row = {"dims": args.dims, "shift": args.shift, "seed": seed, "count": count,
           "eval_dice": round(evaluated.metrics["val_dice"], 4), "run_dice": round(ran, 4),
           "difference": round(ran - evaluated.metrics["val_dice"], 4)}  # fmt: skip
    print(json.dumps(row))


if __name__ == "__main__":
    main()
