"""Where `vlm train` puts its weights: the file names of a training or checkpoint folder.

A training folder (``vlm train --out OUT``) holds ``OUT/checkpoints.json``, which names its best
and last checkpoints, and ``OUT/checkpoints/step-N/`` folders each with ``model.safetensors``
and its sidecar ``model.json`` (task, card, metrics, data hash, seed, versions, file hashes).
This module reads JSON only; it is the bottom of the weights package (resolving, loading and
shipping all build on it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlm_core.weights.errors import WeightsError

POINTER = "checkpoints.json"
CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"


def trained_weights_file(folder: Path, which: str = "best", *, plugin: str = "core") -> Path | None:
    """The model file of a training or checkpoint folder; None when ``folder`` is neither."""
    folder = Path(folder)
    if (folder / SIDECAR_FILE).is_file() and (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
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
