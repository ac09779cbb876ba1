"""Caption scikit-image's photographs (astronaut, coffee, chelsea, rocket) and two generated
product photos with the bundled captioner; print the captions and top tags and save a figure
(docs/images/caption-skimage.jpg by default).

    .venv/bin/python plugins/caption/benchmarks/skimage_captions.py [--out FILE]
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image as PIL
from PIL import ImageDraw
from vlm_caption.describe import run
from vlm_caption.params import DescribeParams
from vlm_caption.products import render_photo

from vlm_core.tasks import RunContext
from vlm_core.types import Image

REPO = Path(__file__).resolve().parents[3]


def main() -> None:
    from skimage import data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs/images/caption-skimage.jpg")
    args = parser.parse_args()
    images = [Image(getattr(data, name)(), name=name)
              for name in ("astronaut", "coffee", "chelsea", "rocket")]  # fmt: skip
    for seed, (product, colour, defect) in enumerate((("teapot", "blue", "crack"),
                                                      ("mug", "yellow", "missing"))):  # fmt: skip
        photo = render_photo(96, 8_000_000 + seed, product=product, colour=colour, defect=defect)
        images.append(Image(photo.pixels, name=f"generated {colour} {product}"))
    ctx = RunContext(task="caption.describe", plugin="caption", requested_device="cpu")
    results = run(images, DescribeParams(top_k=3), ctx)
    side, tiles = 224, []
    for image, result in zip(images, results, strict=True):
        caption = result["caption"]
        tags = ", ".join(f"{k} {v:.2f}" for k, v in caption.tags.items())
        print(f"{image.name:>24}: {caption.text!r}  [{tags}]")
        tile = PIL.new("RGB", (side, side + 70), "white")
        tile.paste(PIL.fromarray(image.to_rgb_uint8()).resize((side, side)), (0, 0))
        draw = ImageDraw.Draw(tile)
        lines = [image.name, *textwrap.wrap(f'"{caption.text}"', 34)][:4]
        for i, line in enumerate(lines):
            draw.text((4, side + 2 + 16 * i), line, fill="black")
        tiles.append(np.asarray(tile))
    grid = np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(grid).save(args.out, quality=85)
    print(args.out)


if __name__ == "__main__":
    main()
