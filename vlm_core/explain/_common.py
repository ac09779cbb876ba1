"""What the explanation methods share: eval mode with restore, and coarse map → heat map.

Maps are 2D (h, w) for images and 3D (d, h, w) for volumes; :func:`to_heat` upsamples either
to the input's grid (bilinearly or trilinearly).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlm_core.errors import UsageError


@dataclass(frozen=True, eq=False)
class Saliency:
    """One method's raw answer for one image.

    ``coarse``: (h, w) float map on the model's own grid (patches or feature cells) — (d, h, w)
    for a volume — not yet normalised; ``logits``: (num_classes,) of the same forward pass;
    ``class_index``: the class explained (Grad-CAM) or predicted (rollout); ``layers``: names
    of the hooked modules.
    """

    coarse: Tensor
    logits: Tensor
    class_index: int
    layers: tuple[str, ...]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode; restore each module's own flag afterwards, even on error.

    A model already wholly in eval mode (a cached inference model) is left as it is: walking
    ``model.eval()`` and back over every module costs milliseconds per call, as much as a
    small network's forward pass."""
    flags = [(m, m.training) for m in model.modules()]
    if not any(training for _, training in flags):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def logits_of(output: object) -> Tensor:
    """The (num_classes,) logits of a classifier's output for one image."""
    return batch_logits_of(output, 1)[0]


def batch_logits_of(output: object, batch: int) -> Tensor:
    """The (batch, num_classes) logits of a classifier's output for ``batch`` inputs."""
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        output = output[0]
    if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != batch:
        found = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise UsageError(
            f"explanations need a classifier returning ({batch}, num_classes) logits, got "
            f"{found}; create the model with its classification head (num_classes > 0)"
        )
    return output


def pick_class(logits: Tensor, class_index: int | None) -> int:
    """``class_index`` checked against the logits, or the top-1 class when None."""
    if class_index is None:
        return int(logits.argmax())
    if not 0 <= class_index < logits.shape[0]:
        raise UsageError(
            f"class_index {class_index} is outside the model's {logits.shape[0]} classes"
        )
    return class_index


def to_heat(coarse: Tensor, size: tuple[int, ...]) -> np.ndarray:
    """Upsample a coarse map to ``size`` and min-max scale it to [0, 1].

    A (h, w) map goes bilinearly to ``size`` (H, W); a (d, h, w) map of a volume goes
    trilinearly to ``size`` (D, H, W). Returns float32 of shape ``size``. A constant map (no
    location preferred over another) comes back as all zeros.
    """
    size = tuple(int(n) for n in size)
    if coarse.dim() not in (2, 3) or len(size) != coarse.dim():
        raise UsageError(
            f"a coarse map {tuple(coarse.shape)} cannot be upsampled to {size}: both must be "
            "(h, w) or both (d, h, w)"
        )
    mode = "bilinear" if coarse.dim() == 2 else "trilinear"
    up = F.interpolate(
        coarse.detach().double()[None, None], size=size, mode=mode, align_corners=False
    )[0, 0]
    low, high = up.min(), up.max()
    span = float(high - low)
    if not np.isfinite(span) or span <= 1e-12 * max(float(high.abs()), 1.0):
        return np.zeros(size, dtype=np.float32)
    heat = ((up - low) / span).clamp_(0.0, 1.0)
    return heat.to(torch.float32).cpu().numpy()


def input_size(pixels: Tensor) -> tuple[int, int]:
    """(H, W) of a (1, C, H, W) model input, checked."""
    if pixels.dim() != 4 or pixels.shape[0] != 1:
        raise UsageError(
            f"explanations take one preprocessed image (1, C, H, W), got {tuple(pixels.shape)}"
        )
    return int(pixels.shape[2]), int(pixels.shape[3])


def spatial_size(pixels: Tensor) -> tuple[int, ...]:
    """(H, W) of a (1, C, H, W) image or (D, H, W) of a (1, C, D, H, W) volume, checked."""
    if pixels.dim() not in (4, 5) or pixels.shape[0] != 1:
        raise UsageError(
            "explanations take one preprocessed image (1, C, H, W) or volume (1, C, D, H, W), "
            f"got {tuple(pixels.shape)}"
        )
    return tuple(int(n) for n in pixels.shape[2:])


def batch_spatial_size(pixels: Tensor) -> tuple[int, ...]:
    """(H, W) of a batch of images (B, C, H, W) or (D, H, W) of volumes (B, C, D, H, W),
    checked (B ≥ 1)."""
    if pixels.dim() not in (4, 5) or pixels.shape[0] < 1:
        raise UsageError(
            "explanations of a batch take preprocessed images (B, C, H, W) or volumes "
            f"(B, C, D, H, W), got {tuple(pixels.shape)}"
        )
    return tuple(int(n) for n in pixels.shape[2:])
