"""Attention rollout (Abnar & Zuidema, 2020) for timm's ViT-family models.

Each layer's attention, fused over heads, is mixed with the identity (the residual
connection), its rows renormalised, and the layers multiplied together; the class token's row
(or the mean of the patch rows, for models without one) over the patch columns is the map.

Attention probabilities are read by switching the timm attention modules to their explicit
path (``fused_attn = False``) and hooking their ``attn_drop`` module, whose output is the
softmaxed attention (B, heads, N, N) that mixes the values. Both are restored afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vlm_core.errors import UsageError
from vlm_core.explain._common import (
    Saliency,
    eval_mode,
    input_size,
    logits_of,
    to_heat,
)

__all__ = [
    "HeadFusion",
    "attention_modules",
    "attention_rollout",
    "is_vit_family",
    "rollout_matrix",
]

log = logging.getLogger(__name__)

HeadFusion = Literal["mean", "max", "min"]


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The timm attention modules rollout can read, in model order.

    These are modules with a boolean ``fused_attn`` switch and an ``attn_drop`` submodule
    (timm's ``Attention`` and the attention of its ViT relatives: DeiT, EVA, BEiT, ...).
    """
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "fused_attn", None), bool)
        and isinstance(getattr(m, "attn_drop", None), nn.Module)
    ]


def is_vit_family(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ViT-family model that :func:`attention_rollout` explains.

    True for models with a ``patch_embed``, an integer ``num_prefix_tokens`` (class, distillation
    and register tokens) and readable attention modules, e.g. ``VisionTransformer``, DeiT, EVA.
    """
    return (
        isinstance(getattr(model, "num_prefix_tokens", None), int)
        and isinstance(getattr(model, "patch_embed", None), nn.Module)
        and bool(attention_modules(model))
    )


def rollout_matrix(
    attentions: Sequence[Tensor], head_fusion: HeadFusion = "mean", discard_ratio: float = 0.0
) -> Tensor:
    """Multiply attention through the layers.

    Args:
        attentions: Per layer, first to last, (B, heads, N, N) probabilities (rows sum to 1).
        head_fusion: How heads are combined: ``"mean"`` (the paper), ``"max"`` or ``"min"``.
        discard_ratio: Fraction in [0, 1) of each layer's lowest fused weights set to zero
            before adding the identity (the class token's attention to itself is kept).
            Default 0.

    Returns:
        (B, N, N) float64: row i says how much each input token contributed to token i at
        the last layer.
    """
    if not attentions:
        raise UsageError("attention rollout needs at least one attention layer")
    if not 0.0 <= discard_ratio < 1.0:
        raise UsageError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    fusions = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fusions:
        raise UsageError(f"head_fusion must be one of {sorted(fusions)}, got {head_fusion!r}")
    batch, _, n, _ = attentions[0].shape
    eye = torch.eye(n, dtype=torch.float64, device=attentions[0].device)
    result = eye.expand(batch, n, n)
    for attention in attentions:
        fused = fusions[head_fusion](attention.double())
        if discard_ratio > 0:
            flat = fused.reshape(batch, -1).clone()
            drop = flat.topk(int(flat.shape[-1] * discard_ratio), dim=-1, largest=False).indices
            keep_cls = flat[:, 0].clone()
            flat.scatter_(1, drop, 0.0)
            flat[:, 0] = keep_cls
            fused = flat.view(batch, n, n)
        mixed = fused + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed @ result
    return result


@contextmanager
def captured_attention(model: nn.Module) -> Iterator[list[tuple[str, Tensor]]]:
    """Record every attention module's probabilities during the forward passes in the block.

    Yields a list that fills with ``(module name, (B, heads, N, N) tensor)`` in call order.
    ``fused_attn`` flags and hooks are restored / removed on exit, even on error.
    """
    modules = attention_modules(model)
    captured: list[tuple[str, Tensor]] = []

    def recorder(name: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Tensor) -> None:
            captured.append((name, output.detach()))

        return hook

    with ExitStack() as stack:
        module: Any
        for name, module in modules:
            fused = module.fused_attn
            stack.callback(setattr, module, "fused_attn", fused)
            module.fused_attn = False
            handle = module.attn_drop.register_forward_hook(recorder(name))
            stack.callback(handle.remove)
        yield captured


def run_rollout(
    model: nn.Module,
    pixels: Tensor,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
) -> Saliency:
    """Rollout for one preprocessed image (1, 3, H, W); the map on the patch grid."""
    height, width = input_size(pixels)
    if not is_vit_family(model):
        raise UsageError(
            f"attention rollout needs a timm ViT-family model, got {type(model).__name__}; "
            "use method='gradcam' for convnets"
        )
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    patch_embed: Any = model.patch_embed
    if hasattr(patch_embed, "dynamic_feat_size"):
        grid = tuple(patch_embed.dynamic_feat_size((height, width)))
    else:
        ph, pw = patch_embed.patch_size
        grid = (height // ph, width // pw)
    tokens = prefix + grid[0] * grid[1]
    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        captured = stack.enter_context(captured_attention(model))
        logits = logits_of(model(pixels))
    used = [(name, a) for name, a in captured if a.dim() == 4 and a.shape[-2:] == (tokens, tokens)]
    if len(used) < len(captured):
        skipped = len(captured) - len(used)
        log.debug("rollout skipped %d attention maps not over %d tokens", skipped, tokens)
    if not used:
        raise UsageError(
            f"no attention over the {tokens} tokens ({prefix} prefix + {grid[0]}x{grid[1]} "
            f"patches) was seen in {type(model).__name__}; use method='gradcam'"
        )
    joint = rollout_matrix([a for _, a in used], head_fusion, discard_ratio)[0]
    if getattr(model, "cls_token", None) is not None and prefix > 0:
        row = joint[0]
    else:  # no class token: the pooled output mixes every patch token equally
        row = joint[prefix:].mean(dim=0)
    coarse = row[prefix:].reshape(grid)
    return Saliency(coarse, logits, int(logits.argmax()), tuple(dict.fromkeys(n for n, _ in used)))


def attention_rollout(
    model: nn.Module,
    pixels: Tensor,
    *,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Attention-rollout heat map of a timm ViT-family model for one image.

    Args:
        model: A timm ViT-family classifier (see :func:`is_vit_family`); left unchanged.
        pixels: (1, 3, H, W) preprocessed image on the model's device, in its dtype.
        head_fusion: ``"mean"`` (default), ``"max"`` or ``"min"`` over heads.
        discard_ratio: Fraction of the lowest attention weights dropped per layer; default 0.
        size: (height, width) of the returned map; default the input's (H, W).

    Returns:
        (height, width) float32 in [0, 1]; larger = more of the class token's final state
        flows from that patch.
    """
    saliency = run_rollout(model, pixels, head_fusion, discard_ratio)
    return to_heat(saliency.coarse, size or input_size(pixels))
