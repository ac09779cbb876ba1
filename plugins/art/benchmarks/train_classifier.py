"""Train and save the style classifier (plugins/art/vlm_art/weights/style-classifier/): the
judge of `art.generate`'s style accuracy and the feature network of its FID/KID figures, fitted
only on real procedural samples (data seed 0) and measured on held-out ones (data seed 1).

.venv/bin/python plugins/art/benchmarks/train_classifier.py [--per-style 1000] [--steps 2500]
"""

from __future__ import annotations

import argparse
import json

import torch
from torchmetrics.functional import confusion_matrix
from vlm_art import classifier
from vlm_art.styles import STYLES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-style", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    net, train_acc = classifier.train(args.per_style, steps=args.steps, seed=args.seed)
    held_x, held_y = classifier.real_set(200, seed=1)
    with torch.no_grad():
        preds = torch.cat([net.logits(b).argmax(1) for b in held_x.split(256)])
    held_acc = float((preds == held_y).float().mean())
    matrix = confusion_matrix(preds, held_y, task="multiclass", num_classes=len(STYLES))
    record = {
        "command": "python plugins/art/benchmarks/train_classifier.py "
        f"--per-style {args.per_style} --steps {args.steps} --seed {args.seed}",
        "data": f"vlm_art.styles: {args.per_style} images per style at 32 px, data seed 0",
        "steps": args.steps,
        "seed": args.seed,
        "train_accuracy": round(train_acc, 4),
        "held_out_accuracy": round(held_acc, 4),
        "held_out": "200 images per style, data seed 1",
        "held_out_confusion (rows: true style, columns: predicted)": matrix.T.tolist(),
    }
    classifier.save(net, classifier.folder(), record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
