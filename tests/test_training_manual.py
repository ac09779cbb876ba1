"""A task's own training step with several optimizers (a GAN) through the core trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from vlm_core.training import TrainConfig, Trainer, TrainSetup, find_checkpoint
from vlm_core.training.stepping import Optimizers

LATENT = 8


def gan_setup(nan_d_at: set[int] | None = None) -> TrainSetup:
    """A small GAN on 8x8 images of bright squares: two optimizers, non-saturating loss."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    images = torch.zeros(96, 1, 8, 8)
    for i in range(96):
        x, y = torch.randint(0, 5, (2,), generator=generator).tolist()
        images[i, 0, y : y + 3, x : x + 3] = 1.0
    model = nn.ModuleDict(
        {
            "g": nn.Sequential(nn.Linear(LATENT, 32), nn.ReLU(), nn.Linear(32, 64), nn.Sigmoid()),
            "d": nn.Sequential(
                nn.Flatten(), nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1)
            ),
        }
    )
    calls = [0]

    def train_step(m: Any, batch: Any, opt: Optimizers) -> dict[str, torch.Tensor]:
        real = batch[0]
        calls[0] += 1
        z = torch.randn(real.shape[0], LATENT, device=real.device)
        with opt.autocast():
            with torch.no_grad():
                fake = m["g"](z).view_as(real)
            bce = nn.functional.binary_cross_entropy_with_logits
            real_logits, fake_logits = m["d"](real), m["d"](fake)
            loss_d = bce(real_logits, torch.ones_like(real_logits)) + bce(
                fake_logits, torch.zeros_like(fake_logits)
            )
            if nan_d_at and calls[0] in nan_d_at:
                loss_d = loss_d * float("nan")
        opt.backward(loss_d)
        opt.step("d")
        with opt.autocast():
            logits = m["d"](m["g"](z).view_as(real))
            loss_g = nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        opt.backward(loss_g)
        opt.step("g")
        return {"loss": loss_d + loss_g, "loss_d": loss_d, "loss_g": loss_g}

    def optimizers(m: Any, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {
            "g": torch.optim.Adam(m["g"].parameters(), lr=config.lr, betas=(0.5, 0.999)),
            "d": torch.optim.Adam(m["d"].parameters(), lr=config.lr, betas=(0.5, 0.999)),
        }

    return TrainSetup(model=model, train_data=TensorDataset(images), train_step=train_step,
                      optimizers=optimizers)  # fmt: skip


def config(**overrides: Any) -> TrainConfig:
    base = {"batch_size": 16, "lr": 2e-3, "device": "cpu", "log_every": 1, "tensorboard": False,
            "schedule": "constant"}  # fmt: skip
    return TrainConfig.model_validate({**base, **overrides})


def test_a_gan_trains_with_two_optimizers_and_logs_both_losses(tmp_path: Path) -> None:
    events: list[Any] = []
    result = Trainer(gan_setup(), config(max_steps=30), tmp_path / "out",
                     callbacks=[events.append]).fit()  # fmt: skip
    assert result.status == "completed" and result.step == 30
    logged = [e.values for e in events if e.kind == "log"]
    assert {"train_loss", "train_loss_d", "train_loss_g", "lr", "grad_norm"} <= set(logged[-1])
    last = find_checkpoint(tmp_path / "out")
    assert last is not None
    state = last.train_state()
    assert set(state["optimizer"]) == {"g", "d"} and set(state["scheduler"]) == {"g", "d"}
    assert {k.split(".")[0] for k in last.model_state()} == {"g", "d"}


def test_a_nan_discriminator_loss_is_skipped_or_stops_the_run(tmp_path: Path) -> None:
    skipped = Trainer(gan_setup(nan_d_at={5, 6}), config(max_steps=12), tmp_path / "a").fit()
    assert skipped.status == "completed" and skipped.nonfinite_skipped == 2
    weights = find_checkpoint(tmp_path / "a")
    assert weights is not None
    assert all(torch.isfinite(t).all() for t in weights.model_state().values())

    stopped = Trainer(gan_setup(nan_d_at={5}), config(max_steps=12, save_every=1, nonfinite="stop"),
                      tmp_path / "b").fit()  # fmt: skip
    assert stopped.status == "diverged"
    last = find_checkpoint(tmp_path / "b")
    assert last is not None and last.step == 4
    assert all(torch.isfinite(t).all() for t in last.model_state().values())


def test_a_gan_resumes_bitwise(tmp_path: Path) -> None:
    k = 6
    cfg = config(max_steps=2 * k, save_every=k, deterministic=True, ema_decay=0.9)
    Trainer(gan_setup(), cfg, tmp_path / "a").fit()
    holder: list[Trainer] = []

    def stop(event: Any) -> None:
        if event.kind == "log" and event.step == k:
            holder[0].request_stop()

    first = Trainer(gan_setup(), cfg, tmp_path / "b", callbacks=[stop])
    holder.append(first)
    assert first.fit().status == "stopped"
    assert Trainer(gan_setup(), cfg, tmp_path / "b", resume=True).fit().status == "completed"
    a, b = find_checkpoint(tmp_path / "a"), find_checkpoint(tmp_path / "b")
    assert a is not None and b is not None and a.step == b.step == 2 * k
    for name in ("model.safetensors", "state.safetensors"):
        ta, tb = load_file(a.path / name), load_file(b.path / name)
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[key], tb[key]) for key in ta), name


def test_a_train_step_without_optimizers_is_refused(tmp_path: Path) -> None:
    setup = gan_setup()
    setup.optimizers = None
    with pytest.raises(Exception, match="needs optimizers"):
        Trainer(setup, config(max_steps=1), tmp_path / "x").fit()
