"""One trainer for every plugin's training (see :class:`~vlm_core.training.trainer.Trainer`).

A task opts in with ``TaskSpec(train="my_plugin.train:build", capabilities={run, train, eval})``;
``build(data, params, ctx)`` returns a :class:`TrainSetup` (model, data, loss, metrics) and the
core does the rest: ``vlm train``, ``vlm eval``, ``torchrun``, checkpoints, resume, reports.

Importing this package does not import torch; the names below load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm_core.lazy import lazy_exports

if TYPE_CHECKING:
    from vlm_core.training.api import EvalResult, TrainRequest, evaluate_task, train_task
    from vlm_core.training.checkpoint import Checkpoint, CheckpointError, find_checkpoint
    from vlm_core.training.config import TrainConfig
    from vlm_core.training.loop import TrainError
    from vlm_core.training.resume_check import ResumeCheck, check_resume
    from vlm_core.training.setup import TrainSetup
    from vlm_core.training.trainer import Trainer, TrainEvent, TrainResult

_EXPORTS = {
    "EvalResult": "api",
    "TrainRequest": "api",
    "evaluate_task": "api",
    "train_task": "api",
    "Checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "find_checkpoint": "checkpoint",
    "TrainConfig": "config",
    "TrainError": "loop",
    "ResumeCheck": "resume_check",
    "check_resume": "resume_check",
    "TrainSetup": "setup",
    "TrainEvent": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
}

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "EvalResult",
    "ResumeCheck",
    "TrainConfig",
    "TrainError",
    "TrainEvent",
    "TrainRequest",
    "TrainResult",
    "TrainSetup",
    "Trainer",
    "check_resume",
    "evaluate_task",
    "find_checkpoint",
    "train_task",
]


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
