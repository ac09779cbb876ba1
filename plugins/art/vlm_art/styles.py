"""The procedural art-style generator: five visually distinct styles with randomised palettes
and layouts, at any size, reproducible by seed. It is the offline training data of the default
weights and the tests.

    pixels = render("circles", 64, seed=3)        # (64, 64, 3) uint8
    write_dataset(Path("art"), per_style=400, size=32, seed=0)   # art/<style>/0000.png ...

Styles (the sub-folder names of :func:`write_dataset`):

- ``geometric`` — hard-edge grids: a recursive split of the canvas into rectangles filled with
  flat palette colours and separated by dark lines.
- ``circles`` — concentric-circle compositions: one to three centres, rings of random widths.
- ``stripes`` — stripe fields at a random angle, stripes of random widths.
- ``pointillist`` — dot fields: many small round dots on a light ground.
- ``brush`` — brush-stroke textures: short thick strokes following a smooth flow field.

Images are drawn at twice the size and averaged down (anti-aliasing).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

STYLES: tuple[str, ...] = ("geometric", "circles", "stripes", "pointillist", "brush")

Rng = np.random.Generator


def palette(rng: Rng, n: int) -> np.ndarray:
    """``n`` colours (n, 3) in [0, 1] from a random harmonic scheme (analogous, complementary
    or triadic hues) with random saturation and value."""
    base = rng.random()
    scheme = rng.integers(3)
    offsets = {0: [0.0, 0.08, -0.08, 0.16], 1: [0.0, 0.5, 0.04, 0.54], 2: [0.0, 1 / 3, 2 / 3]}
    hues = offsets[int(scheme)]
    colours = []
    for i in range(n):
        h = (base + hues[i % len(hues)] + rng.normal(0, 0.02)) % 1.0
        s = rng.uniform(0.45, 1.0)
        v = rng.uniform(0.35, 1.0)
        colours.append(colorsys.hsv_to_rgb(h, s, v))
    return np.asarray(colours, dtype=np.float32)


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    return (yy + 0.5) / side, (xx + 0.5) / side


def _geometric(side: int, rng: Rng) -> np.ndarray:
    colours = palette(rng, int(rng.integers(3, 6)))
    img = np.empty((side, side, 3), np.float32)
    line = max(1, round(side * rng.uniform(0.02, 0.045)))
    dark = np.array([0.05, 0.05, 0.07], np.float32) * rng.uniform(0.5, 2.0)

    def split(y0: int, y1: int, x0: int, x1: int, depth: int) -> None:
        h, w = y1 - y0, x1 - x0
        if depth >= 4 or min(h, w) < side // 5 or (depth > 1 and rng.random() < 0.3):
            light = rng.random() < 0.45
            img[y0:y1, x0:x1] = 0.92 if light else colours[rng.integers(len(colours))]
            return
        if (w > h) if rng.random() < 0.8 else (w <= h):
            cut = int(x0 + w * rng.uniform(0.3, 0.7))
            split(y0, y1, x0, cut, depth + 1)
            split(y0, y1, cut, x1, depth + 1)
            img[y0:y1, max(cut - line // 2, 0) : cut + (line + 1) // 2] = dark
        else:
            cut = int(y0 + h * rng.uniform(0.3, 0.7))
            split(y0, cut, x0, x1, depth + 1)
            split(cut, y1, x0, x1, depth + 1)
            img[max(cut - line // 2, 0) : cut + (line + 1) // 2, x0:x1] = dark

    split(0, side, 0, side, 0)
    return img


def _circles(side: int, rng: Rng) -> np.ndarray:
    colours = palette(rng, int(rng.integers(3, 6)))
    yy, xx = _grid(side)
    img = np.empty((side, side, 3), np.float32)
    img[:] = colours[0]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.1, 0.9, 2)
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        outer = rng.uniform(0.3, 0.75)
        widths = rng.uniform(0.03, 0.09, 24)
        edges = np.cumsum(widths)
        ring = np.searchsorted(edges, r)  # ring index of each pixel
        inside = r < outer
        picks = rng.integers(0, len(colours), len(edges) + 1)
        img[inside] = colours[picks[ring[inside]]]
    return img


def _stripes(side: int, rng: Rng) -> np.ndarray:
    colours = palette(rng, int(rng.integers(2, 5)))
    yy, xx = _grid(side)
    angle = rng.uniform(0, math.pi)
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = t - t.min()
    widths = rng.uniform(0.03, 0.12, 64)
    edges = np.cumsum(widths)
    band = np.searchsorted(edges, t)
    order = np.arange(len(edges) + 1) % len(colours)
    if rng.random() < 0.5:
        order = rng.integers(0, len(colours), len(edges) + 1)
    return colours[order[band]].astype(np.float32)


def _stamp(img: np.ndarray, mask_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
           box: tuple[int, int, int, int], colour: np.ndarray) -> None:  # fmt: skip
    """Paint ``colour`` where ``mask_fn(yy, xx)`` holds inside ``box`` (y0, y1, x0, x1)."""
    side = img.shape[0]
    y0, y1, x0, x1 = max(box[0], 0), min(box[1], side), max(box[2], 0), min(box[3], side)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    mask = mask_fn(yy, xx)
    img[y0:y1, x0:x1][mask] = colour


def _pointillist(side: int, rng: Rng) -> np.ndarray:
    colours = palette(rng, int(rng.integers(3, 6)))
    img = np.empty((side, side, 3), np.float32)
    img[:] = rng.uniform(0.85, 0.97, 3)
    radius = side * rng.uniform(0.018, 0.035)
    count = int((side / radius) ** 2 * rng.uniform(0.12, 0.25))
    for _ in range(count):
        cy, cx = rng.uniform(0, side, 2)
        r = radius * rng.uniform(0.8, 1.2)
        colour = colours[rng.integers(len(colours))]
        box = (int(cy - r), int(cy + r) + 1, int(cx - r), int(cx + r) + 1)
        _stamp(img, lambda y, x, cy=cy, cx=cx, r=r: (y - cy) ** 2 + (x - cx) ** 2 <= r * r,
               box, colour)  # fmt: skip
    return img


def _brush(side: int, rng: Rng) -> np.ndarray:
    colours = palette(rng, int(rng.integers(3, 6)))
    img = np.empty((side, side, 3), np.float32)
    img[:] = colours[0] * 0.8
    # a smooth flow field: a sum of a few random sinusoids gives the stroke angle
    k = rng.uniform(1.0, 4.0, (3, 2))
    phase = rng.uniform(0, 2 * math.pi, 3)
    base = rng.uniform(0, math.pi)
    length = side * rng.uniform(0.12, 0.22)
    width = side * rng.uniform(0.03, 0.05)
    count = int((side / length) * (side / width) * 1.6)
    for _ in range(count):
        cy, cx = rng.uniform(0, side, 2)
        angle = base + sum(
            math.sin(
                k[i, 0] * cy / side * 2 * math.pi + k[i, 1] * cx / side * 2 * math.pi + phase[i]
            )
            for i in range(3)
        )
        dy, dx = math.sin(angle), math.cos(angle)
        half = length * rng.uniform(0.7, 1.3) / 2
        w = width * rng.uniform(0.8, 1.2) / 2
        colour = np.clip(colours[rng.integers(len(colours))] * rng.uniform(0.85, 1.15), 0, 1)
        reach = int(half + w) + 1
        box = (int(cy) - reach, int(cy) + reach + 1, int(cx) - reach, int(cx) + reach + 1)

        def capsule(y: np.ndarray, x: np.ndarray, cy=cy, cx=cx, dy=dy, dx=dx, half=half, w=w):  # type: ignore[no-untyped-def]
            along = np.clip((y - cy) * dy + (x - cx) * dx, -half, half)
            return (y - cy - along * dy) ** 2 + (x - cx - along * dx) ** 2 <= w * w

        _stamp(img, capsule, box, colour)
    return img


_DRAW: dict[str, Callable[[int, Rng], np.ndarray]] = {
    "geometric": _geometric,
    "circles": _circles,
    "stripes": _stripes,
    "pointillist": _pointillist,
    "brush": _brush,
}


def check_style(name: str) -> str:
    """``name`` if it is a style; otherwise a ValueError naming the styles."""
    if name not in _DRAW:
        import difflib

        close = difflib.get_close_matches(name, STYLES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown style '{name}' (the styles are {', '.join(STYLES)}){hint}")
    return name


def render(style: str, size: int = 32, seed: int = 0) -> np.ndarray:
    """One image of ``style``: (size, size, 3) uint8, the same for the same seed."""
    check_style(style)
    if not 8 <= size <= 2048:
        raise ValueError(f"size must lie in [8, 2048] pixels, got {size}")
    # the style's index is mixed into the seed so that styles never share a layout
    rng = np.random.default_rng([seed, STYLES.index(style)])
    big = _DRAW[style](2 * size, rng)
    small = big.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    return (np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_dataset(
    folder: Path,
    per_style: int,
    *,
    size: int = 32,
    seed: int = 0,
    styles: Sequence[str] = STYLES,
) -> Path:
    """Write ``per_style`` PNG images of each style into ``folder/<style>/NNNN.png``; image
    ``i`` is ``render(style, size, seed * 1_000_003 + i)``, so different ``seed``s give
    disjoint sets (held-out data: another seed)."""
    from PIL import Image

    for style in styles:
        target = Path(folder) / check_style(style)
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_style):
            pixels = render(style, size, seed * 1_000_003 + i)
            Image.fromarray(pixels).save(target / f"{i:04d}.png")
    return Path(folder)


def main() -> None:
    """``python -m vlm_art.styles OUT [PER_STYLE] [SIZE] [SEED]``: write a data set."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vlm_art.styles", description="Write a data set of the procedural styles."
    )
    parser.add_argument("out", type=Path, help="the folder to write (one sub-folder per style)")
    parser.add_argument("per_style", type=int, nargs="?", default=400)
    parser.add_argument("size", type=int, nargs="?", default=32)
    parser.add_argument("seed", type=int, nargs="?", default=0)
    args = parser.parse_args()
    write_dataset(args.out, args.per_style, size=args.size, seed=args.seed)


if __name__ == "__main__":
    main()
