"""The feed-forward style network of `art.style_transfer` (Johnson et al. 2016, "Perceptual
Losses for Real-Time Style Transfer"): a convolutional encoder (two stride-2 convolutions), a
stack of residual blocks at a quarter of the resolution and an upsampling decoder, with instance
normalisation (Ulyanov et al. 2016) throughout and reflection padding at every convolution.

The decoder upsamples by nearest neighbour followed by a convolution rather than by transposed
convolutions, which leave checkerboard artefacts (Odena et al. 2016); the output goes through a
sigmoid, so it is an image in [0, 1] by construction and the training loss sees exactly what a
run writes. At the default width (16, 32, 64 channels, five blocks) the network has 0.43 M
parameters (1.7 MB in float32), a fourth of the channels of Johnson's, chosen so that a 512 px
photograph takes a fraction of a second on a 2-core CPU (README, "Speed").

Any input size works: an image is padded (repeating its edges) to a multiple of 4 and to at
least :data:`MIN_SIDE` on each axis, and the output is cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Sides are padded up to this for the network (a quarter of it is left for the 3x3 reflection
#: padding of the residual blocks).
MIN_SIDE = 16
#: The network halves the resolution twice and doubles it twice.
MULTIPLE = 4


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, padding_mode="reflect")


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 3),
            _norm(channels),
            nn.ReLU(inplace=True),
            _conv(channels, channels, 3),
            _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)  # type: ignore[no-any-return]


def architecture(width: int = 16, blocks: int = 5, kernel: int = 9) -> dict[str, Any]:
    """The card entry a network is rebuilt from: ``width`` channels at full resolution (twice
    and four times that below), ``blocks`` residual blocks, ``kernel`` the side of the first and
    last convolutions."""
    return {"name": "johnson2016", "width": width, "blocks": blocks, "kernel": kernel}


class StyleNet(nn.Module):
    """(N, 3, H, W) content images in [0, 1] to stylised images in [0, 1] of the same size, for
    H and W multiples of :data:`MULTIPLE` (:func:`stylise` pads any image)."""

    def __init__(self, arch: Mapping[str, Any]) -> None:
        super().__init__()
        if arch.get("name") != "johnson2016":
            raise ValueError(f"unknown style network architecture {arch.get('name')!r}")
        width, blocks, kernel = int(arch["width"]), int(arch["blocks"]), int(arch["kernel"])
        if width < 1 or blocks < 0 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"bad style network architecture {dict(arch)}")
        c1, c2, c3 = width, 2 * width, 4 * width
        self.arch = dict(arch)
        self.encoder = nn.Sequential(
            _conv(3, c1, kernel), _norm(c1), nn.ReLU(inplace=True),
            _conv(c1, c2, 3, 2), _norm(c2), nn.ReLU(inplace=True),
            _conv(c2, c3, 3, 2), _norm(c3), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.residual = nn.Sequential(*(_Residual(c3) for _ in range(blocks)))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(c3, c2, 3), _norm(c2),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"), _conv(c2, c1, 3), _norm(c1),
            nn.ReLU(inplace=True),
            _conv(c1, 3, kernel),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.residual(self.encoder(x))))


def build(card: Mapping[str, Any]) -> StyleNet:
    """The network a card describes (random weights): what the weights path builds."""
    return StyleNet(card["architecture"])


def stylise(net: nn.Module, content: torch.Tensor) -> torch.Tensor:
    """``content`` (N, 3, H, W) in [0, 1], any size, through ``net``: padded by repeating its
    edges to a multiple of 4 and at least :data:`MIN_SIDE`, restyled, cropped back."""
    height, width = content.shape[-2:]
    tall = max(MIN_SIDE, -(-height // MULTIPLE) * MULTIPLE)
    wide = max(MIN_SIDE, -(-width // MULTIPLE) * MULTIPLE)
    top, left = (tall - height) // 2, (wide - width) // 2
    x = content
    if (tall, wide) != (height, width):
        x = F.pad(x, (left, wide - width - left, top, tall - height - top), mode="replicate")
    out: torch.Tensor = net(x)
    return out[..., top : top + height, left : left + width]
