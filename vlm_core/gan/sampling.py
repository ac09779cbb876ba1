"""Sampling a trained GAN: seeded latents, truncation, classes, latent interpolation.

Latents are drawn on the CPU from a seeded ``torch.Generator`` and moved to the model's
device, so a seed gives the same ``z`` on every device. Images come back in [-1, 1] (use
:func:`to_unit` for [0, 1]).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from vlm_core.errors import UsageError
from vlm_core.gan.models import GAN


def truncated_latents(
    n: int, dim: int, *, truncation: float | None = None, seed: int = 0
) -> torch.Tensor:
    """``n`` standard-normal latents of size ``dim`` on the CPU; with ``truncation`` (a
    threshold > 0), every entry whose magnitude exceeds it is drawn again until none does
    (BigGAN's truncation trick: lower thresholds trade variety for fidelity)."""
    if truncation is not None and truncation <= 0:
        raise UsageError(f"truncation must be a positive threshold or None, got {truncation}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=gen)
    if truncation is not None:
        outside = z.abs() > truncation
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
            outside = z.abs() > truncation
    return z


def class_labels(
    model: GAN, n: int, classes: int | Sequence[int] | torch.Tensor | None, *, seed: int = 0
) -> torch.Tensor | None:
    """Labels for ``n`` samples: None for an unconditional model; one class for all; a
    sequence of ``n``; or (``None``) classes drawn uniformly with ``seed``."""
    k = model.num_classes
    if k == 0:
        if classes is not None:
            raise UsageError("this GAN is unconditional; it takes no classes")
        return None
    if classes is None:
        gen = torch.Generator().manual_seed(seed + 1)
        return torch.randint(0, k, (n,), generator=gen)
    y = torch.full((n,), classes) if isinstance(classes, int) else torch.as_tensor(classes)
    if y.shape != (n,):
        raise UsageError(f"{n} samples need {n} class labels, got shape {tuple(y.shape)}")
    if y.min() < 0 or y.max() >= k:
        raise UsageError(f"class labels must lie in [0, {k}), got {y.min()}..{y.max()}")
    return y.long()


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[nn.Module]:
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generate(
    model: GAN,
    z: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Images of the latents ``z`` (and labels ``y``) from the sampling generator (the EMA
    one when there is one), in eval mode, ``batch_size`` at a time; on the model's device."""
    if getattr(model, "ema_stats_stale", False):
        model.refresh_ema_stats()
    gen = model.generator
    device = _device(gen)
    out = []
    with _eval(gen):
        for start in range(0, len(z), batch_size):
            zb = z[start : start + batch_size].to(device)
            yb = None if y is None else y[start : start + batch_size].to(device)
            out.append(gen(zb, yb).float())
    return torch.cat(out)


def sample(
    model: GAN,
    n: int,
    *,
    classes: int | Sequence[int] | torch.Tensor | None = None,
    truncation: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """``n`` images (N, C, H, W) in [-1, 1] on the model's device, reproducible by ``seed``.

    Args:
        classes: for a conditional model, one class for all, ``n`` labels, or None (random).
        truncation: resample latent entries with magnitude above this threshold (None: off).
        seed: seeds the latents (and the random classes).
    """
    z = truncated_latents(n, model.latent_dim, truncation=truncation, seed=seed)
    return generate(model, z, class_labels(model, n, classes, seed=seed), batch_size=batch_size)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the rows ``z0`` and ``z1`` at fractions ``t`` (T,):
    (T, D). Falls back to linear interpolation for (nearly) parallel vectors."""
    a, b = z0.double().flatten(), z1.double().flatten()
    cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    tt = t.double()[:, None]
    if float(omega.sin().abs()) < 1e-6:
        out = (1 - tt) * a + tt * b
    else:
        out = (torch.sin((1 - tt) * omega) * a + torch.sin(tt * omega) * b) / omega.sin()
    return out.to(z0.dtype)


def interpolate(
    model: GAN,
    z0: torch.Tensor,
    z1: torch.Tensor,
    steps: int,
    *,
    slerp_path: bool = True,
    classes: int | None = None,
) -> torch.Tensor:
    """``steps`` images along the path from latent ``z0`` to ``z1`` (each of shape (D,)):
    spherical (``slerp_path``, the right path for Gaussian latents) or linear; the first and
    last images are those of ``z0`` and ``z1`` exactly. ``classes``: the class of a
    conditional model for the whole path."""
    if steps < 2:
        raise UsageError(f"an interpolation needs at least 2 steps, got {steps}")
    if model.num_classes and classes is None:
        raise UsageError(f"this GAN is conditional on {model.num_classes} classes; name one")
    z0, z1 = z0.flatten(), z1.flatten()
    t = torch.linspace(0.0, 1.0, steps)
    zs = slerp(z0, z1, t) if slerp_path else torch.lerp(z0[None], z1[None], t[:, None])
    zs[0], zs[-1] = z0, z1
    return generate(model, zs, class_labels(model, steps, classes))


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to [0, 1] (clamped), the range the metrics and image files take."""
    return ((images + 1) / 2).clamp(0, 1)
