"""Measure `art.generate`'s weights: style accuracy of generated images per style, judged by
the bundled style classifier (trained only on real procedural samples), and FID/KID of the
conditional GAN and of the DCGAN baseline against held-out real samples (data seed 1, never
seen in training) in that classifier's 128-d feature space.

    .venv/bin/python plugins/art/benchmarks/evaluate.py [--cgan REF] [--baseline REF] [--n 200]
        [--json FILE]

REF: a training folder, checkpoint or weights file; defaults: the bundled cgan32 and
dcgan32-baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from vlm_art import classifier
from vlm_art.evaluation import baseline_weights, quality, real_features, style_accuracy

from vlm_core.gan.metrics import fid_from_features, kid_from_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cgan", default="", help="the conditional GAN (default: bundled)")
    parser.add_argument("--baseline", default="", help="the DCGAN (default: bundled baseline)")
    parser.add_argument("--n", type=int, default=200, help="images per style (default 200)")
    parser.add_argument("--json", default="", help="also write the report to this file")
    args = parser.parse_args()
    baseline = args.baseline or baseline_weights()
    torch.set_num_threads(2)
    held = real_features(args.n, seed=1)
    report: dict[str, object] = {
        "feature_network": classifier.NAME,
        "held_out_real": f"{args.n} per style, data seed 1",
        "style_accuracy": style_accuracy(args.cgan, args.n),
        "style_accuracy_truncation_1": style_accuracy(args.cgan, args.n, truncation=1.0),
        "cgan": quality(args.cgan, held, args.n),
        "dcgan_baseline": quality(baseline, held, args.n),
    }
    # the floor: real training images (data seed 0) against the held-out real ones
    train = real_features(args.n, seed=0)
    kid_mean, _ = kid_from_features(held, train, subsets=100, subset_size=len(held) // 2)
    report["real_vs_real"] = {"fid": fid_from_features(held, train), "kid": kid_mean}
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
