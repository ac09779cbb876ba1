"""Core or PIL images through a model's preprocessing, as one batch: shared by the CLIP
encoders and the captioner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from vlm_core.errors import UsageError
from vlm_core.types import Image


def preprocess_batch(
    images: Sequence[Any], transform: Callable[[Any], torch.Tensor], taker: str
) -> torch.Tensor:
    """``transform`` (a PIL image to a (3, H, W) tensor) of each of ``images``
    (:class:`vlm_core.types.Image` or PIL), stacked; one-line error naming the first item of
    another type and ``taker`` (what refuses it)."""
    from PIL import Image as PIL

    tensors = []
    for i, item in enumerate(images):
        if isinstance(item, Image):
            pil = PIL.fromarray(item.to_rgb_uint8())
        elif isinstance(item, PIL.Image):
            pil = item.convert("RGB")
        else:
            raise UsageError(
                f"image {i} is a {type(item).__name__}; {taker} takes vlm_core.types.Image "
                "or PIL images, or a preprocessed (N, 3, H, W) tensor"
            )
        tensors.append(transform(pil))
    return torch.stack(tensors)
