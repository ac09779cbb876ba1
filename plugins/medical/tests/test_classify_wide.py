"""medical.classify's wider training: the 'wide' augmentation and the bool `augment` that
weights trained before it record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from vlm_medical.classify_params import ClassifyTrainParams
from vlm_medical.classify_shifts import TEST_SEED
from vlm_medical.synthetic_classes import write_cases


def test_a_recorded_bool_augment_still_reads() -> None:
    assert ClassifyTrainParams(augment=True).augment == "flip"  # type: ignore[arg-type]
    assert ClassifyTrainParams(augment=False).augment == "none"  # type: ignore[arg-type]
    assert ClassifyTrainParams().augment == "flip"


def _off_affine(x: np.ndarray, plain: np.ndarray) -> float:
    """How far the sorted values of ``x`` are from an affine function of ``plain``'s: 0 for
    flips, rotations and intensity scale and shift ('flip'), not for noise, gamma, blur or
    zoom ('wide')."""
    a, b = np.sort(plain.ravel()), np.sort(x.ravel())
    fit = np.polyval(np.polyfit(a, b, 1), a)
    return float(np.abs(fit - b).max())


def test_wide_augmentation_keeps_the_cube_and_changes_the_volume(tmp_path: Path) -> None:
    from monai.utils import set_determinism
    from vlm_medical.classify import _transforms

    write_cases(tmp_path, 1, seed=TEST_SEED + 900)
    item = {"image": str(next(tmp_path.rglob("*.nii.gz"))), "label": 0}
    plain = _transforms(ClassifyTrainParams(augment="none"), train=True)(item)["image"]
    wide = _transforms(ClassifyTrainParams(augment="wide"), train=True)
    flip = _transforms(ClassifyTrainParams(augment="flip"), train=True)
    set_determinism(seed=0)
    seen = [wide(dict(item))["image"].numpy() for _ in range(8)]
    flipped = [flip(dict(item))["image"].numpy() for _ in range(8)]
    set_determinism(seed=None)
    assert all(x.shape == (1, 32, 32, 32) for x in seen)
    assert max(_off_affine(x, plain.numpy()) for x in flipped) < 1e-4
    assert max(_off_affine(x, plain.numpy()) for x in seen) > 0.05
