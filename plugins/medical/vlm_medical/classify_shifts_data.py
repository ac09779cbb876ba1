"""Data sets for `vlm eval medical.classify --shift` and for training with shifted validation
volumes: "lesion" / "normal" volumes drawn as in training or under a named shift
(:data:`vlm_medical.classify_shifts.SHIFTS`), in the class-folder layout the task reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm_medical.classify_shifts import SHIFTS
from vlm_medical.synthetic_classes import write_cases, write_class_dataset


def write_eval_set(folder: Path, *, shift: str, count: int, seed: int, params: Any) -> Path:
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
