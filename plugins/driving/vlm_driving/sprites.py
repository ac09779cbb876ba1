"""How each driving class looks: drawing functions that fill a pixel box on a
:class:`~vlm_driving.canvas.Canvas` in a style chosen once per object (so that an object looks
the same in every frame of a video)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vlm_driving.canvas import RGB, Canvas

Box = tuple[float, float, float, float]
Style = dict[str, Any]

BODY_COLOURS: tuple[RGB, ...] = (
    (200, 30, 30),
    (30, 60, 170),
    (230, 230, 230),
    (25, 25, 28),
    (140, 140, 150),
    (200, 160, 40),
    (40, 120, 60),
    (110, 20, 40),
    (90, 110, 130),
    (230, 120, 30),
)
CLOTHES: tuple[RGB, ...] = (
    (180, 40, 40),
    (40, 70, 160),
    (60, 60, 60),
    (220, 200, 60),
    (40, 140, 90),
    (230, 230, 230),
    (120, 70, 140),
    (200, 120, 40),
    (20, 20, 20),
)
SKIN: tuple[RGB, ...] = ((240, 200, 170), (200, 150, 110), (140, 95, 60), (95, 65, 45))
DARK: RGB = (22, 22, 26)
GLASS: RGB = (70, 95, 120)


def _shade(c: RGB, k: float) -> RGB:
    return (min(255, int(c[0] * k)), min(255, int(c[1] * k)), min(255, int(c[2] * k)))


def _pick(rng: np.random.Generator, options: tuple[RGB, ...]) -> RGB:
    return options[int(rng.integers(len(options)))]


def style_for(cls: str, rng: np.random.Generator) -> Style:
    """A random look for an object of class ``cls``."""
    style: Style = {"body": _pick(rng, BODY_COLOURS), "k": float(rng.uniform(0.75, 1.15))}
    if cls == "bus":
        style["body"] = _pick(rng, ((230, 190, 30), (200, 40, 40), (40, 90, 180), (240, 240, 235)))
    elif cls == "truck":
        style["cargo"] = _pick(
            rng, ((235, 235, 235), (180, 180, 185), (200, 60, 40), (60, 90, 160))
        )
    elif cls in ("pedestrian", "motorcycle", "bicycle"):
        style.update(top=_pick(rng, CLOTHES), legs=_pick(rng, CLOTHES), skin=_pick(rng, SKIN))
        style["helmet"] = _pick(rng, ((20, 20, 20), (230, 230, 230), (200, 30, 30)))
        style["rider"] = bool(rng.random() < 0.6)
    elif cls == "traffic light":
        style["state"] = int(rng.integers(3))  # 0 red, 1 amber, 2 green
        style["horizontal"] = bool(rng.random() < 0.15)
    elif cls == "traffic sign":
        style["shape"] = str(rng.choice(["circle", "triangle", "octagon", "square", "diamond"]))
    return style


def car(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    body = _shade(s["body"], s["k"])
    cv.rect((x1 + 0.06 * w, y2 - 0.14 * h, x1 + 0.26 * w, y2), DARK)  # wheels
    cv.rect((x2 - 0.26 * w, y2 - 0.14 * h, x2 - 0.06 * w, y2), DARK)
    roof = y1 + 0.02 * h
    cv.polygon(
        [
            (x1 + 0.18 * w, roof),
            (x2 - 0.18 * w, roof),
            (x2 - 0.06 * w, y1 + 0.45 * h),
            (x1 + 0.06 * w, y1 + 0.45 * h),
        ],
        _shade(body, 0.9),
    )
    cv.polygon(
        [
            (x1 + 0.23 * w, roof + 0.07 * h),
            (x2 - 0.23 * w, roof + 0.07 * h),
            (x2 - 0.13 * w, y1 + 0.41 * h),
            (x1 + 0.13 * w, y1 + 0.41 * h),
        ],
        GLASS,
    )
    cv.rect((x1, y1 + 0.42 * h, x2, y2 - 0.1 * h), body)
    lamp = (250, 250, 215) if front else (230, 20, 20)
    ly = y1 + 0.52 * h
    cv.rect((x1 + 0.05 * w, ly, x1 + 0.2 * w, ly + 0.1 * h), lamp, emissive=True)
    cv.rect((x2 - 0.2 * w, ly, x2 - 0.05 * w, ly + 0.1 * h), lamp, emissive=True)
    cv.rect((x1 + 0.38 * w, y1 + 0.68 * h, x2 - 0.38 * w, y1 + 0.78 * h), (235, 235, 225))
    if front:
        cv.rect((x1 + 0.28 * w, y1 + 0.55 * h, x2 - 0.28 * w, y1 + 0.64 * h), DARK)


def truck(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    cv.rect((x1 + 0.08 * w, y2 - 0.12 * h, x1 + 0.3 * w, y2), DARK)
    cv.rect((x2 - 0.3 * w, y2 - 0.12 * h, x2 - 0.08 * w, y2), DARK)
    cv.rect((x1 + 0.04 * w, y2 - 0.2 * h, x2 - 0.04 * w, y2 - 0.1 * h), (50, 50, 55))  # chassis
    if front:  # the cab: a windscreen over a grille
        cab = _shade(s["body"], s["k"])
        cv.rect((x1, y1 + 0.3 * h, x2, y2 - 0.18 * h), cab)
        cv.rect((x1 + 0.08 * w, y1 + 0.36 * h, x2 - 0.08 * w, y1 + 0.56 * h), GLASS)
        cv.rect((x1 + 0.2 * w, y1 + 0.62 * h, x2 - 0.2 * w, y2 - 0.24 * h), DARK)
        cv.rect((x1, y1, x2, y1 + 0.3 * h), _shade(s["cargo"], 0.9))  # the box behind the cab
        for side in (x1 + 0.04 * w, x2 - 0.16 * w):
            cv.rect(
                (side, y2 - 0.32 * h, side + 0.12 * w, y2 - 0.25 * h),
                (250, 250, 215),
                emissive=True,
            )
        return
    cargo = _shade(s["cargo"], s["k"])
    cv.rect((x1, y1, x2, y2 - 0.18 * h), cargo)  # the cargo box, rear doors
    cv.line(
        [((x1 + x2) / 2, y1 + 0.04 * h), ((x1 + x2) / 2, y2 - 0.2 * h)],
        _shade(cargo, 0.6),
        max(1.0, 0.015 * w),
    )
    for fx in (0.3, 0.7):
        cv.line(
            [(x1 + fx * w, y1 + 0.35 * h), (x1 + fx * w, y1 + 0.5 * h)],
            _shade(cargo, 0.5),
            max(1.0, 0.02 * w),
        )
    cv.rect(
        (x1 + 0.03 * w, y2 - 0.26 * h, x1 + 0.13 * w, y2 - 0.2 * h), (230, 20, 20), emissive=True
    )
    cv.rect(
        (x2 - 0.13 * w, y2 - 0.26 * h, x2 - 0.03 * w, y2 - 0.2 * h), (230, 20, 20), emissive=True
    )


def bus(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    body = _shade(s["body"], s["k"])
    cv.rect((x1 + 0.1 * w, y2 - 0.08 * h, x1 + 0.28 * w, y2), DARK)
    cv.rect((x2 - 0.28 * w, y2 - 0.08 * h, x2 - 0.1 * w, y2), DARK)
    cv.rect((x1, y1, x2, y2 - 0.05 * h), body)
    cv.rect((x1 + 0.12 * w, y1 + 0.03 * h, x2 - 0.12 * w, y1 + 0.1 * h), (20, 20, 20))
    cv.rect(
        (x1 + 0.16 * w, y1 + 0.045 * h, x2 - 0.16 * w, y1 + 0.085 * h),
        (255, 160, 30),
        emissive=True,
    )  # the destination display
    top, bottom = (0.14, 0.52) if front else (0.16, 0.4)
    cv.rect((x1 + 0.06 * w, y1 + top * h, x2 - 0.06 * w, y1 + bottom * h), GLASS)
    cv.rect((x1 + 0.1 * w, y1 + 0.62 * h, x2 - 0.1 * w, y1 + 0.66 * h), _shade(body, 0.6))
    lamp = (250, 250, 215) if front else (230, 20, 20)
    for side in (x1 + 0.04 * w, x2 - 0.14 * w):
        cv.rect((side, y1 + 0.72 * h, side + 0.1 * w, y1 + 0.8 * h), lamp, emissive=True)


def _person(cv: Canvas, b: Box, s: Style, *, sitting: bool = False) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    head = 0.13 * h
    cv.ellipse((cx - head * 0.42, y1, cx + head * 0.42, y1 + head), s["skin"])
    torso_bottom = y1 + (0.62 if sitting else 0.55) * h
    cv.polygon(
        [
            (cx - 0.42 * w, y1 + head * 1.05),
            (cx + 0.42 * w, y1 + head * 1.05),
            (cx + 0.36 * w, torso_bottom),
            (cx - 0.36 * w, torso_bottom),
        ],
        s["top"],
    )
    if not sitting:
        stride = s.get("stride", 0.0)
        for side in (-1, 1):
            foot = cx + side * (0.18 + 0.12 * stride * side) * w
            cv.polygon(
                [
                    (cx + side * 0.04 * w, torso_bottom),
                    (cx + side * 0.32 * w, torso_bottom),
                    (foot + 0.1 * w, y2),
                    (foot - 0.1 * w, y2),
                ],
                s["legs"],
            )


def pedestrian(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    _person(cv, b, s)


def motorcycle(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    cv.rect((cx - 0.14 * w, y1 + 0.62 * h, cx + 0.14 * w, y2), DARK)  # the wheel, end on
    cv.rect((x1 + 0.08 * w, y1 + 0.5 * h, x2 - 0.08 * w, y1 + 0.7 * h), _shade(s["body"], s["k"]))
    cv.line([(x1, y1 + 0.38 * h), (x2, y1 + 0.38 * h)], (60, 60, 60), max(1.0, 0.05 * h))  # bars
    lamp = (250, 250, 215) if front else (230, 20, 20)
    cv.ellipse((cx - 0.12 * w, y1 + 0.52 * h, cx + 0.12 * w, y1 + 0.62 * h), lamp, emissive=True)
    _person(cv, (x1 + 0.12 * w, y1, x2 - 0.12 * w, y1 + 0.62 * h), s, sitting=True)
    cv.ellipse((cx - 0.2 * w, y1, cx + 0.2 * w, y1 + 0.12 * h), s["helmet"])


def bicycle(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    """Side on: two wheels and a frame, with a rider or parked."""
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    r = 0.22 * w
    wheel_top = y2 - 2 * r
    lw = max(1.0, 0.04 * w)
    for cx in (x1 + r, x2 - r):
        cv.ellipse((cx - r, wheel_top, cx + r, y2), (25, 25, 25))
        cv.ellipse(
            (cx - r + 2 * lw, wheel_top + 2 * lw, cx + r - 2 * lw, y2 - 2 * lw), (150, 150, 150)
        )
    frame = _shade(s["body"], s["k"])
    hub_y = y2 - r
    seat = (x1 + 0.4 * w, wheel_top - 0.1 * r)
    bar = (x2 - 0.28 * w, wheel_top - 0.2 * r)
    cv.line([(x1 + r, hub_y), seat, (x1 + 0.52 * w, hub_y), bar, (x2 - r, hub_y)], frame, lw)
    cv.line([seat, (x1 + 0.52 * w, hub_y), (x1 + r, hub_y)], frame, lw)
    if s["rider"]:
        _person(cv, (x1 + 0.25 * w, y1, x1 + 0.65 * w, wheel_top + 0.2 * r), s, sitting=True)
        cv.ellipse((x1 + 0.33 * w, y1, x1 + 0.57 * w, y1 + 0.1 * h), s["helmet"])


def traffic_light(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    x1, y1, x2, y2 = b
    horizontal = s["horizontal"]
    cv.rect(b, (28, 30, 32))
    lamps = ((235, 30, 25), (245, 170, 20), (40, 220, 90))
    for i in range(3):
        if horizontal:
            seg = (x2 - x1) / 3
            box = (
                x1 + i * seg + 0.15 * seg,
                y1 + 0.15 * (y2 - y1),
                x1 + (i + 0.85) * seg,
                y2 - 0.15 * (y2 - y1),
            )
        else:
            seg = (y2 - y1) / 3
            box = (
                x1 + 0.15 * (x2 - x1),
                y1 + i * seg + 0.12 * seg,
                x2 - 0.15 * (x2 - x1),
                y1 + (i + 0.88) * seg,
            )
        lit = i == s["state"]
        cv.ellipse(box, lamps[i] if lit else _shade(lamps[i], 0.22), emissive=lit)


def traffic_sign(cv: Canvas, b: Box, s: Style, front: bool) -> None:
    x1, y1, x2, y2 = b
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    shape = s["shape"]
    inset = 0.16
    if shape == "circle":
        cv.ellipse(b, (200, 25, 30))
        cv.ellipse(
            (x1 + inset * w, y1 + inset * h, x2 - inset * w, y2 - inset * h), (245, 245, 245)
        )
        cv.rect((cx - 0.18 * w, cy - 0.14 * h, cx + 0.18 * w, cy + 0.14 * h), (30, 30, 30))
    elif shape == "triangle":
        cv.polygon([(cx, y1), (x2, y2), (x1, y2)], (200, 25, 30))
        cv.polygon(
            [(cx, y1 + 0.3 * h), (x2 - 0.18 * w, y2 - 0.1 * h), (x1 + 0.18 * w, y2 - 0.1 * h)],
            (245, 245, 245),
        )
        cv.rect((cx - 0.04 * w, y1 + 0.5 * h, cx + 0.04 * w, y2 - 0.22 * h), (30, 30, 30))
    elif shape == "octagon":
        k = 0.29
        pts = [
            (x1 + k * w, y1),
            (x2 - k * w, y1),
            (x2, y1 + k * h),
            (x2, y2 - k * h),
            (x2 - k * w, y2),
            (x1 + k * w, y2),
            (x1, y2 - k * h),
            (x1, y1 + k * h),
        ]
        cv.polygon(pts, (195, 20, 25))
        cv.rect((x1 + 0.2 * w, cy - 0.07 * h, x2 - 0.2 * w, cy + 0.07 * h), (245, 245, 245))
    elif shape == "diamond":
        cv.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], (245, 245, 245))
        cv.polygon(
            [(cx, y1 + 0.2 * h), (x2 - 0.2 * w, cy), (cx, y2 - 0.2 * h), (x1 + 0.2 * w, cy)],
            (240, 190, 20),
        )
    else:  # a blue information or mandatory sign
        cv.rect(b, (245, 245, 245))
        cv.rect((x1 + 0.1 * w, y1 + 0.1 * h, x2 - 0.1 * w, y2 - 0.1 * h), (25, 70, 170))
        cv.polygon(
            [(cx, y1 + 0.25 * h), (x2 - 0.28 * w, cy + 0.05 * h), (x1 + 0.28 * w, cy + 0.05 * h)],
            (245, 245, 245),
        )


SPRITES: dict[str, Callable[[Canvas, Box, Style, bool], None]] = {
    "car": car,
    "truck": truck,
    "bus": bus,
    "motorcycle": motorcycle,
    "bicycle": bicycle,
    "pedestrian": pedestrian,
    "traffic light": traffic_light,
    "traffic sign": traffic_sign,
}
