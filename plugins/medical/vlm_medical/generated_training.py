"""Training through the core trainer on data generated for the occasion: what pruning's
fine-tune and distillation share (`vlm compress medical.* --method prune|distill`)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def train_on_generated(
    task: str,
    write: Callable[[Path], Path],
    described: str,
    out: Path,
    params: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> Path:
    """Train ``task`` into ``out`` with ``params`` and trainer ``settings`` on the data
    ``write(folder)`` generates into a temporary folder (removed afterwards), resuming when
    ``out`` already holds the run's checkpoints; returns the best checkpoint's model file.
    ``described`` stands for the data in the command the run records."""
    from vlm_core.training import checkpoint as ckpt
    from vlm_core.training.api import TrainRequest, train_task

    scratch = Path(tempfile.mkdtemp(prefix="vlm-generated-data-"))
    try:
        data = write(scratch / "data")
        command = ["vlm", "train", task, "--data", described, "--out", str(out)]
        command += [a for k, v in params.items() for a in ("-p", f"{k}={v}")]
        command += [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
        train_task(
            TrainRequest(
                task,
                data,
                out,
                params=dict(params),
                config=dict(settings),
                resume=ckpt.find_checkpoint(out, "last") is not None,
                command=command,
            )
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    best = ckpt.find_checkpoint(out, "best")
    assert best is not None  # the trainer saved at least its last step
    return best.model_file
