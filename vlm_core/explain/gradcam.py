"""Grad-CAM (Selvaraju et al., 2017) for convolutional classifiers.

The activations A (C, h, w) of one spatial layer are weighted by the spatial mean of the
gradient of the chosen class logit with respect to them; ReLU(Σ_c w_c A_c) is the map. The
layer defaults to the model's last spatial feature stage (``layer4`` of a ResNet), found
through timm's ``feature_info``, or for other modules the last module whose output is a
(B, C, h, w) map with more than one cell.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlm_core.errors import UsageError, did_you_mean
from vlm_core.explain._common import (
    Saliency,
    eval_mode,
    input_size,
    logits_of,
    pick_class,
    to_heat,
)

__all__ = ["find_target_layer", "grad_cam"]


def _is_spatial(output: object) -> bool:
    return (
        isinstance(output, Tensor) and output.dim() == 4 and output.shape[2] * output.shape[3] > 1
    )


def find_target_layer(model: nn.Module, pixels: Tensor) -> str:
    """Name of the module Grad-CAM explains by default: the last spatial feature stage.

    For a timm model this is the last ``feature_info`` entry whose output is a (B, C, h, w)
    map with h·w > 1 (``layer4`` of a ResNet, ``stages.3`` of a ConvNeXt); for another module,
    the last module in execution order with such an output. Runs one forward pass without
    gradients; the model is left unchanged.
    """
    stages = [str(d["module"]) for d in _feature_info(model)]
    candidates = stages or [name for name, _ in model.named_modules() if name]
    modules = dict(model.named_modules())
    spatial: list[str] = []

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: object) -> None:
            if _is_spatial(output):
                spatial.append(name)

        return hook

    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        for name in candidates:
            if name in modules:
                stack.callback(modules[name].register_forward_hook(record(name)).remove)
        model(pixels)
    if not spatial:
        where = "feature stage" if stages else "layer"
        raise UsageError(
            f"{type(model).__name__} has no {where} with a spatial (B, C, h, w) output for "
            "Grad-CAM; pass target_layer, or use method='rollout' for ViT-family models"
        )
    if stages:  # the deepest stage, whatever order the hooks fired in
        return max(spatial, key=stages.index)
    return spatial[-1]


def _channels_last(model: nn.Module, layer: str, activation: Tensor) -> bool:
    """Whether a (C, h, w)-shaped ``activation`` is really (h, w, C), as in timm's Swin.

    Decided by the channel count timm's ``feature_info`` records for ``layer``; False when
    the layer is not a recorded feature stage.
    """
    for d in _feature_info(model):
        channels = d.get("num_chs")
        if d["module"] == layer and isinstance(channels, int):
            return activation.shape[0] != channels and activation.shape[-1] == channels
    return False


def _feature_info(model: nn.Module) -> list[dict[str, Any]]:
    """timm's ``feature_info`` (a list of dicts, or a ``FeatureInfo``), or [] without one."""
    info: Any = getattr(model, "feature_info", None)
    if hasattr(info, "get_dicts"):
        info = info.get_dicts()
    if not isinstance(info, list):
        return []
    return [d for d in info if isinstance(d, dict) and isinstance(d.get("module"), str)]


def run_grad_cam(
    model: nn.Module,
    pixels: Tensor,
    class_index: int | None = None,
    target_layer: str | None = None,
) -> Saliency:
    """Grad-CAM for one preprocessed image (1, C, H, W); the map on the layer's grid."""
    input_size(pixels)
    modules = dict(model.named_modules())
    if target_layer is None:
        target_layer = find_target_layer(model, pixels)
    elif target_layer not in modules or not target_layer:
        raise UsageError(
            f"no module named {target_layer!r} in {type(model).__name__}"
            + did_you_mean(target_layer, [n for n in modules if n])
        )
    seen: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: object) -> None:
        if isinstance(output, Tensor):
            seen.append(output)

    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.callback(modules[target_layer].register_forward_hook(keep).remove)
        # gradients reach the activations even when the weights are frozen
        x = pixels.detach().clone().requires_grad_(True)
        logits = logits_of(model(x))
        if not seen or not _is_spatial(seen[-1]):
            found = tuple(seen[-1].shape) if seen else "nothing"
            raise UsageError(
                f"Grad-CAM layer {target_layer!r} gave {found}, not a (1, C, h, w) map"
            )
        activation = seen[-1]
        chosen = pick_class(logits, class_index)
        (grad,) = torch.autograd.grad(logits[chosen], activation, allow_unused=True)
    if grad is None:
        raise UsageError(f"the logits do not depend on layer {target_layer!r}; pick another")
    act, grad = activation[0].detach().double(), grad[0].double()
    if _channels_last(model, target_layer, act):
        act, grad = act.permute(2, 0, 1), grad.permute(2, 0, 1)
    weights = grad.mean(dim=(1, 2))
    cam = torch.relu(torch.einsum("c,chw->hw", weights, act))
    return Saliency(cam, logits.detach(), chosen, (target_layer,))


def grad_cam(
    model: nn.Module,
    pixels: Tensor,
    *,
    class_index: int | None = None,
    target_layer: str | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Grad-CAM heat map of a convolutional classifier for one image.

    Args:
        model: A classifier returning (1, num_classes) logits; left unchanged (mode, hooks,
            parameter gradients).
        pixels: (1, C, H, W) preprocessed image on the model's device, in its dtype.
        class_index: Class whose logit is explained; default the top-1 prediction.
        target_layer: Module name (as in ``model.named_modules()``) whose output is explained;
            default :func:`find_target_layer`.
        size: (height, width) of the returned map; default the input's (H, W).

    Returns:
        (height, width) float32 in [0, 1]; larger = more evidence for the class there.
    """
    saliency = run_grad_cam(model, pixels, class_index, target_layer)
    return to_heat(saliency.coarse, size or input_size(pixels))
