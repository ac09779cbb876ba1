"""The run function of '{{name}}.threshold'. Heavy imports belong here, not in plugin.py."""

import numpy as np
from vlm_core.types import Mask, Metrics


def otsu_level(gray):
    """Otsu's threshold of a float image in [0, 1], from a 256-bin histogram."""
    hist, edges = np.histogram(gray, bins=256, range=(0.0, 1.0))
    weights = hist.astype(np.float64) / max(hist.sum(), 1)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    mu = np.cumsum(weights * centres)
    between = (mu[-1] * w0 - mu) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return float(centres[int(np.argmax(between))])


def run(inputs, params, ctx):
    results = []
    for image in inputs:
        pixels = image.pixels.astype(np.float32)
        gray = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
        lo, hi = float(gray.min()), float(gray.max())
        gray = (gray - lo) / (hi - lo) if hi > lo else np.zeros_like(gray)
        level = otsu_level(gray) if params.method == "otsu" else params.level
        foreground = gray <= level if params.invert else gray > level
        mask = Mask(foreground.astype(np.uint8), class_names=("background", "foreground"))
        stats = Metrics({"threshold": level, "foreground_fraction": float(foreground.mean())})
        results.append({"mask": mask, "stats": stats})
    return results
