"""Held-out product photos under a named shift (:data:`vlm_caption.shifts.SHIFTS`), for
`vlm eval caption.describe --shift` and the support-case benchmark.

The shift is applied to the generator's pixels with torchvision's transforms v2 (functional):
the exposure as a brightness factor of ``2 ** stops`` (the generator renders without a gamma
curve, so its pixel values are its scene's light and a stop doubles or halves them, clipped
at white), then a Gaussian blur, then a JPEG round trip. The photos are written as PNG, so
`vlm eval` and `vlm run` read exactly the shifted pixels.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vlm_caption.products import Photo, write_dataset
from vlm_caption.shifts import (
    BLUR_SIGMA,
    EXPOSURE_STOPS,
    HELD_OUT_FILE,
    JPEG_QUALITY,
    PHOTO_SIZE,
    shift_parts,
)


def exposure_stops(photo_seed: int) -> float:
    """The exposure change of the photo rendered from ``photo_seed``: one stop darker or
    brighter, drawn from the photo's seed (so every shift with an exposure changes a photo
    the same way)."""
    rng = np.random.default_rng([photo_seed, 21])
    return EXPOSURE_STOPS if rng.random() < 0.5 else -EXPOSURE_STOPS


def shifted_pixels(pixels: np.ndarray, shift: str, photo_seed: int) -> np.ndarray:
    """``pixels`` (H, W, 3) uint8 under ``shift``: exposure, then blur, then JPEG, as far as
    the shift has them; the pixels themselves for ``"none"``."""
    parts = shift_parts(shift)
    if not parts:
        return pixels
    import torch
    from torchvision.transforms.v2 import functional as F

    image = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(2, 0, 1)
    if "exposure" in parts:
        image = F.adjust_brightness(image, 2.0 ** exposure_stops(photo_seed))
    if "blur" in parts:
        side = 2 * math.ceil(3 * BLUR_SIGMA) + 1
        image = F.gaussian_blur(image, kernel_size=[side, side], sigma=[BLUR_SIGMA, BLUR_SIGMA])
    if "jpeg" in parts:
        image = F.jpeg(image, quality=JPEG_QUALITY)
    return image.permute(1, 2, 0).contiguous().numpy()


def shifted_photo(photo: Photo, shift: str) -> Photo:
    """``photo`` with its pixels under ``shift`` (the same attributes)."""
    pixels = shifted_pixels(photo.pixels, shift, photo.seed)
    return Photo(pixels, photo.product, photo.colour, photo.defect, photo.seed)


def write_shift_set(folder: Path, shift: str, count: int, seed: int) -> Path:
    """``count`` photos of data seed ``seed`` (photo ``i`` is
    ``render_photo(PHOTO_SIZE, seed * 1_000_003 + i)``, as :func:`write_dataset` draws them)
    under ``shift``: ``NNNNN.png``, ``attributes.csv`` and :data:`HELD_OUT_FILE` (five
    reference captions and the three questions per photo). Returns the list's path."""

    def change(photo: Photo) -> Photo:
        return shifted_photo(photo, shift)

    return write_dataset(
        folder, count, size=PHOTO_SIZE, seed=seed, change=change, listing=HELD_OUT_FILE
    )


def write_eval_set(
    folder: Path, *, shift: str, count: int, seed: int, params: Any, card: Any = None
) -> Path:
    """The writer of `caption.describe`'s :class:`vlm_core.tasks.EvalShifts`. The photos are
    of the bundled captioner's training size whatever ``params`` record (the captioner squashes
    every photo to its own side, as a run does)."""
    del params
    return write_shift_set(folder, shift, count, seed)
