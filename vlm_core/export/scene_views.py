"""Pictures of a camera + LiDAR :class:`~vlm_core.types.Scene`: the sweep's points drawn on the
camera image coloured by their depth, and a bird's-eye view of the sweep with object footprints.

Both are plain (H, W, 3) uint8 arrays, so the exporters write them as PNG or MP4 frames and the
dashboard shows them as images. The depth colours are matplotlib's *turbo* map (near red, far
blue).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vlm_core.types import Scene

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw

#: depths (metres) the colour map spans; nearer and farther points take its end colours
DEPTH_RANGE = (2.0, 80.0)


def depth_colours(depth: np.ndarray, span: tuple[float, float] = DEPTH_RANGE) -> np.ndarray:
    """(N, 3) uint8 colours of ``depth`` (metres) on matplotlib's turbo map, reversed and
    without its darkest ends: near red, far blue."""
    from matplotlib import colormaps

    lo, hi = span
    t = np.clip((np.asarray(depth, np.float64) - lo) / (hi - lo), 0.0, 1.0)
    rgba = colormaps["turbo"](0.95 - 0.9 * t)
    return (np.asarray(rgba)[:, :3] * 255).astype(np.uint8)


def _dots(
    canvas: np.ndarray, rows: np.ndarray, cols: np.ndarray, rgb: np.ndarray, radius: int
) -> None:
    """Paint square dots of side ``2 * radius + 1`` in place; later dots cover earlier ones."""
    height, width = canvas.shape[:2]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r, c = rows + dy, cols + dx
            keep = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            canvas[r[keep], c[keep]] = rgb[keep]


def points_overlay(scene: Scene, t: int = 0, span: tuple[float, float] = DEPTH_RANGE) -> np.ndarray:
    """Frame ``t``'s image with the points that land on it, coloured by camera-frame depth.

    Far points are drawn first, so a near object's points cover the background's.
    """
    image = scene.images[t].to_rgb_uint8().copy()
    _, uvz = scene.project(t)
    order = np.argsort(-uvz[:, 2])  # far first
    uvz = uvz[order]
    radius = max(0, round(min(image.shape[:2]) / 800))  # one pixel up to 720p: the image shows
    _dots(
        image,
        uvz[:, 1].astype(np.int64),
        uvz[:, 0].astype(np.int64),
        depth_colours(uvz[:, 2], span),
        radius,
    )
    return image


@dataclass(frozen=True)
class BevMark:
    """An object's footprint on the bird's-eye view: centre ``x`` (forward) and ``y`` (left)
    in metres in the LiDAR frame, ``length`` along x and ``width`` along y (0: a dot), a label
    drawn beside it and its colour."""

    x: float
    y: float
    length: float = 0.0
    width: float = 0.0
    label: str = ""
    colour: tuple[int, int, int] = (255, 255, 255)


#: what the bird's-eye view shows by default: metres ahead (x) and to either side (y)
BEV_AHEAD = (0.0, 80.0)
BEV_SIDE = 30.0
BEV_PX_PER_M = 6.0


def bird_eye_view(
    scene: Scene,
    t: int = 0,
    marks: Sequence[BevMark] = (),
    ahead: tuple[float, float] = BEV_AHEAD,
    side: float = BEV_SIDE,
    px_per_m: float = BEV_PX_PER_M,
) -> np.ndarray:
    """A top view of frame ``t``'s sweep: forward is up, left is left, the sensor at the
    bottom centre; points are coloured by their forward distance, with a grid line every 10 m
    and the camera's field of view; ``marks`` are drawn as outlined footprints with labels.
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw

    near, far = ahead
    grid = _Grid(far, side, px_per_m)
    width = round(2 * side * px_per_m)
    height = round((far - near) * px_per_m)
    backdrop = PILImage.new("RGB", (width, height), (18, 18, 18))
    draw = ImageDraw.Draw(backdrop)  # the grid and field of view first, under the points
    for metres in range(int(np.ceil(near / 10) * 10), int(far) + 1, 10):
        row = float(grid.px(np.array(metres), np.array(0.0))[0])
        draw.line((0, row, width, row), fill=(70, 70, 70))
        draw.text((2, row + 1), f"{metres} m", fill=(150, 150, 150))
    _field_of_view(draw, scene, t, grid)
    canvas = np.array(backdrop)
    cloud = scene.clouds[t]
    x, y = cloud[:, 0].astype(np.float64), cloud[:, 1].astype(np.float64)
    inside = (x >= near) & (x < far) & (np.abs(y) < side)
    rows, cols = grid.px(x[inside], y[inside])
    order = np.argsort(cloud[inside, 2])  # low points first, so tops of objects show
    _dots(
        canvas,
        rows[order].astype(np.int64),
        cols[order].astype(np.int64),
        depth_colours(x[inside][order]),
        0,
    )
    im = PILImage.fromarray(canvas)
    draw = ImageDraw.Draw(im)
    for mark in marks:
        _mark(draw, mark, grid)
    return np.asarray(im)


@dataclass(frozen=True)
class _Grid:
    """The bird's-eye view's pixels: metres ahead ``far`` at the top row, ``side`` metres to
    the left at the first column."""

    far: float
    side: float
    px_per_m: float

    def px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of LiDAR-frame points (x forward, y left, metres)."""
        return (self.far - x) * self.px_per_m, (self.side - y) * self.px_per_m


def _field_of_view(draw: ImageDraw, scene: Scene, t: int, grid: _Grid) -> None:
    """The image's left and right edges as rays from the camera, in the LiDAR frame."""
    camera_to_lidar = np.linalg.inv(scene.lidar_to_camera)
    image = scene.images[t]
    origin = camera_to_lidar @ np.array([0.0, 0.0, 0.0, 1.0])
    for u in (0.0, float(image.width)):
        ray = np.linalg.solve(scene.projection[:, :3], np.array([u, image.height / 2, 1.0]))
        end = camera_to_lidar @ np.r_[ray / ray[2] * 100.0, 1.0]
        rows, cols = grid.px(np.array([origin[0], end[0]]), np.array([origin[1], end[1]]))
        draw.line((cols[0], rows[0], cols[1], rows[1]), fill=(110, 110, 60))


def _mark(draw: ImageDraw, mark: BevMark, grid: _Grid) -> None:
    half_l, half_w = mark.length / 2, mark.width / 2
    rows, cols = grid.px(
        np.array([mark.x + half_l, mark.x - half_l]), np.array([mark.y + half_w, mark.y - half_w])
    )
    box = (cols.min() - 1, rows.min() - 1, cols.max() + 1, rows.max() + 1)
    draw.rectangle(box, outline=mark.colour, width=2)
    if mark.label:
        draw.text((box[2] + 3, box[1]), mark.label, fill=mark.colour)
