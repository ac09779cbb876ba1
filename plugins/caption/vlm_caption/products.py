"""The procedural product-photo generator: catalogue products of varied shape, colour,
background and lighting, with and without defects, and the texts that go with each photo
(captions, question/answer pairs and customer messages, from templates with varied wording).
It is the offline training data of the default captioner and the data of the tests.

    photo = render_photo(size=96, seed=3)       # a Photo: pixels (96, 96, 3) uint8 + attributes
    write_dataset(Path("products"), n=16000, size=96, seed=0)  # products/NNNNN.png, captions.csv

What a photo can show:

- **products** (the catalogue): mug, bottle, box, bowl, vase, teapot — each drawn from a few
  parts with random proportions, position, size and a light-to-shadow shading;
- **unknown objects** (not in the catalogue): lamp, ball, book, chair — the captioner learns
  to call them "unknown", which is what lets ``caption.answer`` ask instead of guessing;
- **colours**: red, orange, yellow, green, blue, purple, white, black (hue, saturation and
  value jittered);
- **defects**: none, crack, stain, dent, or a missing part (the mug's handle, the bottle's
  cap, the box's lid, the bowl's base, the vase's neck, the teapot's lid); a crack, stain or
  dent always visibly changes at least :data:`MIN_DEFECT_AREA` of the photo (one that would
  not is drawn again elsewhere), so a photo labelled damaged shows its damage;
- **scenes**: a wall and a table of random neutral colours, a soft shadow, a directional light
  gradient, global brightness and sensor noise.

Photo ``i`` of a data set with seed ``s`` is ``render_photo(size, s * 1_000_003 + i)``, so
another seed is held-out data.
"""

from __future__ import annotations

import colorsys
import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Rng = np.random.Generator

PRODUCTS: tuple[str, ...] = ("mug", "bottle", "box", "bowl", "vase", "teapot")
UNKNOWN_OBJECTS: tuple[str, ...] = ("lamp", "ball", "book", "chair")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "white", "black")
DEFECTS: tuple[str, ...] = ("none", "crack", "stain", "dent", "missing")
#: the part a product can be missing
PARTS: dict[str, str] = {
    "mug": "handle",
    "bottle": "cap",
    "box": "lid",
    "bowl": "base",
    "vase": "neck",
    "teapot": "lid",
}
UNKNOWN = "unknown"

# (hue, saturation, value) of each colour name; hue None: achromatic
_HSV: dict[str, tuple[float | None, float, float]] = {
    "red": (0.0, 0.85, 0.8),
    "orange": (0.075, 0.9, 0.95),
    "yellow": (0.15, 0.85, 0.95),
    "green": (0.35, 0.75, 0.6),
    "blue": (0.62, 0.8, 0.85),
    "purple": (0.79, 0.65, 0.6),
    "white": (None, 0.0, 0.95),
    "black": (None, 0.0, 0.12),
}
_WALLS = (
    (0.82, 0.82, 0.8),
    (0.86, 0.8, 0.7),
    (0.7, 0.78, 0.85),
    (0.45, 0.45, 0.47),
    (0.6, 0.66, 0.6),
)
_TABLES = (
    (0.55, 0.38, 0.22),
    (0.7, 0.7, 0.68),
    (0.3, 0.3, 0.32),
    (0.9, 0.88, 0.84),
    (0.42, 0.3, 0.2),
)


@dataclass(frozen=True)
class Photo:
    """One generated photo and what it shows."""

    pixels: np.ndarray  # (size, size, 3) uint8
    product: str  # a PRODUCTS name, or an UNKNOWN_OBJECTS name
    colour: str
    defect: str  # a DEFECTS name
    seed: int

    @property
    def known(self) -> bool:
        """Whether the product is in the catalogue."""
        return self.product in PRODUCTS

    @property
    def label(self) -> str:
        """The product as the captioner names it: the product, or ``unknown``."""
        return self.product if self.known else UNKNOWN

    @property
    def part(self) -> str | None:
        """The missing part, for a ``missing`` defect."""
        return PARTS[self.product] if self.defect == "missing" else None

    @property
    def problem(self) -> str:
        """The defect as the captioner answers it: ``nothing``, ``crack``, ..., ``missing
        handle``."""
        if self.defect == "none":
            return "nothing"
        return f"missing {self.part}" if self.defect == "missing" else self.defect


