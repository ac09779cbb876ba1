"""`caption.answer`'s replies on the support cases (vlm_caption.cases) with their photos under
each named shift of `vlm eval caption.describe --shift` (vlm_caption.shifts): the "replies
right" figure per shift, which `vlm eval` cannot give (caption.answer is not trainable).

    OMP_NUM_THREADS=1 .venv/bin/python plugins/caption/benchmarks/shift_support.py \\
        [--shift all | --shift NAME ...] [--n 500] [--n-hard 100] [--seed 7500000] \\
        [--weights RUN_OR_FILE] [--min-confidence 0.6] [--json FILE]

Every shift uses the same cases (data seed --seed: the acceptance range starts at 7,500,000,
validation at 7,510,000, the tests at 7,520,000), photos of 128 px, shifted by the same code
that writes `vlm eval`'s photos (vlm_caption.shift_data.shifted_photo).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from vlm_caption.evaluation import support_scores
from vlm_caption.knowledge import load_knowledge_base
from vlm_caption.model import load_captioner
from vlm_caption.shifts import EVAL_SEED, PHOTO_SIZE, SHIFTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shift", action="append", default=[], help="a shift name, or all")
    parser.add_argument("--n", type=int, default=500, help="answerable cases per shift")
    parser.add_argument(
        "--n-hard", type=int, default=100, help="unknown and unclear cases per shift (0: none)"
    )
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="data seed of the cases")
    parser.add_argument("--weights", default="")
    parser.add_argument("--min-confidence", type=float, default=0.6)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    names = list(SHIFTS) if not args.shift or "all" in args.shift else args.shift
    unknown = [name for name in names if name not in SHIFTS]
    if unknown:
        parser.error(f"unknown shift {unknown[0]!r} (shifts: {', '.join(SHIFTS)}, or all)")
    kb = load_knowledge_base()
    loaded = load_captioner(args.weights)
    report: dict[str, object] = {
        "weights": loaded.path, "weights_sha256": loaded.sha256, "data_seed": args.seed,
        "min_confidence": args.min_confidence, "photo_size": PHOTO_SIZE, "shifts": {},
    }  # fmt: skip
    print(f"{'shift':<12} {'N':>5} {'right':>7} {'± se':>6} {'clarify':>8} {'wrong':>6}"
          f"  {'unfamiliar':>10}  hard sets: wrong replies (N)")  # fmt: skip
    for name in names:
        start = time.perf_counter()
        scores = support_scores(
            loaded, kb, min_confidence=args.min_confidence, seed=args.seed, n=args.n,
            n_hard=args.n_hard, shift=name, size=PHOTO_SIZE,
        )  # fmt: skip
        seconds = round(time.perf_counter() - start, 1)
        main_set = scores["answerable"]
        rate = main_set["right_reply_rate"]
        se = math.sqrt(rate * (1 - rate) / main_set["cases"])
        hard = ", ".join(f"{k} {v['wrong_replies']} ({v['cases']})"
                         for k, v in scores.items() if k != "answerable")  # fmt: skip
        unfamiliar = main_set["clarify_reasons"].get("unfamiliar_photo", 0)
        print(f"{name:<12} {main_set['cases']:>5} {rate:>7.3f} {se:>6.3f} "
              f"{main_set['clarify_rate']:>8.3f} {main_set['wrong_replies']:>6}  "
              f"{unfamiliar:>10}  {hard or '-'}  [{seconds} s]")  # fmt: skip
        print(f"{'':<12} right by kind: {main_set['right_by_kind']}; "
              f"questions: {main_set['clarify_reasons']}")  # fmt: skip
        report["shifts"][name] = {"seconds": seconds, "standard_error": round(se, 4), **scores}  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
