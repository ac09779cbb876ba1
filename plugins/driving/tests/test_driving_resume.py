"""Kill-and-resume with augmentation on: a detector killed at a random step and resumed ends with
the same weights, bit for bit, as one that was never interrupted (torchvision's random
photometric distortion, zoom-out, crop and flip draw from torch's generator, which the core
trainer seeds for every sample)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from vlm_driving.scenes import write_dataset

from vlm_core.training.api import TrainRequest
from vlm_core.training.resume_check import ResumeCheck

#: 6 steps, a checkpoint every 2: a kill at step 3..5 resumes from 2 or 4 and replays the rest
CONFIG = {"max_steps": 6, "batch_size": 2, "save_every": 2, "val_every": 6,
          "device": "cpu", "tensorboard": False}  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_detect_with_augmentation_resumes_bitwise(
    tmp_path: Path, workers: int, vlm_resume_check: Callable[..., ResumeCheck]
) -> None:
    """In the main process or in two DataLoader workers."""
    data = write_dataset(tmp_path / "data", 8, (64, 64), seed=50, fmt="coco")
    request = TrainRequest(
        "driving.detect",
        data,
        tmp_path / "runs",
        params={
            "backbone": "timm:lcnet_050",
            "image_width": 64,
            "image_height": 64,
            "fpn_channels": 32,
            "head_convs": 1,
            "val_fraction": 0.25,
            "augment": True,
        },
        config={**CONFIG, "num_workers": workers},
    )
    check = vlm_resume_check(request)  # killed at a step drawn from the task id
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()