def colour_rgb(name: str, rng: Rng) -> np.ndarray:
    """A jittered RGB in [0, 1] of a colour name."""
    hue, sat, val = _HSV[name]
    if hue is None:
        grey = float(np.clip(val + rng.normal(0, 0.03), 0, 1))
        return np.array([grey, grey, grey * rng.uniform(0.97, 1.03)], np.float32).clip(0, 1)
    h = (hue + rng.normal(0, 0.012)) % 1.0
    s = float(np.clip(sat + rng.normal(0, 0.06), 0.4, 1))
    v = float(np.clip(val + rng.normal(0, 0.06), 0.35, 1))
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), np.float32)


# --- drawing --------------------------------------------------------------------------------
# Shapes are drawn with PIL at twice the size, in a product frame: (x, y) in [-1, 1] around the
# product's centre, scaled by its half-size; y grows downwards.


class _Canvas:
    def __init__(self, side: int, centre: tuple[float, float], half: float, rng: Rng) -> None:
        from PIL import Image, ImageDraw

        self.side, self.cx, self.cy, self.half, self.rng = side, centre[0], centre[1], half, rng
        self.body = Image.new("L", (side, side), 0)  # the product's silhouette
        self.main = Image.new("L", (side, side), 0)  # where defects may go
        self.accent = Image.new("L", (side, side), 0)  # parts in the accent colour
        self.dark = Image.new("L", (side, side), 0)  # openings / insides
        self._draw = {
            name: ImageDraw.Draw(getattr(self, name)) for name in ("body", "main", "accent", "dark")
        }

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + x * self.half, self.cy + y * self.half)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    def _layers(self, layer: str) -> list[str]:
        return ["body", layer] if layer != "body" else ["body"]

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, layer: str = "main") -> None:
        for name in self._layers(layer):
            self._draw[name].ellipse(self.box(x0, y0, x1, y1), fill=255)

    def rect(self, x0: float, y0: float, x1: float, y1: float, layer: str = "main") -> None:
        for name in self._layers(layer):
            self._draw[name].rectangle(self.box(x0, y0, x1, y1), fill=255)

    def rounded(self, x0: float, y0: float, x1: float, y1: float, r: float,
                layer: str = "main") -> None:  # fmt: skip
        for name in self._layers(layer):
            self._draw[name].rounded_rectangle(
                self.box(x0, y0, x1, y1), radius=r * self.half, fill=255
            )

    def polygon(self, points: Sequence[tuple[float, float]], layer: str = "main") -> None:
        for name in self._layers(layer):
            self._draw[name].polygon([self.xy(x, y) for x, y in points], fill=255)

    def ring(self, x0: float, y0: float, x1: float, y1: float, width: float,
             layer: str = "main") -> None:  # fmt: skip
        for name in self._layers(layer):
            self._draw[name].ellipse(
                self.box(x0, y0, x1, y1), outline=255, width=max(1, round(width * self.half))
            )

    def hole(self, x0: float, y0: float, x1: float, y1: float) -> None:
        """Cut a hole (the background shows) out of the silhouette."""
        for name in ("body", "main", "accent", "dark"):
            self._draw[name].ellipse(self.box(x0, y0, x1, y1), fill=0)


