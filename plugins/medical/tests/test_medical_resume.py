"""Kill-and-resume with augmentation on: a run killed at a random step and resumed ends with the
same weights, bit for bit, as one that was never interrupted (MONAI's random transforms keep
their own generators; the core trainer re-seeds them for every sample)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from vlm_medical import classify, networks
from vlm_medical.synthetic import write_dataset
from vlm_medical.synthetic_classes import write_class_dataset

from vlm_core.training.api import TrainRequest
from vlm_core.training.resume_check import check_resume

#: 6 steps, a checkpoint every 2: a kill at step 3..5 resumes from 2 or 4 and replays the rest,
#: mid-epoch (the training splits hold several batches)
CONFIG = {"max_steps": 6, "batch_size": 2, "save_every": 2, "val_every": 6, "lr": 1e-2,
          "device": "cpu", "tensorboard": False}  # fmt: skip


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Path:
    """A private VLM_HOME (the vlm pytest plugin's). (A fixture here, not a conftest.py: tests/
    imports its conftest by that module name.)"""
    return vlm_home


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors run faster on one thread than on several that wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def kill_step(task: str) -> int:
    """The step the run is killed at: drawn, but the same on every test run."""
    return random.Random(f"{task} kill").randint(3, CONFIG["max_steps"] - 1)


@pytest.mark.parametrize("workers", [0, 2])
def test_classify_with_augmentation_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
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
    check = check_resume(request, kill_at=kill_step("medical.classify"))
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()


def test_segment_with_augmentation_resumes_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
    check = check_resume(request, kill_at=kill_step("medical.segment"))
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()
