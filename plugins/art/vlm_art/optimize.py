"""`art.style_transfer`'s ``method=optimize`` (Gatys et al. 2016): the output's pixels start as
the content image and are optimised (Adam) so that a backbone's feature maps stay close to the
content's (content loss) while their Gram matrices approach the style image's (style loss).
The same two losses, on the same network, are what the feed-forward style networks are trained
to minimise (:mod:`vlm_art.train_transfer`).

Both losses are relative (divided by the target's squared norm) so that the weights mean the
same at every level and for random and pretrained backbones alike.

An image whose shorter side is under the backbone's stride (32 px for VGG, whose last pooling
would leave nothing) is padded up to it, the content by repeating its edge and the style by
tiling it (which keeps its Gram statistics), and the output is cropped back to the content.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vlm_art import style_images
from vlm_art.params import TransferParams
from vlm_art.style_images import Style
from vlm_art.tensors import content_tensor, to_pixels, to_tensor
from vlm_core.backbones import create_backbone
from vlm_core.tasks import RunContext
from vlm_core.types import Image
from vlm_core.weights import requested

CONTENT_LEVEL = 2  # the feature level whose maps define content (stride 4 on VGG)


def pad_edges(x: torch.Tensor, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(N, C, H, W) padded by repeating its edges, centred, to at least ``side`` on each axis;
    and the (top, left) offset of the original in the result."""
    h, w = x.shape[-2:]
    dh, dw = max(0, side - h), max(0, side - w)
    if not dh and not dw:
        return x, (0, 0)
    top, left = dh // 2, dw // 2
    return F.pad(x, (left, dw - left, top, dh - top), mode="replicate"), (top, left)


def tile_to(x: torch.Tensor, side: int) -> torch.Tensor:
    """(N, C, H, W) repeated along an axis shorter than ``side`` and cut to ``side`` there."""
    h, w = x.shape[-2:]
    reps_h, reps_w = -(-side // h) if h < side else 1, -(-side // w) if w < side else 1
    return x.repeat(1, 1, reps_h, reps_w)[..., : max(h, side), : max(w, side)]


def gram(f: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) feature maps to (N, C, C) Gram matrices divided by H * W."""
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def content_loss(feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) relative content loss of each image: the squared distance of its feature maps at
    :data:`CONTENT_LEVEL` from the content's, over the content's squared norm."""
    dims = tuple(range(1, feature.dim()))
    return (feature - target).pow(2).sum(dims) / target.pow(2).sum(dims).clamp_min(1e-12)


def style_loss(features: Sequence[torch.Tensor], grams: Sequence[torch.Tensor]) -> torch.Tensor:
    """(N,) relative style loss of each image: per level, the squared distance of its Gram
    matrix from the style's (``grams``, (1, C, C) each) over the style's squared norm, averaged
    over the levels."""
    per_level = [
        (gram(f) - g).pow(2).sum((1, 2)) / g.pow(2).sum((1, 2)).clamp_min(1e-12)
        for f, g in zip(features, grams, strict=True)
    ]
    return torch.stack(per_level).mean(0)


class StyleTransfer:
    """A feature extractor for style transfer: a timm backbone (``features_only``), random
    weights seeded by ``seed`` unless ``weights`` names pretrained ones."""

    def __init__(self, backbone: str, weights: str = "", *, seed: int = 0, device: str = "cpu"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.backbone = create_backbone(backbone, weights or None, features_only=True,
                                            plugin="art")  # fmt: skip
        self.model = self.backbone.model.to(device).eval().requires_grad_(False)
        pre = self.backbone.preprocessing
        self.mean = torch.tensor(pre.mean, device=device)[None, :, None, None]
        self.std = torch.tensor(pre.std, device=device)[None, :, None, None]
        self.device = device
        self.name = backbone
        info = self.backbone.feature_info
        #: the shorter side the backbone needs so that its coarsest map is not empty
        self.min_side = max(info.strides) if info is not None else 32

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model((x - self.mean) / self.std))

    def to(self, device: str | torch.device) -> StyleTransfer:
        """Move the network to ``device`` (a training moves it to where its batches are)."""
        self.model.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        self.device = str(device)
        return self

    def __call__(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        *,
        steps: int,
        style_weight: float,
        content_weight: float,
        lr: float,
        on_step: Callable[[int], None] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``content`` (1, 3, H, W) and ``style`` (1, 3, h, w) in [0, 1] to the stylised
        image (1, 3, H, W) and the final losses. Sides under ``min_side`` are padded (content)
        or tiled (style) for the backbone; the result is cropped back to the content's.
        ``on_step(k)`` is called after each of the ``steps`` optimisation steps (k from 1)."""
        height, width = content.shape[-2:]
        content, (top, left) = pad_edges(content.to(self.device), self.min_side)
        style = tile_to(style.to(self.device), self.min_side)
        with torch.no_grad():
            target_c = self.features(content)[CONTENT_LEVEL]
            target_g = [gram(f) for f in self.features(style)]
        x = content.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        losses = {"content": 0.0, "style": 0.0}
        for k in range(1, steps + 1):
            feats = self.features(x)
            loss_c = content_loss(feats[CONTENT_LEVEL], target_c).sum()
            loss_s = style_loss(feats, target_g).sum()
            loss = content_weight * loss_c + style_weight * loss_s
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            losses = {"content": loss_c.item(), "style": float(loss_s.item())}
            if on_step is not None:
                on_step(k)
        return x.detach()[..., top : top + height, left : left + width], losses


def run(
    inputs: Sequence[Any], params: TransferParams, style: Style, ctx: RunContext
) -> list[dict[str, Any]]:
    """Restyle each content image after ``style`` by optimisation, reporting each step."""
    style_tensor = to_tensor(style_images.pixels(style, params.size))
    with requested("backbone_weights", params.backbone_weights):
        transfer = StyleTransfer(params.backbone, params.backbone_weights, seed=params.seed,
                                 device=ctx.device)  # fmt: skip
    if transfer.backbone.weights_sha256:
        ctx.record_weights(params.backbone, transfer.backbone.weights_sha256)
    results = []
    count = len(inputs)
    for i, item in enumerate(inputs):
        content = content_tensor(item, params.size)

        def step_done(k: int, i: int = i) -> None:  # the optimisation is the long part
            ctx.report((i + k / params.steps) / count,
                       f"image {i + 1} of {count}: step {k}/{params.steps}")  # fmt: skip

        out, _ = transfer(content, style_tensor, steps=params.steps,
                          style_weight=params.style_weight, content_weight=params.content_weight,
                          lr=params.lr, on_step=step_done)  # fmt: skip
        # each output is named for what made it: content, style and seed (of the backbone)
        name = f"{item.name or 'image'}-in-{style.name}-seed{params.seed}"
        results.append({"stylised": Image(to_pixels(out), name=name)})
    return results