def _u(rng: Rng, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _draw_product(c: _Canvas, product: str, missing: bool) -> None:
    """The product's parts; ``missing``: leave its missing part out."""
    r = c.rng
    if product == "mug":
        w, top, bottom = _u(r, 0.45, 0.6), _u(r, -0.7, -0.5), _u(r, 0.55, 0.75)
        x0 = -w - 0.15
        c.rect(x0, top, w - 0.15, bottom)
        c.ellipse(x0, bottom - 0.1, w - 0.15, bottom + 0.1)
        c.ellipse(x0, top - 0.1, w - 0.15, top + 0.1, layer="dark")
        if not missing:
            hx = w - 0.15
            c.ring(hx - 0.25, top + 0.2, hx + 0.45, bottom - 0.25, _u(r, 0.1, 0.15))
    elif product == "bottle":
        w, neck = _u(r, 0.3, 0.42), _u(r, 0.11, 0.16)
        c.rounded(-w, -0.2, w, 0.85, 0.15)
        c.polygon([(-w, -0.05), (w, -0.05), (neck, -0.45), (-neck, -0.45)])
        c.rect(-neck, -0.62, neck, -0.35)
        if missing:
            c.ellipse(-neck, -0.67, neck, -0.57, layer="dark")
        else:
            c.rect(-neck - 0.04, -0.85, neck + 0.04, -0.6, layer="accent")
    elif product == "box":
        w, h, d = _u(r, 0.5, 0.65), _u(r, 0.45, 0.65), _u(r, 0.2, 0.3)
        top = 0.75 - 2 * h
        c.rect(-w - d / 2, top, w - d / 2, 0.75)
        c.polygon(
            [(w - d / 2, top), (w + d / 2, top - d), (w + d / 2, 0.75 - d), (w - d / 2, 0.75)]
        )
        lid = [(-w - d / 2, top), (-w + d / 2, top - d), (w + d / 2, top - d), (w - d / 2, top)]
        if missing:
            c.polygon(lid, layer="dark")
        else:
            c.polygon(lid, layer="accent")
    elif product == "bowl":
        w, depth = _u(r, 0.75, 0.9), _u(r, 0.45, 0.6)
        rim = _u(r, -0.25, -0.05)
        c.ellipse(-w, rim - depth, w, rim + depth)
        c.rect(-w - 0.02, rim - depth - 0.05, w + 0.02, rim - 0.01, layer="body")
        c.hole(-w - 0.2, rim - depth - 0.4, w + 0.2, rim)  # keep the lower half only
        c.ellipse(-w, rim - 0.12, w, rim + 0.12, layer="dark")
        if not missing:
            c.rect(-0.3, rim + depth - 0.08, 0.3, rim + depth + 0.1)
    elif product == "vase":
        w, neck = _u(r, 0.42, 0.55), _u(r, 0.12, 0.2)
        c.ellipse(-w, -0.25, w, 0.85)
        if missing:
            c.ellipse(-neck, -0.25, neck, -0.1, layer="dark")
        else:
            c.rect(-neck, -0.75, neck, -0.05)
            c.ellipse(-neck - 0.08, -0.82, neck + 0.08, -0.68)
    elif product == "teapot":
        w = _u(r, 0.5, 0.62)
        c.ellipse(-w, -0.3, w, 0.6)
        c.polygon([(-w + 0.1, 0.1), (-w - 0.45, -0.3), (-w - 0.35, -0.35), (-w + 0.05, -0.1)])
        c.ring(w - 0.2, -0.2, w + 0.35, 0.4, 0.12)
        if missing:
            c.ellipse(-0.28, -0.35, 0.28, -0.2, layer="dark")
        else:
            c.ellipse(-0.3, -0.45, 0.3, -0.2, layer="accent")
            c.ellipse(-0.08, -0.58, 0.08, -0.4, layer="accent")
    elif product == "lamp":
        c.ellipse(-0.4, 0.65, 0.4, 0.85)
        c.rect(-0.05, -0.2, 0.05, 0.75, layer="accent")
        c.polygon([(-0.3, -0.75), (0.3, -0.75), (0.6, -0.1), (-0.6, -0.1)])
    elif product == "ball":
        c.ellipse(-0.65, -0.55, 0.65, 0.75)
        c.ring(-0.65, -0.05, 0.65, 0.25, 0.06, layer="accent")
    elif product == "book":
        c.rect(-0.55, -0.75, 0.45, 0.75)
        c.rect(-0.7, -0.75, -0.5, 0.75, layer="accent")
    elif product == "chair":
        c.rect(-0.45, -0.85, -0.3, 0.85, layer="main")
        c.rect(-0.45, 0.05, 0.5, 0.2)
        c.rect(0.35, 0.1, 0.5, 0.85)
        c.rect(-0.45, -0.85, 0.0, -0.7)
    else:
        raise ValueError(f"unknown product '{product}'")


def _blur(mask: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    img = Image.fromarray((mask * 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0


def _defect_layer(c: _Canvas, defect: str, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour (H, W, 3), alpha (H, W)) of a crack, stain or dent on the product's main part."""
    from PIL import Image, ImageDraw

    r, side = c.rng, c.side
    main = np.asarray(c.main, np.float32) / 255.0
    ys, xs = np.nonzero(main > 0.5)
    layer = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    luminance = float(base @ np.array([0.3, 0.59, 0.11], np.float32))
    pick = int(r.integers(len(xs)))
    x, y = float(xs[pick]), float(ys[pick])
    height = float(ys.max() - ys.min() + 1)
    if defect == "crack":
        y = float(ys.min()) + _u(r, 0.05, 0.35) * height  # from near the top
        column = xs[np.abs(ys - y) < 2]
        x = float(r.choice(column)) if len(column) else x
        points = [(x, y)]
        steps = int(r.integers(5, 9))
        angle = math.pi / 2 + _u(r, -0.5, 0.5)
        for _ in range(steps):
            angle += _u(r, -0.7, 0.7)
            length = height * _u(r, 0.06, 0.11)
            x, y = x + math.cos(angle) * length, y + math.sin(angle) * length
            points.append((x, y))
        width = max(2, round(side * 0.032))
        draw.line(points, fill=255, width=width, joint="curve")
        branch = points[len(points) // 2]
        end = (branch[0] + height * _u(r, -0.2, 0.2), branch[1] + height * _u(r, 0.05, 0.2))
        draw.line([branch, end], fill=255, width=max(1, width - 1))
        colour = np.array([0.06, 0.05, 0.05] if luminance > 0.3 else [0.85, 0.85, 0.8], np.float32)
        alpha = np.asarray(layer, np.float32) / 255.0
    elif defect == "stain":
        radius = height * _u(r, 0.14, 0.2)
        for _ in range(int(r.integers(3, 7))):
            dx, dy = r.normal(0, radius * 0.6, 2)
            a, b = radius * _u(r, 0.5, 1.0), radius * _u(r, 0.4, 0.9)
            draw.ellipse([x + dx - a, y + dy - b, x + dx + a, y + dy + b], fill=255)
        dark = luminance > 0.3
        colour = np.array([0.33, 0.2, 0.07] if dark else [0.75, 0.68, 0.5], np.float32)
        alpha = _blur(np.asarray(layer, np.float32) / 255.0, side * 0.006) * _u(r, 0.8, 0.95)
        alpha *= 0.75 + 0.25 * r.random(alpha.shape).astype(np.float32)
    elif defect == "dent":
        a, b = height * _u(r, 0.15, 0.22), height * _u(r, 0.12, 0.18)
        draw.ellipse([x - a, y - b, x + a, y + b], fill=255)
        hollow = _blur(np.asarray(layer, np.float32) / 255.0, side * 0.01)
        rim = Image.new("L", (side, side), 0)
        ImageDraw.Draw(rim).arc(
            [x - a, y - b, x + a, y + b], 200, 340, fill=255, width=max(2, round(side * 0.024))
        )
        light = _blur(np.asarray(rim, np.float32) / 255.0, side * 0.004)
        shade = (base * 0.35)[None, None, :] * np.ones((side, side, 1), np.float32)
        colour = shade * (1 - light[..., None]) + np.float32(0.97) * light[..., None]
        alpha = np.clip(hollow * 0.85 + light, 0, 1)
    else:
        raise ValueError(f"unknown defect '{defect}'")
    return colour, alpha * main


#: the least share of the photo a crack, stain or dent must visibly change (more than
#: :data:`DEFECT_CONTRAST` in a channel) for the photo to show it
MIN_DEFECT_AREA = 0.003
DEFECT_CONTRAST = 0.12


def _with_defect(
    c: _Canvas, defect: str, base: np.ndarray, product_rgb: np.ndarray, body: np.ndarray
) -> np.ndarray:
    """``product_rgb`` with a crack, stain or dent drawn on it where the photo shows it: a
    defect that lands on a cap, an inside or a spot of its own colour and changes less than
    :data:`MIN_DEFECT_AREA` of the photo is drawn again elsewhere (up to 8 tries, then the
    most visible try), so that a photo labelled damaged shows its damage."""
    best, best_area = product_rgb, -1.0
    for _ in range(8):
        colour_layer, alpha = _defect_layer(c, defect, base)
        alpha = alpha[..., None]
        drawn = product_rgb * (1 - alpha) + colour_layer * alpha
        changed = (np.abs(drawn - product_rgb).max(-1) > DEFECT_CONTRAST) & (body > 0.5)
        area = float(changed.mean())
        if area > best_area:
            best, best_area = drawn, area
        if area >= MIN_DEFECT_AREA:
            break
    return best


def render_photo(
    size: int = 96,
    seed: int = 0,
    *,
    product: str | None = None,
    colour: str | None = None,
    defect: str | None = None,
    unknown_rate: float = 0.1,
) -> Photo:
    """One photo. Anything not given is drawn at random: the product (a catalogue product, or
    with probability ``unknown_rate`` an unknown object), its colour and its defect (none half
    the time; unknown objects have none)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if product is None:
        pool = UNKNOWN_OBJECTS if rng.random() < unknown_rate else PRODUCTS
        product = str(rng.choice(pool))
    if product not in PRODUCTS + UNKNOWN_OBJECTS:
        raise ValueError(f"unknown product '{product}'")
    colour = colour or str(rng.choice(COLOURS))
    if defect is None:
        if product in UNKNOWN_OBJECTS or rng.random() < 0.5:
            defect = "none"
        else:
            defect = str(rng.choice(DEFECTS[1:]))
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect '{defect}'")
    side = 2 * size
    # the scene: a wall, a table, a directional light
    wall, table = np.array(_WALLS[rng.integers(5)]), np.array(_TABLES[rng.integers(5)])
    wall = np.clip(wall + rng.normal(0, 0.04, 3), 0, 1)
    table = np.clip(table + rng.normal(0, 0.04, 3), 0, 1)
    horizon = _u(rng, 0.5, 0.75) * side
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    img = np.where((yy < horizon)[..., None], wall, table).astype(np.float32)
    half = _u(rng, 0.28, 0.4) * side
    centre = (_u(rng, 0.38, 0.62) * side, min(horizon, side - half * 0.9) - half * 0.35)
    canvas = _Canvas(side, centre, half, rng)
    _draw_product(canvas, product, defect == "missing")
    body = np.asarray(canvas.body, np.float32) / 255.0
    # a soft shadow on the table
    shadow = np.zeros((side, side), np.float32)
    ground = centre[1] + half * 0.8
    shadow[((xx - centre[0] - half * 0.25) / (half * 1.0)) ** 2
           + ((yy - ground) / (half * 0.18)) ** 2 < 1] = 1.0  # fmt: skip
    img *= 1 - 0.35 * _blur(shadow, side * 0.03)[..., None]
    # the product: its colour, an accent colour for caps and lids, dark insides, shading
    base = colour_rgb(colour, rng)
    luminance = float(base @ np.array([0.3, 0.59, 0.11], np.float32))
    # caps and lids: a darker shade of the colour, or a lighter one on dark products
    accent = colour_rgb(colour, rng) * _u(rng, 0.55, 0.8) if luminance > 0.3 else base + 0.25
    x_left = centre[0] - half
    across = np.clip((xx - x_left) / (2 * half), 0, 1)
    light_at = _u(rng, 0.25, 0.45)
    shading = 0.72 + 0.38 * np.exp(-(((across - light_at) / 0.3) ** 2))
    product_rgb = base[None, None, :] * shading[..., None]
    accent_mask = np.asarray(canvas.accent, np.float32)[..., None] / 255.0
    dark_mask = np.asarray(canvas.dark, np.float32)[..., None] / 255.0
    product_rgb = (
        product_rgb * (1 - accent_mask) + accent[None, None] * shading[..., None] * accent_mask
    )
    product_rgb = product_rgb * (1 - dark_mask) + (base * 0.25)[None, None] * dark_mask
    if defect in ("crack", "stain", "dent"):
        product_rgb = _with_defect(canvas, defect, base, product_rgb, body)
    edge = np.clip(_blur(body, side * 0.004) * 2 - 1, 0, 1)[..., None]  # anti-aliased edge
    outline = (body[..., None] - edge).clip(0, 1)
    product_rgb = product_rgb * (1 - 0.5 * outline)
    img = img * (1 - body[..., None]) + product_rgb * body[..., None]
    # light: a directional gradient and a global brightness, then sensor noise
    angle = _u(rng, 0, 2 * math.pi)
    ramp = (np.cos(angle) * (xx / side - 0.5) + np.sin(angle) * (yy / side - 0.5))[..., None]
    img = img * (_u(rng, 0.8, 1.12) + _u(rng, 0.0, 0.35) * ramp)
    img = img + rng.normal(0, _u(rng, 0.0, 0.025), img.shape)
    pixels = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    small = Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX)
    return Photo(np.asarray(small), product, colour, defect, seed)


# --- texts ----------------------------------------------------------------------------------


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _caption_templates(photo: Photo) -> list[str]:
    c, p = photo.colour, photo.product
    if not photo.known:
        return [
            f"{_a(c)} object that is not in the catalogue",
            f"an unknown {c} object",
            f"a photo of an unknown {c} object",
            f"{_a(c)} item that is not one of our products",
            f"an unknown {c} item on a table",
        ]
    if photo.defect == "none":
        return [
            f"{_a(c)} {p}",
            f"a photo of {_a(c)} {p}",
            f"{_a(c)} {p} on a table",
            f"{_a(c)} {p} in good condition",
            f"an undamaged {c} {p}",
            f"{_a(c)} {p} with no damage",
        ]
    if photo.defect == "missing":
        part = photo.part
        return [
            f"{_a(c)} {p} with a missing {part}",
            f"{_a(c)} {p} missing its {part}",
            f"{_a(c)} {p} without a {part}",
            f"a photo of {_a(c)} {p} with no {part}",
            f"{_a(c)} {p} whose {part} is missing",
        ]
    adjective = {"crack": "cracked", "stain": "stained", "dent": "dented"}[photo.defect]
    d = photo.defect
    return [
        f"{_a(c)} {p} with {_a(d)}",
        f"{_a(adjective)} {c} {p}",
        f"a photo of {_a(c)} {p} with {_a(d)}",
        f"{_a(c)} {p} that is {adjective}",
        f"{_a(c)} {p} with {_a(d)} on it",
    ]


def captions(photo: Photo, n: int = 5, rng: Rng | None = None) -> list[str]:
    """``n`` reference captions of a photo, in varied wording (in template order without
    ``rng``; a random choice with it)."""
    templates = _caption_templates(photo)
    if rng is None:
        return templates[:n]
    order = rng.permutation(len(templates))[:n]
    return [templates[i] for i in sorted(order)]


#: the questions the captioner learns to answer, in varied wording; ``question(kind)`` picks
QUESTIONS: dict[str, tuple[str, ...]] = {
    "product": ("what is this product?", "what product is shown?", "what item is in the photo?"),
    "colour": ("what colour is it?", "what colour is the item?", "which colour is this?"),
    "problem": ("what is wrong with it?", "is it damaged?", "what problem does it have?"),
}


def answers(photo: Photo) -> dict[str, str]:
    """The answer to each question kind."""
    return {"product": photo.label, "colour": photo.colour, "problem": photo.problem}


def write_dataset(
    folder: Path,
    n: int,
    *,
    size: int = 96,
    seed: int = 0,
    unknown_rate: float = 0.1,
    change: Callable[[Photo], Photo] | None = None,
    listing: str = "captions.csv",
) -> Path:
    """Write ``n`` photos to ``folder/NNNNN.png`` and ``folder/captions.csv`` (header
    ``image,caption,question,answer``: five caption rows and one row per question kind for each
    photo) and ``folder/attributes.csv`` (image,product,colour,defect). Photo ``i`` is
    ``render_photo(size, seed * 1_000_003 + i)``, passed through ``change`` when given (a
    shift of its pixels); ``listing`` names the list. Returns the list's path."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, str]] = []
    attributes: list[tuple[str, str, str, str]] = []
    for i in range(n):
        photo = render_photo(size, seed * 1_000_003 + i, unknown_rate=unknown_rate)
        photo = change(photo) if change is not None else photo
        name = f"{i:05d}.png"
        Image.fromarray(photo.pixels).save(folder / name)
        rows.extend((name, caption, "", "") for caption in captions(photo, 5, rng))
        for kind, answer in answers(photo).items():
            rows.append((name, "", str(rng.choice(QUESTIONS[kind])), answer))
        attributes.append((name, photo.product, photo.colour, photo.defect))
    target = folder / listing
    with open(target, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "caption", "question", "answer"))
        writer.writerows(rows)
    with open(folder / "attributes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "product", "colour", "defect"))
        writer.writerows(attributes)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m vlm_caption.products OUT [N=16000] [SIZE=128] [SEED=0]``: write a data set
    (the bundled captioner's is ``/tmp/capdata128 16000 128 0``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m vlm_caption.products",
        description="Write N generated product photos and their captions.csv to OUT.",
    )
    parser.add_argument("out", type=Path, help="folder for NNNNN.png, captions.csv, attributes.csv")
    parser.add_argument("n", type=int, nargs="?", default=16000, help="photos (default 16000)")
    parser.add_argument("size", type=int, nargs="?", default=128, help="side, px (default 128)")
    parser.add_argument("seed", type=int, nargs="?", default=0, help="data seed (default 0)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 16:
        parser.error("give at least one photo of at least 16 px")
    print(write_dataset(args.out, args.n, size=args.size, seed=args.seed))


if __name__ == "__main__":
    main()
