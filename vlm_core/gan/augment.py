"""DiffAugment (Zhao et al. 2020): differentiable augmentation of what the discriminator sees.

Applied to real *and* generated images before D (each batch with its own random draws), it
keeps D from memorising a small data set while gradients still reach G through it. Images
are (N, C, H, W) in [-1, 1]; randomness comes from torch's global generator, which the
trainer seeds and checkpoints, so a resumed run draws the same augmentations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn import functional as F

from vlm_core.errors import UsageError


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per image."""
    return x + (torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    """Scale the deviation from the per-pixel channel mean by a factor in [0, 2)."""
    mean = x.mean(dim=1, keepdim=True)
    factor = torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) * 2
    return (x - mean) * factor + mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    """Scale the deviation from the image mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    factor = torch.rand(len(x), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5
    return (x - mean) * factor + mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (n, 1, 1), device=x.device)
    ty = torch.randint(-sw, sw + 1, (n, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the image's side at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


POLICIES: dict[str, list[Callable[[torch.Tensor], torch.Tensor]]] = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "translation": [rand_translation],
    "cutout": [rand_cutout],
}

#: The policy of the DiffAugment paper's best results on small data sets.
DEFAULT_POLICY: tuple[str, ...] = ("color", "translation", "cutout")


def check_policy(policy: Sequence[str]) -> tuple[str, ...]:
    """``policy`` as a tuple, every name known (``color``, ``translation``, ``cutout``)."""
    for name in policy:
        if name not in POLICIES:
            raise UsageError(
                f"unknown DiffAugment transform '{name}'; choose from {', '.join(POLICIES)}"
            )
    return tuple(policy)


def diff_augment(x: torch.Tensor, policy: Sequence[str] = DEFAULT_POLICY) -> torch.Tensor:
    """Apply the transforms of ``policy`` in order; differentiable with respect to ``x``."""
    for name in check_policy(policy):
        for transform in POLICIES[name]:
            x = transform(x)
    return x.contiguous()
