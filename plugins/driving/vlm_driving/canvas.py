"""A drawing surface that keeps, beside the colours, which object owns each pixel and how far
away it is: the owner map gives each object's visible box under occlusion, the depth map
drives fog, and the glow mask keeps lamps bright at night."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
RGB = tuple[int, int, int]

FAR = 1.0e4  # the depth of the sky, in metres


class Canvas:
    """Draws shapes into colour, owner (object id, 0: none), depth and glow layers at once.

    Call :meth:`owner` before drawing an object's parts: ``owner(id, z)`` marks what follows
    as object ``id`` at depth ``z``; ``owner(0, z)`` draws scenery (a pole, a building) that
    occludes objects behind it without belonging to any.
    """

    def __init__(self, width: int, height: int, background: RGB = (0, 0, 0)) -> None:
        self.width, self.height = width, height
        self.rgb = Image.new("RGB", (width, height), background)
        self.ids = Image.new("I", (width, height), 0)
        self.depth = Image.new("F", (width, height), FAR)
        self.glow = Image.new("L", (width, height), 0)
        self._draw = ImageDraw.Draw(self.rgb)
        self._ids = ImageDraw.Draw(self.ids)
        self._depth = ImageDraw.Draw(self.depth)
        self._glow = ImageDraw.Draw(self.glow)
        self._id, self._z = 0, FAR

    def owner(self, object_id: int, z: float) -> None:
        self._id, self._z = object_id, z

    def _marks(self, shape: str, xy: object, emissive: bool, **kw: object) -> None:
        getattr(self._ids, shape)(xy, fill=self._id, **kw)
        getattr(self._depth, shape)(xy, fill=self._z, **kw)
        getattr(self._glow, shape)(xy, fill=255 if emissive else 0, **kw)

    def polygon(self, points: Sequence[Point], fill: RGB, *, emissive: bool = False) -> None:
        if len(points) < 3:
            return
        pts = [(float(x), float(y)) for x, y in points]
        self._draw.polygon(pts, fill=fill)
        self._marks("polygon", pts, emissive)

    def rect(self, box: Sequence[float], fill: RGB, *, emissive: bool = False) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 - x1 < 0.5 or y2 - y1 < 0.5:
            return
        self._draw.rectangle((x1, y1, x2, y2), fill=fill)
        self._marks("rectangle", (x1, y1, x2, y2), emissive)

    def ellipse(self, box: Sequence[float], fill: RGB, *, emissive: bool = False) -> None:
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 - x1 < 0.5 or y2 - y1 < 0.5:
            return
        self._draw.ellipse((x1, y1, x2, y2), fill=fill)
        self._marks("ellipse", (x1, y1, x2, y2), emissive)

    def line(self, points: Sequence[Point], fill: RGB, width: float) -> None:
        w = max(1, round(width))
        pts = [(float(x), float(y)) for x, y in points]
        self._draw.line(pts, fill=fill, width=w)
        self._marks("line", pts, False, width=w)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rgb uint8 (H, W, 3), owner int32 (H, W), depth float32 (H, W), glow float32 in
        [0, 1] (H, W))."""
        return (
            np.asarray(self.rgb, dtype=np.uint8).copy(),
            np.asarray(self.ids, dtype=np.int32),
            np.asarray(self.depth, dtype=np.float32),
            np.asarray(self.glow, dtype=np.float32) / 255.0,
        )
