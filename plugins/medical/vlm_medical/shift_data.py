"""Data sets for `vlm eval medical.segment --shift` and for training with shifted validation
volumes: synthetic lesions drawn as in training or under a named shift
(:data:`vlm_medical.synthetic.SHIFTS`), written as a Decathlon-style folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlm_medical.shifts import SHIFTS
from vlm_medical.synthetic import write_dataset


def write_shift_set(folder: Path, shift: str, count: int, seed: int, dims: int = 3) -> Path:
    """``count`` held-out volumes (``dims=2``: images) drawn from ``seed`` under ``shift``, all
    listed as validation, so `vlm eval` measures every one of them."""
    return write_dataset(folder, count, seed=seed, dims=dims, shift=shift, split="validation")


def write_eval_set(
    folder: Path, *, shift: str, count: int, seed: int, params: Any, card: Any = None
) -> Path:
    """The writer of the task's :class:`vlm_core.tasks.EvalShifts`: volumes for 3D weights,
    2D images for 2D weights (their ``spatial_dims``)."""
    return write_shift_set(folder, shift, count, seed, dims=int(params.spatial_dims))


def write_training_set(
    folder: Path, count: int, seed: int, *, dims: int = 3, val_per_shift: int = 0,
    val_seed: int = 0, wide: bool = False, wider: float = 0.0,
) -> Path:  # fmt: skip
    """``count`` training volumes from ``seed`` (``wide``: from the wider training range of
    :func:`vlm_medical.synthetic.make_volume`; ``wider``: that share from its widest); with
    ``val_per_shift``, a validation list of that many volumes per shift of :data:`SHIFTS` from
    ``val_seed`` + the shift's index, so that the checkpoint the trainer keeps is chosen on
    shifted data too."""
    write_dataset(folder, count, seed=seed, dims=dims, wide=wide, wider=wider)
    if not val_per_shift:
        return folder
    manifest = json.loads((folder / "dataset.json").read_text())
    for index, shift in enumerate(SHIFTS):
        part = folder / f"val-{shift}"
        write_shift_set(part, shift, val_per_shift, val_seed + index, dims)
        listed = json.loads((part / "dataset.json").read_text())["validation"]
        manifest["validation"] += [
            {key: f"./{part.name}/{value[2:]}" for key, value in entry.items()} for entry in listed
        ]
    (folder / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return folder
