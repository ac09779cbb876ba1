"""Checkpoints on disk: atomic folders, a pointer file, verification and pruning.

An output folder looks like this::

    OUT/
      checkpoints.json                 which checkpoint is the last and which the best
      checkpoints/step-00000200/
        model.safetensors              the weights to use (the EMA weights when EMA is on)
        model.json                     the sidecar: task, card, metrics, config, versions, hashes
        state.safetensors              optimizer, scheduler, scaler, EMA, RNG, step (resume only)
      metrics.jsonl, report.json, curves.png

A checkpoint is written into a hidden temporary folder beside its final name, every file and
the folder are fsynced, and only then is the folder renamed into place and the pointer replaced
(itself written to a temporary file, fsynced and renamed). A process killed at any moment
leaves the previous checkpoint and pointer as they were; leftovers are removed on the next run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vlm_core.errors import VLMError
from vlm_core.fileio import atomic_leftovers, atomic_write_text, file_mode, sha256_file
from vlm_core.training.state import flatten, unflatten
from vlm_core.weights.trained import CHECKPOINTS, MODEL_FILE, POINTER, SIDECAR_FILE

log = logging.getLogger(__name__)

STATE_FILE = "state.safetensors"
FORMAT = "vlm-checkpoint/1"
_TMP_PREFIX = ".tmp-"


class CheckpointError(VLMError):
    """A checkpoint cannot be written or read; the message names the folder and the cause."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint folder."""

    path: Path
    sidecar: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.sidecar["step"])

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def model_state(self) -> dict[str, torch.Tensor]:
        return load_file(self.model_file)

    def train_state(self) -> dict[str, Any]:
        """The resumable state (optimizer, scheduler, RNG...) saved with the weights."""
        path = self.path / STATE_FILE
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                skeleton = json.loads((fh.metadata() or {})["vlm_state"])
            return dict(unflatten(skeleton, load_file(path)))
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise CheckpointError(f"cannot read training state {path}: {exc}") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fchmod(fh.fileno(), file_mode())  # safetensors creates files as owner-only
        os.fsync(fh.fileno())


def plain_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _write_error(folder: Path, exc: OSError | SafetensorError) -> CheckpointError:
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
    else:  # safetensors reports the OS error inside its own message
        text = str(exc)
        reason = text.split("I/O error: ", 1)[-1].split(" (os error", 1)[0]
    return CheckpointError(
        f"cannot write a checkpoint in {folder}: {reason}; the previous checkpoint is intact"
    )


def write_checkpoint(
    out: Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    sidecar: dict[str, Any],
    train_state: Mapping[str, Any] | None,
    *,
    best: bool,
    keep_last: int,
) -> Checkpoint:
    """Write checkpoint ``step`` atomically, point ``last`` (and ``best``) at it, prune.

    Raises:
        CheckpointError: the folder is read-only, the disk is full... The temporary folder is
            removed and the previous checkpoint and pointer are left untouched.
    """
    root = out / CHECKPOINTS
    name = f"step-{step:08d}"
    tmp = root / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    final = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(plain_state_dict(model_state), str(tmp / MODEL_FILE), {"format": FORMAT})
        _fsync_file(tmp / MODEL_FILE)
        files = {MODEL_FILE: sha256_file(tmp / MODEL_FILE)}
        if train_state is not None:
            skeleton, tensors = flatten(dict(train_state))
            meta = {"format": FORMAT, "vlm_state": json.dumps(skeleton)}
            save_file(tensors, str(tmp / STATE_FILE), meta)
            _fsync_file(tmp / STATE_FILE)
            files[STATE_FILE] = sha256_file(tmp / STATE_FILE)
        card = {**sidecar, "format": FORMAT, "step": step, "files": files}
        atomic_write_text(tmp / SIDECAR_FILE, json.dumps(card, indent=2, default=str) + "\n")
        _fsync_dir(tmp)
        pointer = read_pointer(out)
        if final.exists():  # a step saved by a run that died before moving the pointer
            if final.name in (pointer.get("last"), pointer.get("best")):
                raise CheckpointError(f"{final} exists and is in use; refusing to overwrite it")
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        pointer["last"] = name
        if best or not pointer.get("best"):
            pointer["best"] = name
        pointer["format"] = FORMAT
        atomic_write_text(out / POINTER, json.dumps(pointer, indent=2) + "\n")
        _fsync_dir(out)
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(root, exc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(out, keep_last)
    return Checkpoint(final, card)


def read_pointer(out: Path) -> dict[str, Any]:
    path = out / POINTER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    return data if isinstance(data, dict) else {}


def prune(out: Path, keep_last: int) -> None:
    """Remove checkpoints other than the best and the ``keep_last`` most recent, and leftovers
    of interrupted saves (a pointer file a kill left half-written included)."""
    for stale in atomic_leftovers(out / POINTER):
        stale.unlink(missing_ok=True)
    root = out / CHECKPOINTS
    if not root.is_dir():
        return
    pointer = read_pointer(out)
    last = pointer.get("last")
    keep = {last, pointer.get("best")}
    # folders newer than the pointer's last come from a run killed before it moved the pointer
    steps = sorted(
        p.name
        for p in root.iterdir()
        if p.name.startswith("step-") and (not last or p.name <= last)
    )
    keep |= set(steps[-keep_last:])
    for entry in root.iterdir():
        leftover = entry.name.startswith(_TMP_PREFIX) and not entry.name.endswith(f"-{os.getpid()}")
        if leftover or (entry.name.startswith("step-") and entry.name not in keep):
            shutil.rmtree(entry, ignore_errors=True)


def verify(path: Path) -> Checkpoint:
    """The checkpoint in folder ``path`` after checking its sidecar and file hashes."""
    sidecar_path = path / SIDECAR_FILE
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a checkpoint: {SIDECAR_FILE} is missing") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {sidecar_path}: {exc}") from None
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("files"), dict):
        raise CheckpointError(f"{sidecar_path} is not a vlm checkpoint sidecar")
    for name, expected in sidecar["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if sha256_file(file) != expected:
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} has the wrong sha256")
    return Checkpoint(path, sidecar)


def find_checkpoint(out: Path, which: str = "last") -> Checkpoint | None:
    """The ``last`` or ``best`` checkpoint of a training folder, verified; None when the folder
    holds none. When the pointer's checkpoint is damaged, the newest intact one is used."""
    pointer = read_pointer(out)
    root = out / CHECKPOINTS
    candidates: list[str] = []
    if pointer.get(which):
        candidates.append(str(pointer[which]))
    if root.is_dir():
        candidates += sorted(
            (p.name for p in root.iterdir() if p.name.startswith("step-")), reverse=True
        )
    problems = []
    for name in dict.fromkeys(candidates):
        try:
            found = verify(root / name)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("skipped damaged checkpoints: %s", "; ".join(problems))
        return found
    if problems:
        raise CheckpointError(f"no intact checkpoint in {out}: {problems[0]}")
    return None
