"""Kill-and-resume: a captioner killed at a random step and resumed ends with the same weights,
bit for bit, as one that was never interrupted (its randomness is the decoder's dropout, drawn
from torch's generator, which the core trainer seeds at every step)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vlm_caption.products import write_dataset

from vlm_core.training.api import TrainRequest
from vlm_core.training.resume_check import ResumeCheck

#: 6 steps, a checkpoint every 2: a kill at step 3..5 resumes from 2 or 4 and replays the rest
CONFIG = {"max_steps": 6, "batch_size": 4, "save_every": 2, "val_every": 6,
          "device": "cpu", "tensorboard": False}  # fmt: skip


def test_describe_with_dropout_resumes_bitwise(
    tmp_path: Path, vlm_resume_check: Callable[..., ResumeCheck]
) -> None:
    write_dataset(tmp_path / "data", 4, size=32, seed=5)
    request = TrainRequest(
        "caption.describe",
        tmp_path / "data",
        tmp_path / "runs",
        params={"image_size": 32, "width": 32, "depth": 1, "dropout": 0.3, "val_fraction": 0.25},
        config=CONFIG,
    )
    check = vlm_resume_check(request)  # killed at a step drawn from the task id
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()
