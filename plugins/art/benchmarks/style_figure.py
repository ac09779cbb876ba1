"""The README's figure of the built-in style networks: each built-in style image (top row) and
scikit-image's astronaut (held out from training) through its network (bottom row), at 256 px.

    .venv/bin/python plugins/art/benchmarks/style_figure.py [--out FILE]

(default FILE: ``plugins/art/docs/style-networks-astronaut.jpg``)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from vlm_art import style_images
from vlm_art.content import photograph
from vlm_art.params import BUILTIN_STYLES, TransferParams
from vlm_art.transfer import run

from vlm_core.tasks import RunContext
from vlm_core.types import Image as VImage

SIDE = 256
GAP = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    figure = Path(__file__).parents[1] / "docs" / "style-networks-astronaut.jpg"
    parser.add_argument("--out", type=Path, default=figure)
    args = parser.parse_args()
    photo = VImage(style_images.resized(photograph("astronaut"), SIDE), name="astronaut")
    ctx = RunContext(task="art.style_transfer", plugin="art", requested_device="cpu")
    width = len(BUILTIN_STYLES) * (SIDE + GAP) - GAP
    canvas = np.full((2 * SIDE + GAP, width, 3), 255, np.uint8)
    for i, style in enumerate(BUILTIN_STYLES):
        left = i * (SIDE + GAP)
        canvas[:SIDE, left : left + SIDE] = style_images.pixels(style_images.Style(style), SIDE)
        out = run([photo], TransferParams(style=style, size=SIDE), ctx)[0]["stylised"]
        canvas[SIDE + GAP :, left : left + SIDE] = out.pixels
    Image.fromarray(canvas).save(args.out, quality=88)
    print(args.out)


if __name__ == "__main__":
    main()
