"""The "wide" training augmentation of the medical tasks (`-p augment=wide`): MONAI's random
transforms that widen what a training patch can look like, on intensities normalised to about
0..1, so a network holds up on noisier scans and smaller lesions than its data show."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def wide_augmentation(
    *,
    label: bool,
    dims: int = 3,
    zoom: tuple[float, float],
    smooth: tuple[float, float],
    smooth_prob: float,
    noise_std: float,
    noise_prob: float,
) -> list[Any]:
    """RandZoomd (``zoom``, p 0.3; the "label" key too, nearest, when ``label``),
    RandBiasFieldd (p 0.3), RandAdjustContrastd (gamma 0.7-1.5, p 0.3), RandGaussianSmoothd
    (sigma in ``smooth``) and RandGaussianNoised (sigma up to ``noise_std``) on the "image" key."""
    from monai.transforms import (
        RandAdjustContrastd,
        RandBiasFieldd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandZoomd,
    )

    linear = "trilinear" if dims == 3 else "bilinear"
    keys: Sequence[str] = ["image", "label"] if label else "image"
    mode: Any = (linear, "nearest") if label else linear
    return [
        RandZoomd(keys=keys, prob=0.3, min_zoom=zoom[0], max_zoom=zoom[1], mode=mode,
                  keep_size=True),
        RandBiasFieldd(keys="image", prob=0.3, coeff_range=(0.0, 0.3)),
        RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
        RandGaussianSmoothd(keys="image", prob=smooth_prob, sigma_x=smooth, sigma_y=smooth,
                            sigma_z=smooth),
        RandGaussianNoised(keys="image", prob=noise_prob, mean=0.0, std=noise_std),
    ]  # fmt: skip
