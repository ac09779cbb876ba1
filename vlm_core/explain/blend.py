"""Heat maps as colours, blended over the image they explain (numpy only)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vlm_core.errors import UsageError, did_you_mean
from vlm_core.types import Image

__all__ = ["COLORMAPS", "OUTLIER_PERCENT", "apply_colormap", "display_heat", "overlay"]


def _jet(x: np.ndarray) -> np.ndarray:
    # piecewise-linear blue → cyan → yellow → red, as MATLAB's / matplotlib's "jet"
    return np.stack([np.clip(1.5 - np.abs(4.0 * x - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)], -1)


def _hot(x: np.ndarray) -> np.ndarray:
    # black → red → yellow → white
    return np.stack([np.clip(3.0 * x - c, 0.0, 1.0) for c in (0.0, 1.0, 2.0)], -1)


def _gray(x: np.ndarray) -> np.ndarray:
    return np.repeat(x[..., None], 3, axis=-1)


#: Colour maps by name: each takes values in [0, 1] (H, W) and returns RGB in [0, 1] (H, W, 3).
COLORMAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jet": _jet,
    "hot": _hot,
    "gray": _gray,
}


#: the share of a map's largest values clipped for display (captum's ``visualize_image_attr``
#: default ``outlier_perc=2``)
OUTLIER_PERCENT = 2.0


def display_heat(heat: np.ndarray) -> np.ndarray:
    """``heat`` (in [0, 1]) for display: divided by its (100 - OUTLIER_PERCENT)th percentile and
    clipped to 1. A pixel-level map (Integrated Gradients) has a few extreme values, and scaled
    by its maximum the rest of it stays near 0 (an all-blue overlay). Unchanged when that
    percentile is 0 (the map is mostly empty and its maximum already scales it). The data
    files keep the unclipped heat."""
    if not heat.size:
        return heat
    top = float(np.percentile(heat, 100.0 - OUTLIER_PERCENT))
    if top <= 0.0:
        return heat
    return np.clip(heat / top, 0.0, 1.0).astype(np.float32)


def apply_colormap(heat: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Colour a (H, W) map of values in [0, 1] (clipped) as (H, W, 3) uint8 RGB."""
    if colormap not in COLORMAPS:
        raise UsageError(
            f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}"
            + did_you_mean(colormap, COLORMAPS)
        )
    if heat.ndim != 2:
        raise UsageError(f"a heat map must be (H, W), got shape {heat.shape}")
    x = np.clip(np.nan_to_num(heat.astype(np.float64), nan=0.0), 0.0, 1.0)
    return np.round(COLORMAPS[colormap](x) * 255.0).astype(np.uint8)


def overlay(image: Image, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> Image:
    """Blend a coloured heat map over ``image``.

    Args:
        image: The explained image; any dtype and channel count :class:`Image` allows.
        heat: (H, W) values in [0, 1], the image's height and width.
        alpha: Weight of the colours, in [0, 1]: 0 shows the image only, 1 the map only.
            Default 0.5.
        colormap: One of :data:`COLORMAPS`; default ``"jet"`` (blue = low, red = high).

    Returns:
        An RGB uint8 (H, W, 3) :class:`Image` with the input's name and source.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be in [0, 1], got {alpha}")
    if heat.shape != (image.height, image.width):
        raise UsageError(
            f"heat map {heat.shape} does not match the image's (height, width) "
            f"{(image.height, image.width)}"
        )
    colours = apply_colormap(heat, colormap).astype(np.float32)
    rgb = image.to_rgb_uint8().astype(np.float32)
    blended = np.clip(np.round((1.0 - alpha) * rgb + alpha * colours), 0, 255).astype(np.uint8)
    return Image(pixels=blended, name=image.name, source=image.source)
