"""Data sets for `vlm eval medical.classify --shift` and for training with shifted validation
volumes: "lesion" / "normal" volumes drawn as in training or under a named shift
(:data:`vlm_medical.classify_shifts.SHIFTS`), in the class-folder layout the task reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm_medical.classify_shifts import SHIFTS
from vlm_medical.synthetic_classes import write_cases, write_class_dataset


def write_eval_set(
    folder: Path, *, shift: str, count: int, seed: int, params: Any, card: Any = None
) -> Path:
    """The writer of the task's :class:`vlm_core.tasks.EvalShifts`: ``count`` volumes drawn
    from ``seed`` under ``shift``, alternating the classes, all under ``val/`` so that `vlm
    eval` measures every one of them (the network resizes them to the cube its weights'
    card records, so ``params`` changes nothing here)."""
    del params
    return write_cases(folder, count, seed=seed, shift=shift, split="val")


def write_training_set(
    folder: Path, per_class: int, seed: int, *, val_per_shift: int = 0, val_seed: int = 0,
    shifts: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    """``per_class`` training volumes of each class under ``folder/train/`` (from ``seed``),
    drawn under each of ``shifts`` in turn (none: the training distribution; ``seed`` + the
    index of the shift for the others); and ``val_per_shift`` validation volumes per shift of
    :data:`SHIFTS` under ``folder/val/``, from ``val_seed`` + the shift's index, so that the
    checkpoint the trainer keeps is chosen on shifted data too."""
    for index, shift in enumerate(shifts or ("none",)):
        share = per_class // len(shifts or ("none",))
        write_class_dataset(folder / "train", share, seed=seed + index, shift=shift)
    if val_per_shift:
        for index, shift in enumerate(SHIFTS):
            write_cases(folder, val_per_shift, seed=val_seed + index, shift=shift, split="val")
    return folder


def write_wide_training_set(
    folder: Path, per_class: int, seed: int, *, wide: float = 0.5, noise_max: float = 0.3,
    val_per_shift: int = 0, val_seed: int = 0,
) -> Path:  # fmt: skip
    """A wider training set under ``folder/train/``: ``per_class`` volumes of each class from
    ``seed``, a share ``wide`` of them drawn with Gaussian noise of a sigma between the smallest
    training one and ``noise_max`` (the lesion's contrast still the training multiple of the
    sigma drawn for it: faint lesions in more noise), and, independently, a share ``wide`` with
    lesion radii 1-4 voxels instead of 2-4. A second generator (``seed`` + 1) draws those
    choices, so the volumes' own draws are those of ``seed``. With ``val_per_shift``: the
    validation volumes of :func:`write_training_set` (every shift, from ``val_seed``)."""
    import nibabel as nib
    import numpy as np

    from vlm_medical.classify_shifts import NOISE
    from vlm_medical.synthetic_classes import CLASSES, make_case

    rng, choices = np.random.RandomState(seed), np.random.RandomState(seed + 1)
    for name in CLASSES:
        (folder / "train" / name).mkdir(parents=True, exist_ok=True)
    for n in range(2 * per_class):
        name = CLASSES[n % 2]
        noise = float(choices.uniform(NOISE[0], noise_max)) if choices.rand() < wide else None
        radii = (1, 4) if choices.rand() < wide else None
        image, _ = make_case(rng, lesion=name == "lesion", noise=noise, radii=radii)
        file = folder / "train" / name / f"case_{seed:04d}_{n // 2:04d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.eye(4)), file)
    if val_per_shift:
        for index, shift in enumerate(SHIFTS):
            write_cases(folder, val_per_shift, seed=val_seed + index, shift=shift, split="val")
    return folder
