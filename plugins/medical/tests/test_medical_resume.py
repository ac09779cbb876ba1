"""Kill-and-resume with augmentation on: a run killed at a random step and resumed ends with the
same weights, bit for bit, as one that was never interrupted (MONAI's random transforms keep
their own generators; the core trainer re-seeds them for every sample)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from vlm_medical import classify, networks
from vlm_medical.synthetic import write_dataset
from vlm_medical.synthetic_classes import write_class_dataset

from vlm_core.training.api import TrainRequest
from vlm_core.training.resume_check import ResumeCheck

#: 6 steps, a checkpoint every 2: a kill at step 3..5 resumes from 2 or 4 and replays the rest,
#: mid-epoch (the training splits hold several batches)
CONFIG = {"max_steps": 6, "batch_size": 2, "save_every": 2, "val_every": 6, "lr": 1e-2,
          "device": "cpu", "tensorboard": False}  # fmt: skip


@pytest.mark.parametrize("workers", [0, 2])
def test_classify_with_augmentation_resumes_bitwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
    vlm_resume_check: Callable[..., ResumeCheck],
) -> None:
    """Random flips, 90° rotations and intensity jitter (MONAI), in the main process or in
    two DataLoader workers."""
    # the real MONAI DenseNet, shrunk so that the test takes seconds; with dropout
    tiny = {"init_features": 4, "growth_rate": 4, "block_config": [1, 1]}
    monkeypatch.setitem(classify.NETWORKS, "densenet121-slim", tiny)
    data = write_class_dataset(tmp_path / "data", 5, seed=7, size=12)
    request = TrainRequest(
        "medical.classify",
        data,
        tmp_path / "runs",
        params={"network": "densenet121-slim", "size": 32, "augment": True, "dropout": 0.2},
        config={**CONFIG, "num_workers": workers},
    )
    check = vlm_resume_check(request)  # killed at a step drawn from the task id
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()


def test_segment_with_augmentation_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vlm_resume_check: Callable[..., ResumeCheck]
) -> None:
    """Random positive/negative crops, flips and intensity jitter (MONAI), 3D."""
    tiny = {**networks.DEFAULT_UNET, "channels": [4, 8], "strides": [2], "num_res_units": 0}
    monkeypatch.setattr(networks, "DEFAULT_UNET", tiny)
    data = write_dataset(tmp_path / "data", 6, seed=5, size=20)
    request = TrainRequest(
        "medical.segment",
        data,
        tmp_path / "runs",
        params={"patch": 16, "roi": 16, "samples_per_volume": 2, "val_fraction": 0.2},
        config=CONFIG,
    )
    check = vlm_resume_check(request)  # killed at a step drawn from the task id
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()
