"""Measure the bundled captioner (or --weights) on held-out generated product photos and
`caption.answer` on the held-out support cases (vlm_caption.evaluation).

    .venv/bin/python plugins/caption/benchmarks/evaluate.py [--n 300] [--seed 1] [--beam 3]
        [--weights RUN_OR_FILE] [--min-confidence 0.6] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vlm_caption.evaluation import caption_scores, support_scores
from vlm_caption.knowledge import load_knowledge_base
from vlm_caption.model import load_captioner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="held-out photos to caption")
    parser.add_argument("--seed", type=int, default=1, help="data seed of the held-out photos")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--weights", default="")
    parser.add_argument("--min-confidence", type=float, default=0.6)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    kb = load_knowledge_base()
    loaded = load_captioner(args.weights)
    start = time.perf_counter()
    captions = caption_scores(loaded, kb, n=args.n, seed=args.seed, beam=args.beam)
    support = support_scores(loaded, kb, min_confidence=args.min_confidence, seed=args.seed)
    report = {
        "weights": loaded.path,
        "weights_sha256": loaded.sha256,
        "data_seed": args.seed,
        "beam": args.beam,
        "min_confidence": args.min_confidence,
        "captions": captions,
        "support": support,
        "seconds": round(time.perf_counter() - start, 1),
    }
    for key, value in captions.items():
        if key != "examples":
            print(f"{key:>20}: {value}")
    for name, scores in support.items():
        figures = {k: v for k, v in scores.items() if k != "failures"}
        print(f"{name:>20}: {figures}")
        for failure in scores["failures"]:
            print(f"{'':>22}{failure['kind']}: {failure['message']!r} -> {failure['decision']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
