"""Training a GAN through the core trainer: a :class:`~vlm_core.training.TrainSetup` with its
own step (discriminator, then generator) and two Adam optimizers.

    gan = build_gan({"family": "dcgan", "image_size": 32, "channels": 3, "latent_dim": 100})
    setup = gan_setup(gan, TensorDataset(images), loss="bce")       # images in [-1, 1]
    Trainer(setup, TrainConfig(max_steps=5000, lr=2e-4, clip_grad_norm=None), out,
            callbacks=[SampleGrid(gan, out)]).fit()

The trainer keeps what it keeps for every task: precision, the NaN/inf guard, checkpoints,
resume. The step adds what a GAN needs: DiffAugment on what D sees, the R1 penalty, several
D updates per G update, and the EMA of G (``gan["g_ema"]``, updated after each G step, held in
the checkpoint's weights so that a resumed run continues it bit for bit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vlm_core.errors import UsageError
from vlm_core.gan.augment import check_policy, diff_augment
from vlm_core.gan.losses import gan_losses, r1_penalty
from vlm_core.gan.models import GAN
from vlm_core.training.config import TrainConfig
from vlm_core.training.setup import StepOptimizers, TrainSetup


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in module.buffers()]


@torch.no_grad()
def _restore(module: nn.Module, saved: list[torch.Tensor]) -> None:
    for b, s in zip(module.buffers(), saved, strict=True):
        b.copy_(s)


def gan_setup(
    model: GAN,
    data: Dataset[Any],
    *,
    loss: str = "hinge",
    r1_gamma: float = 0.0,
    diffaugment: Sequence[str] | None = None,
    ema_decay: float = 0.999,
    n_critic: int = 1,
    conditional: bool | None = None,
    betas: tuple[float, float] = (0.0, 0.99),
    d_lr_ratio: float = 1.0,
    aux_weight: float = 0.0,
    card: Mapping[str, Any] | None = None,
) -> TrainSetup:
    """A :class:`TrainSetup` that trains ``model`` on ``data`` with the core trainer.

    Args:
        model: the GAN (from :func:`~vlm_core.gan.models.build_gan`).
        data: a map-style dataset of ``(image,)`` or ``(image, label)`` items, images
            (C, H, W) in [-1, 1], labels class indices (used when ``conditional``).
        loss: ``hinge`` or ``bce`` (the non-saturating loss of the original GAN).
        r1_gamma: weight of the R1 penalty on real images (``gamma / 2 * R1``); 0: off.
        diffaugment: DiffAugment transforms applied to real and fake images before D, e.g.
            ``("color", "translation", "cutout")`` (``augment.DEFAULT_POLICY``); None: off.
        ema_decay: decay of the generator's EMA ``g_ema`` per G step (ignored without one).
        n_critic: discriminator updates per generator update; the batch is split into
            ``n_critic`` parts, one per D update.
        conditional: feed labels to G and D (default: when the model has classes).
        betas: Adam's betas for both optimizers ((0, 0.99) for hinge/SN models, (0.5, 0.999)
            DCGAN's); the learning rate is the trainer's ``lr`` with its schedule.
        d_lr_ratio: D's learning rate over G's (the two time-scale update rule of Heusel et
            al. 2017, e.g. 4 with ``lr`` 1e-4: D at 4e-4, G at 1e-4).
        aux_weight: weight of the auxiliary classification loss (AC-GAN, Odena et al. 2017) for
            a model built with ``aux_classes``: D's class head learns the labels of real
            images (cross-entropy), and G is pushed to make it read each fake as the class it
            was asked for. It adds to the projection term and sharpens the classes; 0: off.
        card: extra fields for the checkpoint's card (``architecture`` is always written).
    """
    d_loss_fn, g_loss_fn = gan_losses(loss)
    policy = check_policy(diffaugment) if diffaugment is not None else None
    cond = model.num_classes > 0 if conditional is None else conditional
    if cond and model.num_classes == 0:
        raise UsageError("conditional training needs a GAN built with num_classes > 0")
    if n_critic < 1:
        raise UsageError(f"n_critic must be at least 1, got {n_critic}")
    if aux_weight < 0:
        raise UsageError(f"aux_weight must not be negative, got {aux_weight}")
    if aux_weight > 0 and not (cond and model.arch.aux_classes):
        raise UsageError(
            "aux_weight > 0 needs conditional training and a GAN built with aux_classes=True"
        )
    if d_lr_ratio <= 0:
        raise UsageError(f"d_lr_ratio must be positive, got {d_lr_ratio}")
    if not 0.0 <= ema_decay < 1.0:
        raise UsageError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    latent = model.latent_dim

    def augment(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, policy) if policy else x

    def train_step(m: Any, batch: Any, opt: StepOptimizers) -> dict[str, torch.Tensor]:
        real_all: torch.Tensor = batch[0]
        labels_all: torch.Tensor | None = batch[1] if cond else None
        g, d = m["g"], m["d"]
        n = len(real_all)
        device = real_all.device

        def fake_labels(k: int) -> torch.Tensor | None:
            return torch.randint(0, model.num_classes, (k,), device=device) if cond else None

        loss_d = torch.zeros((), device=device)
        penalty = torch.zeros((), device=device)
        aux_d = aux_g = torch.zeros((), device=device)
        d_buffers = _snapshot(model["d"])
        for real, labels in zip(
            real_all.chunk(n_critic),
            labels_all.chunk(n_critic) if labels_all is not None else [None] * n_critic,
            strict=False,
        ):
            k = len(real)
            z, y_fake = torch.randn(k, latent, device=device), fake_labels(k)
            if r1_gamma > 0:
                real = real.detach().requires_grad_(True)
            with opt.autocast():
                with torch.no_grad():
                    fake = g(z, y_fake)
                if aux_weight > 0 and labels is not None:
                    real_logits, real_classes = d(augment(real), labels, with_classes=True)
                    aux_d = nn.functional.cross_entropy(real_classes.float(), labels)
                else:
                    real_logits = d(augment(real), labels)
                fake_logits = d(augment(fake.detach()), y_fake)
                loss_d = d_loss_fn(real_logits, fake_logits)
                total_d = loss_d + aux_weight * aux_d if aux_weight > 0 else loss_d
                if r1_gamma > 0:
                    penalty = r1_penalty(real_logits, real)
                    total_d = total_d + 0.5 * r1_gamma * penalty
            opt.backward(total_d)
            if not opt.step("d"):
                # a NaN/inf discriminator step: undo its batch-norm statistics too and skip G
                # (the trainer counts the step as skipped, or stops the run as diverged)
                _restore(model["d"], d_buffers)
                return {"loss": loss_d.detach(), "loss_d": loss_d.detach()}
            d_buffers = _snapshot(model["d"])

        z, y_fake = torch.randn(n, latent, device=device), fake_labels(n)
        with opt.autocast():
            if aux_weight > 0 and y_fake is not None:
                fake_logits, fake_classes = d(augment(g(z, y_fake)), y_fake, with_classes=True)
                aux_g = nn.functional.cross_entropy(fake_classes.float(), y_fake)
                loss_g = g_loss_fn(fake_logits)
                total_g = loss_g + aux_weight * aux_g
            else:
                loss_g = total_g = g_loss_fn(d(augment(g(z, y_fake)), y_fake))
        opt.backward(total_g)
        # the generator's step also ran D's forward: D's gradients are dropped by the next
        # step's zero_grad; D's batch-norm statistics must not learn from this pass either
        _restore(model["d"], d_buffers)
        if opt.step("g"):
            model.update_ema(ema_decay)
        values = {
            "loss": (loss_d + loss_g).detach(),
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
        }
        if r1_gamma > 0:
            values["r1"] = penalty.detach()
        if aux_weight > 0:
            values["aux_d"], values["aux_g"] = aux_d.detach(), aux_g.detach()
        return values

    def optimizers(m: Any, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {
            "g": torch.optim.Adam(m["g"].parameters(), lr=config.lr, betas=betas),
            "d": torch.optim.Adam(m["d"].parameters(), lr=config.lr * d_lr_ratio, betas=betas),
        }

    full_card = {
        "kind": "gan",
        "architecture": model.arch.to_dict(),
        "loss": loss,
        "r1_gamma": r1_gamma,
        "diffaugment": list(policy) if policy else None,
        "ema_decay": ema_decay,
        "n_critic": n_critic,
        "d_lr_ratio": d_lr_ratio,
        "aux_weight": aux_weight,
        "conditional": cond,
        "output_range": [-1.0, 1.0],
        **dict(card or {}),
    }
    return TrainSetup(
        model=model,
        train_data=data,
        train_step=train_step,
        optimizers=optimizers,
        card=full_card,
    )
