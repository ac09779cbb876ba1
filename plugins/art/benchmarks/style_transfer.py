"""CPU time of `art.style_transfer` at 256 px (and 128 px): scikit-image's astronaut as
content, the bundled generated painting as style, random-weight VGG-11 features.

    .venv/bin/python plugins/art/benchmarks/style_transfer.py [--steps 20] [--threads 2]

Prints seconds per optimisation step and per image at the default 100 steps, next to the raw
forward + backward of the same timm backbone at that size (the floor a step cannot beat).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from vlm_art.params import TransferParams
from vlm_art.transfer import StyleTransfer, _load_style, _resized


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="128,256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from skimage import data

    astronaut = np.asarray(data.astronaut())
    style_rgb = _load_style("")
    defaults = TransferParams()  # the task's defaults: what `vlm run art.style_transfer` does
    transfer = StyleTransfer(defaults.backbone, seed=0)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        content, style = _resized(astronaut, size), _resized(style_rgb, size)
        weights = {"style_weight": defaults.style_weight,
                   "content_weight": defaults.content_weight, "lr": defaults.lr}  # fmt: skip
        transfer(content, style, steps=1, **weights)  # warm-up
        t0 = time.perf_counter()
        _, losses = transfer(content, style, steps=args.steps, **weights)
        step_s = (time.perf_counter() - t0) / args.steps
        x = content.clone().requires_grad_(True)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            sum(f.sum() for f in transfer.model(x)).backward()
        raw_s = (time.perf_counter() - t0) / args.steps
        rows.append({"size": size, "s_per_step": round(step_s, 4), "s_per_image_100_steps":
                     round(100 * step_s, 2), "raw_timm_fwd_bwd_s": round(raw_s, 4),
                     "ratio_to_raw": round(step_s / raw_s, 2), "final_losses": losses})  # fmt: skip
    print(json.dumps({"threads": args.threads, "backbone": "vgg11 (random, seed 0)", "rows": rows},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
