"""Quality of art.style_transfer's two methods on held-out photographs: the bundled feed-forward
networks against the optimisation at the task's defaults (256 px, 100 steps), per built-in style.

    .venv/bin/python plugins/art/benchmarks/style_quality.py [--images astronaut,coffee,...]
        [--styles painting,geometric,...] [--methods feedforward,optimize] [--size 256]
        [--weights TRAINED_FOLDER] [--threads 2] [--json FILE]

For each held-out photograph (``vlm_art.content.HELD_OUT``: never trained on) and each style,
both methods restyle it through the task's own run functions, and each output is measured by

- the objective both minimise (:mod:`vlm_art.optimize`): the relative content loss and the
  relative style loss on the random-weight VGG-11 (seed 0), with the style image at ``size``;
- the bundled style classifier (``weights/style-classifier``, trained only on real procedural
  images): whether it calls the output's centre square, reduced to its 32 px, the target style
  (procedural styles only: it knows no ``painting``). The unstylised photograph is judged too,
  as the floor.

Prints one JSON object: per style and method the mean losses, the classifier's hits out of N,
and the seconds per image (CPU, ``--threads`` threads).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from vlm_art import classifier, style_images
from vlm_art.content import HELD_OUT, photograph
from vlm_art.optimize import CONTENT_LEVEL, StyleTransfer, content_loss, gram, style_loss
from vlm_art.params import BUILTIN_STYLES, TransferParams
from vlm_art.styles import STYLES
from vlm_art.tensors import to_tensor
from vlm_art.transfer import plan

from vlm_core.tasks import RunContext
from vlm_core.types import Image


def judged_square(rgb: np.ndarray) -> torch.Tensor:
    """The centre square of (H, W, 3) uint8, reduced to 32 px (box filter), as the classifier
    was trained to see: (1, 3, 32, 32) in [0, 1]."""
    from PIL import Image as PILImage

    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = PILImage.fromarray(rgb[top : top + side, left : left + side])
    return to_tensor(np.asarray(square.resize((32, 32), PILImage.Resampling.BOX)))


def measure(
    loss_net: StyleTransfer,
    judge: classifier.StyleNet,
    grams: list[torch.Tensor],
    label: int | None,
    rgb: np.ndarray,
    photo: np.ndarray,
) -> dict[str, float | bool | None]:
    """The content and style losses of output ``rgb`` of ``photo``, and whether the judge calls
    it style ``label`` (None for a style it does not know)."""
    with torch.no_grad():
        out, ref = loss_net.features(to_tensor(rgb)), loss_net.features(to_tensor(photo))
        c = float(content_loss(out[CONTENT_LEVEL], ref[CONTENT_LEVEL]))
        s = float(style_loss(out, grams))
        hit = None if label is None else int(judge.logits(judged_square(rgb)).argmax())
    return {"content": c, "style": s, "hit": None if hit is None else hit == label}


def restyle(
    method: str, style: str, photo: Image, size: int, weights: str = ""
) -> tuple[np.ndarray, float]:
    """One output of the task's run function for ``method`` and its seconds (``weights``: a
    trained network instead of the built-in style's, for the feed-forward method)."""
    from vlm_art import feedforward, optimize

    params = TransferParams(style=style, method=method, size=size,  # type: ignore[arg-type]
                            weights=weights if method == "feedforward" else "")  # fmt: skip
    chosen, found = plan(params)
    assert chosen == method
    ctx = RunContext(task="art.style_transfer", plugin="art", requested_device="cpu")
    start = time.perf_counter()
    if method == "feedforward":
        result = feedforward.run([photo], params, found.name if found else None, ctx)
    else:
        assert found is not None
        result = optimize.run([photo], params, found, ctx)
    return result[0]["stylised"].pixels, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", default=",".join(HELD_OUT))
    parser.add_argument("--styles", default=",".join(BUILTIN_STYLES))
    parser.add_argument("--methods", default="feedforward,optimize")
    parser.add_argument("--size", type=int, default=TransferParams().size)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default="",
                        help="a `vlm train art.style_transfer` folder instead of the built-in "
                        "style's network (give its one style in --styles)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    defaults = TransferParams()
    loss_net = StyleTransfer(defaults.backbone, seed=defaults.seed)
    judge = classifier.load()
    images = args.images.split(",")
    photos = {n: style_images.resized(photograph(n), args.size) for n in images}
    rows: dict[str, dict[str, dict[str, object]]] = {}
    for style in args.styles.split(","):
        target = to_tensor(style_images.pixels(style_images.Style(style), args.size))
        with torch.no_grad():
            grams = [gram(f) for f in loss_net.features(target)]
        label = STYLES.index(style) if style in STYLES else None

        judged = functools.partial(measure, loss_net, judge, grams, label)
        per: dict[str, list[dict[str, float | bool | None]]] = {"photograph": []}
        seconds: dict[str, list[float]] = {}
        for name, photo in photos.items():
            per["photograph"].append(judged(photo, photo))
            for method in args.methods.split(","):
                rgb, took = restyle(method, style, Image(photo, name=name), args.size,
                                    args.weights)  # fmt: skip
                per.setdefault(method, []).append(judged(rgb, photo))
                seconds.setdefault(method, []).append(took)
        rows[style] = {}
        for what, found in per.items():
            hits = [r["hit"] for r in found if r["hit"] is not None]
            rows[style][what] = {
                "n": len(found),
                "content_loss": round(statistics.mean(float(r["content"]) for r in found), 4),
                "style_loss": round(statistics.mean(float(r["style"]) for r in found), 5),
                "called_target": f"{sum(bool(h) for h in hits)}/{len(hits)}" if hits else None,
            }
            if what in seconds:
                rows[style][what]["s_per_image_median"] = round(statistics.median(seconds[what]), 3)
        print(json.dumps({style: rows[style]}), flush=True)
    report = {"images": images, "size": args.size, "threads": args.threads,
              "objective": "relative losses on random VGG-11 (seed 0)", "styles": rows}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
