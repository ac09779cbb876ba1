"""Synthetic volumes for `medical.classify`: "lesion" (small faint blobs) versus "normal".

Every volume holds one to three large, smooth "organs" (spheres from MONAI's
``create_test_image_3d``) over a dark background, Gaussian noise, a smooth bias field and a
random gain and offset, as in :mod:`vlm_medical.synthetic`. A "lesion" volume also holds one
or two small spheres (radius 2 to 4 voxels at 32³) whose contrast is drawn between 2.5 and 6
times the noise level: the large and bright ones are easy, the small faint ones hard to tell
from the noise and from the organs' edges, so accuracy is high but not trivially perfect. The
lesions are often dimmer than the organs: a model must find small compact blobs, not bright
voxels.

The data set is written as one sub-folder per class, the layout ``vlm train
medical.classify`` reads; ``split="val"`` writes under ``val/`` so that the whole set is a
validation (held-out) set. ``shift`` draws the volumes under a named shift of
:data:`vlm_medical.classify_shifts.SHIFTS` (`vlm eval medical.classify --shift`): the same random
draws as in training, then noise at twice the largest training sigma and/or lesion radii halved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

SIZE = 32
CLASSES = ("lesion", "normal")


def make_case(
    rng: np.random.RandomState,
    lesion: bool,
    size: int = SIZE,
    shift: str = "none",
    *,
    noise: float | None = None,
    radii: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image, lesion_mask)``: float32 image and uint8 mask of shape ``(size,)*3``.

    The mask marks the lesion voxels (all zeros for a "normal" volume). ``shift`` (a name of
    :data:`~vlm_medical.classify_shifts.SHIFTS`) changes the volume after the same random draws
    as in training: "noise" adds the noise at twice the largest training sigma (the lesion's
    contrast stays the multiple of the sigma drawn for it), "small" halves the lesions' radius
    range, "both" does both. ``noise`` (the sigma of the noise added) and ``radii`` (the lesions'
    smallest and largest radius in voxels) replace what training and ``shift`` would use, for
    wider training sets (:func:`vlm_medical.classify_shifts_data.write_wide_training_set`).
    """
    from monai.data.synthetic import create_test_image_3d

    from vlm_medical.classify_shifts import NOISE, shift_settings

    settings = shift_settings(shift)
    rad_min, rad_max = max(2, size // 16), max(3, size // 8) + 1  # radii rad_min..rad_max - 1
    if settings["small"]:
        rad_min, rad_max = max(1, rad_min // 2), max(2, (rad_max - 1) // 2 + 1)
    if radii is not None:
        rad_min, rad_max = radii[0], radii[1] + 1

    organs, _ = create_test_image_3d(
        size, size, size,
        num_objs=int(rng.randint(1, 4)),
        rad_max=max(4, size * 3 // 8),
        rad_min=max(3, size // 5),
        num_seg_classes=1,
        random_state=rng,
    )  # fmt: skip
    image = 0.5 * organs  # organs at 0.25..0.5 over a background of 0
    mask = np.zeros((size,) * 3, np.uint8)
    sigma = float(rng.uniform(*NOISE))
    if lesion:
        blobs, labels = create_test_image_3d(
            size, size, size,
            num_objs=int(rng.randint(1, 3)),
            rad_max=rad_max,
            rad_min=rad_min,
            num_seg_classes=1,
            random_state=rng,
        )  # fmt: skip
        mask = (labels > 0).astype(np.uint8)
        contrast = float(rng.uniform(2.5, 6.0)) * sigma
        image = image + contrast * (blobs > 0)
    if noise is None:
        noise = 2 * NOISE[1] if settings["noisy"] else sigma
    image = image + rng.normal(0.0, noise, image.shape)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, size),) * 3, indexing="ij"))
    bias = 1.0 + 0.2 * np.tensordot(rng.uniform(-1, 1, 3), grid, axes=1)
    gain, offset = rng.uniform(50, 400), rng.uniform(-200, 200)
    return (image * bias * gain + offset).astype(np.float32), mask


def write_class_dataset(
    folder: Path,
    per_class: int,
    *,
    seed: int = 0,
    size: int = SIZE,
    split: Literal["", "val"] = "",
    masks: bool = False,
    shift: str = "none",
) -> Path:
    """Write ``per_class`` NIfTI volumes of each class under ``folder/<class>/`` (or
    ``folder/val/<class>/`` with ``split="val"``); with ``masks``, each lesion's mask goes to
    ``folder/masks/`` under the same name (outside the class folders, so training ignores it).
    Volumes alternate between the classes, all drawn from one generator seeded with ``seed``,
    under ``shift`` (see :func:`make_case`).
    """
    return write_cases(folder, 2 * per_class, seed=seed, size=size, split=split, masks=masks,
                       shift=shift)  # fmt: skip


def write_cases(
    folder: Path,
    count: int,
    *,
    seed: int = 0,
    size: int = SIZE,
    split: Literal["", "val"] = "",
    masks: bool = False,
    shift: str = "none",
) -> Path:
    """``count`` volumes as :func:`write_class_dataset` writes them, alternating "lesion" and
    "normal" (an odd count has one lesion volume more): the first ``2 n`` are exactly
    ``write_class_dataset(folder, n, ...)``'s."""
    import nibabel as nib

    rng = np.random.RandomState(seed)
    root = folder / split if split else folder
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    if masks:
        (folder / "masks").mkdir(parents=True, exist_ok=True)
    for n in range(count):
        name = CLASSES[n % len(CLASSES)]
        image, mask = make_case(rng, lesion=name == "lesion", size=size, shift=shift)
        file = f"case_{seed:04d}_{n // len(CLASSES):04d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / name / file)
        if masks and name == "lesion":
            nib.save(nib.Nifti1Image(mask, np.eye(4)), folder / "masks" / file)
    return folder
