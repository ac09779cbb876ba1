"""Images to tensors and back, as both style transfer methods take and give them: (1, 3, H, W)
float32 in [0, 1] with the content's longer edge at the requested size."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vlm_art.style_images import resized
from vlm_core.errors import InputError


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 to (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.asarray(rgb, np.float32) / 255).permute(2, 0, 1)[None]


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] to (H, W, 3) uint8 (rounded)."""
    return (x[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def content_tensor(item: Any, longer: int) -> torch.Tensor:
    """An input image as (1, 3, h, w) in [0, 1] with its longer edge ``longer`` pixels."""
    from vlm_core.types import Image

    if not isinstance(item, Image):
        raise InputError(f"style transfer takes images, got a {type(item).__name__}")
    return to_tensor(resized(item.to_rgb_uint8(), longer))
