"""Where `vlm train` puts its weights: the file names of a training or checkpoint folder.

A training folder (``vlm train --out OUT``) holds ``OUT/checkpoints.json``, which names its best
and last checkpoints, and ``OUT/checkpoints/step-N/`` folders each with ``model.safetensors``
and its sidecar ``model.json`` (task, card, metrics, data hash, seed, versions, file hashes).
This module reads JSON only; it is the bottom of the weights package (resolving, loading and
shipping all build on it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlm_core.weights.errors import WeightsError

POINTER = "checkpoints.json"
CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"
#: the files an export folder (`vlm export`, `vlm compress --method int8`) holds beside its
#: sidecar instead of a model file
EXPORT_FILES = ("model.onnx", "model.pt2")


def trained_weights_file(folder: Path, which: str = "best", *, plugin: str = "core") -> Path | None:
    """The model file of a training, checkpoint or export folder; None when ``folder`` is
    none of these."""
    folder = Path(folder)
    if (folder / SIDECAR_FILE).is_file():
        for name in (MODEL_FILE, *EXPORT_FILES):
            if (folder / name).is_file():
                return folder / name
    pointer_path = folder / POINTER
    if not pointer_path.is_file():
        return None
    try:
        pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
        name = pointer.get(which) or pointer["last"]
    except (OSError, ValueError, KeyError, AttributeError):
        raise WeightsError(
            f"{pointer_path} is damaged", plugin=plugin, filename=POINTER, hint="re-run training"
        ) from None
    path = folder / CHECKPOINTS / str(name) / MODEL_FILE
    if not path.is_file():
        raise WeightsError(
            f"training folder {folder} names checkpoint '{name}', which is missing",
            plugin=plugin,
            filename=MODEL_FILE,
        )
    return path


def read_sidecar(weights_file: Path) -> dict[str, Any] | None:
    """The ``model.json`` beside a weights file that ``vlm train`` wrote; None for others."""
    path = Path(weights_file).parent / SIDECAR_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_sidecar(weights_file: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Apply ``change`` to the ``model.json`` beside ``weights_file`` and write it back
    atomically (what a familiarity fit or a fitted temperature adds to trained weights);
    returns that file.

    Raises:
        InputError: there is no readable ``model.json`` beside the file.
    """
    from vlm_core.errors import InputError
    from vlm_core.fileio import atomic_write_text

    path = Path(weights_file).parent / SIDECAR_FILE
    sidecar = read_sidecar(weights_file)
    if sidecar is None:
        raise InputError(f"{weights_file}: no readable {SIDECAR_FILE} beside it to record in")
    change(sidecar)
    atomic_write_text(path, json.dumps(sidecar, indent=2, default=str) + "\n")
    return path


def record_in_card(weights_file: Path, key: str, entry: Any) -> Path:
    """Set ``card[key]`` of the ``model.json`` beside ``weights_file`` to ``entry`` (a fitted
    temperature the task's run reads back), atomically; returns that file."""
    return update_sidecar(weights_file, lambda s: s.setdefault("card", {}).__setitem__(key, entry))
