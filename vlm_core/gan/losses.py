"""GAN losses on discriminator logits, and the R1 gradient penalty.

``d_loss(real_logits, fake_logits)`` is what the discriminator minimises, ``g_loss(fake_logits)``
what the generator minimises; both are means over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch.nn import functional as F

from vlm_core.errors import UsageError

LossName = Literal["bce", "hinge"]


def d_loss_bce(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The original GAN's discriminator loss: BCE with targets 1 (real) and 0 (fake)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss_bce(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss ``-log D(G(z))`` (BCE with target 1)."""
    return F.softplus(-fake_logits).mean()


def d_loss_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The hinge discriminator loss (SNGAN, BigGAN): ``relu(1 - D(x)) + relu(1 + D(G(z)))``."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """The hinge generator loss ``-D(G(z))``."""
    return -fake_logits.mean()


DLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GLoss = Callable[[torch.Tensor], torch.Tensor]

LOSSES: dict[str, tuple[DLoss, GLoss]] = {
    "bce": (d_loss_bce, g_loss_bce),
    "hinge": (d_loss_hinge, g_loss_hinge),
}


def gan_losses(name: str) -> tuple[DLoss, GLoss]:
    """``(d_loss, g_loss)`` by name: ``bce`` (non-saturating) or ``hinge``."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UsageError(f"unknown GAN loss '{name}'; choose one of {', '.join(LOSSES)}") from None


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mescheder et al.'s R1: the mean over the batch of ``||d D(x) / d x||^2`` on real images.

    ``real`` must require gradients and ``real_logits`` be computed from it; the result keeps
    the graph (``create_graph``) so that it can be added to the discriminator's loss, usually
    weighted by ``gamma / 2``.
    """
    if not real.requires_grad:
        raise UsageError("r1_penalty needs real images that require grad (real.requires_grad_())")
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()
