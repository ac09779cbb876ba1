"""Weights that ``vlm train`` wrote: a training folder or one checkpoint folder as a reference,
and shipping them inside a plugin's package.

``vlm run TASK --param weights=OUT`` works with the ``--out`` folder of ``vlm train``: the
folder's best checkpoint is used (``OUT/checkpoints.json`` names it) and its sidecar
(``model.json``: architecture, preprocessing, class names, metrics, data hash, seed,
versions) comes with it. A single checkpoint folder (``OUT/checkpoints/step-N``) works too.
Tasks load their networks from such weights through :func:`vlm_core.weights.load_model`; this
module gives the tensors and the sidecar alone. torch is imported when tensors are loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from vlm_core.familiarity.model import FAMILIARITY_FILE
from vlm_core.weights.errors import WeightsError
from vlm_core.weights.hashing import sha256_of
from vlm_core.weights.layout import (
    CHECKPOINTS,
    MODEL_FILE,
    POINTER,
    SIDECAR_FILE,
    read_sidecar,
    trained_weights_file,
)
from vlm_core.weights.load import load_state_dict
from vlm_core.weights.resolve import resolve

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINTS",
    "MODEL_FILE",
    "POINTER",
    "SHIPPED_DIR_MODE",
    "SHIPPED_FILE_MODE",
    "SIDECAR_FILE",
    "TrainedWeights",
    "load_trained",
    "portable_sidecar",
    "read_sidecar",
    "ship_trained",
    "trained_weights_file",
]

#: Modes of what ``vlm weights ship`` writes, whatever the umask: a package's data must be
#: readable by every user of the environment it is installed in.
SHIPPED_FILE_MODE = 0o644
SHIPPED_DIR_MODE = 0o755

# An absolute path (POSIX, home-relative or Windows) standing alone or after "=" (an option
# value): "/tmp/run", "init_weights=/data/x", "~/data", "C:\\data\\x". URLs are left alone.
_ABSOLUTE = re.compile(r"(?:(?<=^)|(?<=[\s=]))(?:/|~[/\\]|[A-Za-z]:[/\\])[^\s\"',;]*")


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
    state = load_state_dict(path, sha256=expected, plugin=plugin)
    sha = expected or sha256_of(path)
    return TrainedWeights(path=path, sha256=sha, state_dict=state, sidecar=sidecar)


def _portable_text(text: str) -> str:
    def name(match: re.Match[str]) -> str:
        found = match.group(0)
        pure = PureWindowsPath(found) if re.match(r"[A-Za-z]:", found) else PurePosixPath(found)
        return pure.name or "."

    return _ABSOLUTE.sub(name, text)


def portable_sidecar(value: Any) -> Any:
    """``value`` (a sidecar, or any JSON value in it) with every absolute path of the machine
    it was written on cut to its last part: ``/tmp/drv/train`` becomes ``train``,
    ``init_weights=/tmp/run/checkpoints/step-6`` becomes ``init_weights=step-6``."""
    if isinstance(value, str):
        return _portable_text(value)
    if isinstance(value, list):
        return [portable_sidecar(v) for v in value]
    if isinstance(value, dict):
        return {k: portable_sidecar(v) for k, v in value.items()}
    return value


def _publish(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by everyone (:data:`SHIPPED_FILE_MODE`)."""
    from vlm_core.fileio import atomic_write_bytes

    atomic_write_bytes(path, data)
    os.chmod(path, SHIPPED_FILE_MODE)


def ship_trained(
    source: Path,
    target: Path,
    *,
    which: str = "best",
    keep: Callable[[str], bool] | None = None,
    plugin: str = "core",
) -> tuple[Path, int]:
    """Copy trained weights into a plugin's package: ``target/model.safetensors`` (float
    tensors as float32; only the names ``keep`` accepts), the familiarity model fitted with
    them (``familiarity.safetensors``, when there is one) and ``target/model.json`` (the
    sidecar without the training machine's absolute paths, with the new file's sha256 and
    where it came from). ``source`` is a training folder (its ``which`` checkpoint: best or
    last) or a checkpoint folder. Files are written atomically with mode 0o644 and the folders
    made with 0o755, whatever the umask. Returns the model file and the number of tensors."""
    from safetensors.torch import load_file, save

    found = trained_weights_file(Path(source), which, plugin=plugin)
    if found is None:
        raise WeightsError(f"{source} is neither a training nor a checkpoint folder",
                           plugin=plugin, filename=str(source))  # fmt: skip
    state = {
        name: (tensor.float() if tensor.is_floating_point() else tensor).contiguous()
        for name, tensor in load_file(str(found)).items()
        if keep is None or keep(name)
    }
    target = Path(target).absolute()
    made = [p for p in (target, *target.parents) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    for folder in [target, *made]:
        os.chmod(folder, SHIPPED_DIR_MODE)
    model_file = target / MODEL_FILE
    _publish(model_file, save(state))
    sidecar = portable_sidecar(read_sidecar(found) or {})
    sidecar["files"] = {MODEL_FILE: sha256_of(model_file)}
    familiarity = found.parent / FAMILIARITY_FILE
    if familiarity.is_file():  # the familiarity model fitted with these weights goes with them
        _publish(target / FAMILIARITY_FILE, familiarity.read_bytes())
        sidecar["files"][FAMILIARITY_FILE] = sha256_of(target / FAMILIARITY_FILE)
    else:
        sidecar.pop("familiarity", None)
        (target / FAMILIARITY_FILE).unlink(missing_ok=True)
    sidecar["shipped_from"] = f"{found.parent.parent.parent.name}/{CHECKPOINTS}/{found.parent.name}"
    _publish(target / SIDECAR_FILE, (json.dumps(sidecar, indent=2) + "\n").encode("utf-8"))
    return model_file, len(state)
