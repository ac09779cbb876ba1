"""Kill-and-resume with augmentation on: a GAN killed at a random step and resumed ends with the
same weights, bit for bit, as one that was never interrupted (DiffAugment, the latents and the
fake labels draw from torch's generator, which the core trainer seeds at every step; the EMA
generator is part of the weights); and a style network (random crops, scales and flips drawn
from numpy's generator, which the trainer seeds per sample)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from vlm_art.content import write_tiny
from vlm_art.styles import write_dataset

from vlm_core.training.api import TrainRequest
from vlm_core.training.resume_check import ResumeCheck

#: 6 steps, a checkpoint every 2: a kill at step 3..5 resumes from 2 or 4 and replays the rest
CONFIG = {"max_steps": 6, "batch_size": 4, "save_every": 2, "val_every": 6,
          "device": "cpu", "tensorboard": False}  # fmt: skip
#: a 4-channel style network with one block, trained on 32 px crops
TINY_STYLE_NETWORK = {"width": 4, "blocks": 1, "crop": 32, "val_size": 32, "style_size": 32}


@pytest.mark.parametrize("family", ["resnet", "dcgan"])
def test_generate_with_diffaugment_resumes_bitwise(
    tmp_path: Path, family: str, vlm_resume_check: Callable[..., ResumeCheck]
) -> None:
    data = write_dataset(tmp_path / "data", 8, size=16, seed=3, styles=("circles", "stripes"))
    request = TrainRequest(
        "art.generate",
        data,
        tmp_path / "runs",
        params={
            "family": family,
            "image_size": 16,
            "width": 8,
            "latent_dim": 8,
            "classifier_steps": 2,
            "diffaugment": True,
            "val_fraction": 0.25,
        },
        config=CONFIG,
    )
    check = vlm_resume_check(request)  # killed at a step drawn from the task id
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()


def test_a_style_network_with_random_crops_resumes_bitwise(
    tmp_path: Path, vlm_resume_check: Callable[..., ResumeCheck]
) -> None:
    request = TrainRequest(
        "art.style_transfer",
        write_tiny(tmp_path / "data", count=4, size=48),
        tmp_path / "runs",
        params={**TINY_STYLE_NETWORK, "style": "pointillist", "backbone": "resnet18"},
        config={**CONFIG, "batch_size": 2},
    )
    check = vlm_resume_check(request)
    assert check.resumed_from in (2, 4), check.summary()
    assert check.identical, check.summary()
