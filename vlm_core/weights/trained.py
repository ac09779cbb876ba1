"""Weights that ``vlm train`` wrote: a training folder or one checkpoint folder as a reference.

``vlm run TASK --param weights=OUT`` works with the ``--out`` folder of ``vlm train``: the
folder's best checkpoint is used (``OUT/checkpoints.json`` names it) and its sidecar
(``model.json``: architecture, preprocessing, class names, metrics, data hash, seed,
versions) comes with it. A single checkpoint folder (``OUT/checkpoints/step-N``) works too.
This module reads JSON only; torch is imported when tensors are loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlm_core.weights.errors import WeightsError

if TYPE_CHECKING:
    import torch

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


@dataclass(frozen=True)
class TrainedWeights:
    """Weights ready for ``model.load_state_dict``, with what ``vlm train`` recorded."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]
    sidecar: dict[str, Any]

    @property
    def card(self) -> dict[str, Any]:
        """Architecture, preprocessing, class names... as the task's builder wrote them."""
        return dict(self.sidecar.get("card") or {})

    @property
    def params(self) -> dict[str, Any]:
        """The task parameters the weights were trained with."""
        return dict(self.sidecar.get("params") or {})


def load_trained(ref: str, *, plugin: str = "core", task: str | None = None) -> TrainedWeights:
    """Resolve ``ref`` (a training folder, checkpoint folder or weights file, or any other
    reference) and load its tensors, checking the sha256 the sidecar recorded.

    Raises:
        WeightsError: the reference does not resolve, the file is damaged, or the sidecar says
            the weights were trained for another task than ``task``.
    """
    from vlm_core.weights.load import load_state_dict
    from vlm_core.weights.resolve import resolve

    path = resolve(ref, plugin=plugin)
    sidecar = read_sidecar(path) or {}
    expected = (sidecar.get("files") or {}).get(path.name)
    trained_for = sidecar.get("task")
    if task and trained_for and trained_for != task:
        raise WeightsError(
            f"{path} was trained for task '{trained_for}', not '{task}'",
            plugin=plugin,
            filename=path.name,
        )
    from vlm_core.weights.hashing import sha256_of

    state = load_state_dict(path, sha256=expected, plugin=plugin)
    sha = expected or sha256_of(path)
    return TrainedWeights(path=path, sha256=sha, state_dict=state, sidecar=sidecar)


def ship_trained(
    source: Path,
    target: Path,
    *,
    which: str = "best",
    keep: Callable[[str], bool] | None = None,
    plugin: str = "core",
) -> tuple[Path, int]:
    """Copy trained weights into a plugin's package: ``target/model.safetensors`` (float
    tensors as float32; only the names ``keep`` accepts) and ``target/model.json`` (the
    sidecar, with the new file's sha256 and where it came from). ``source`` is a training
    folder (its ``which`` checkpoint: best or last) or a checkpoint folder. Returns the model
    file and the number of tensors."""
    from safetensors.torch import load_file, save_file

    from vlm_core.weights.hashing import sha256_of

    found = trained_weights_file(Path(source), which, plugin=plugin)
    if found is None:
        raise WeightsError(f"{source} is neither a training nor a checkpoint folder",
                           plugin=plugin, filename=str(source))  # fmt: skip
    state = {
        name: (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
        for name, tensor in load_file(str(found)).items()
        if keep is None or keep(name)
    }
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model_file = target / MODEL_FILE
    save_file(state, str(model_file))
    sidecar = read_sidecar(found) or {}
    sidecar["files"] = {MODEL_FILE: sha256_of(model_file)}
    sidecar["shipped_from"] = f"{found.parent.parent.parent.name}/{CHECKPOINTS}/{found.parent.name}"
    (target / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")
    return model_file, len(state)
