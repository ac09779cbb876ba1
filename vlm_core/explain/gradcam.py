"""Grad-CAM (Selvaraju et al., 2017) for convolutional classifiers, 2D and 3D.

The activations A (C, h, w) of one spatial layer are weighted by the spatial mean of the
gradient of the chosen class logit with respect to them; ReLU(Σ_c w_c A_c) is the map. The
layer defaults to the model's last spatial feature stage (``layer4`` of a ResNet), found
through timm's ``feature_info``, or for other modules the last module whose output is a
(B, C, h, w) map with more than one cell.

Volumes work the same way: a 3D convnet (MONAI's DenseNet121 with ``spatial_dims=3``, any
``nn.Conv3d`` stack) takes (1, C, D, H, W), its layers give (B, C, d, h, w) activations, and
the map is (d, h, w), upsampled trilinearly to the input's (D, H, W). A layer counts as
spatial when its output has as many spatial axes as the input.

A batch of inputs is explained in one forward and one backward pass
(:func:`run_grad_cam_batch`): in eval mode each item's logits depend on its own activations
only, so the gradient of the sum of the items' chosen logits is each item's own gradient.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlm_core.errors import UsageError, did_you_mean
from vlm_core.explain._common import (
    Saliency,
    batch_logits_of,
    batch_spatial_size,
    eval_mode,
    pick_class,
    spatial_size,
    to_heat,
)

__all__ = [
    "cam_of",
    "find_target_layer",
    "grad_cam",
    "grad_cam_of",
    "run_grad_cam",
    "run_grad_cam_batch",
]


def _is_spatial(output: object, dims: int = 2) -> bool:
    """Whether ``output`` is a (B, C, *grid) map with ``dims`` spatial axes and > 1 cell."""
    return (
        isinstance(output, Tensor) and output.dim() == 2 + dims and math.prod(output.shape[2:]) > 1
    )


def _grid(dims: int) -> str:
    return "(B, C, d, h, w)" if dims == 3 else "(B, C, h, w)"


def find_target_layer(model: nn.Module, pixels: Tensor) -> str:
    """Name of the module Grad-CAM explains by default: the last spatial feature stage.

    For a timm model this is the last ``feature_info`` entry whose output is a (B, C, h, w)
    map with h·w > 1 (``layer4`` of a ResNet, ``stages.3`` of a ConvNeXt); for another module,
    the last module in execution order with such an output — a (B, C, d, h, w) map with
    d·h·w > 1 when ``pixels`` is a volume (1, C, D, H, W). Runs one forward pass without
    gradients; the model is left unchanged.
    """
    dims = len(spatial_size(pixels))
    stages = [str(d["module"]) for d in _feature_info(model)]
    candidates = stages or [name for name, _ in model.named_modules() if name]
    modules = dict(model.named_modules())
    spatial: list[str] = []

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: object) -> None:
            if _is_spatial(output, dims):
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
            f"{type(model).__name__} has no {where} with a spatial {_grid(dims)} output for "
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
    """Grad-CAM for one preprocessed image (1, C, H, W) or volume (1, C, D, H, W); the map
    on the layer's grid, (h, w) or (d, h, w)."""
    spatial_size(pixels)  # one input, checked
    return run_grad_cam_batch(model, pixels, class_index, target_layer)[0]


def run_grad_cam_batch(
    model: nn.Module,
    pixels: Tensor,
    class_index: int | None = None,
    target_layer: str | None = None,
) -> list[Saliency]:
    """Grad-CAM for a batch of preprocessed images (B, C, H, W) or volumes (B, C, D, H, W):
    one forward and one backward pass for all B, one :class:`Saliency` each (its map on the
    layer's grid), the same as B calls of :func:`run_grad_cam` within float tolerance.

    Why one backward pass suffices: the model runs in eval mode, where no layer mixes the
    items of a batch (batch norm uses its running statistics), so item b's logits depend on
    item b's activations only, and the gradient of the sum of every item's chosen logit with
    respect to the batch's activations is, row by row, each item's own gradient. A model that
    mixes items in eval mode (attention across the batch) would need one call per item.
    ``class_index`` is explained for every item (None: each item's top-1 class).
    """
    dims = len(batch_spatial_size(pixels))
    batch = int(pixels.shape[0])
    modules = dict(model.named_modules())
    if target_layer is None:
        target_layer = find_target_layer(model, pixels[:1])
    elif target_layer not in modules or not target_layer:
        raise UsageError(
            f"no module named {target_layer!r} in {type(model).__name__}"
            + did_you_mean(target_layer, [n for n in modules if n])
        )
    seen: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: object) -> object:
        if isinstance(output, Tensor):
            seen.append(output)
            # the model goes on with a copy, so that an in-place op after the layer (the
            # ReLU(inplace=True) of MONAI's and torchvision's DenseNet) cannot overwrite the
            # activations explained here
            return output.clone()
        return None

    with ExitStack() as stack:
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.callback(modules[target_layer].register_forward_hook(keep).remove)
        # gradients reach the activations even when the weights are frozen
        x = pixels.detach().clone().requires_grad_(True)
        logits = batch_logits_of(model(x), batch)
        if not seen or not _is_spatial(seen[-1], dims) or seen[-1].shape[0] != batch:
            found = tuple(seen[-1].shape) if seen else "nothing"
            grid = _grid(dims).replace("B", str(batch))
            raise UsageError(f"Grad-CAM layer {target_layer!r} gave {found}, not a {grid} map")
        activation = seen[-1]
        chosen = [pick_class(row, class_index) for row in logits]
        picked = logits[torch.arange(batch, device=logits.device), chosen]
        (grad,) = torch.autograd.grad(picked.sum(), activation, allow_unused=True)
    if grad is None:
        raise UsageError(f"the logits do not depend on layer {target_layer!r}; pick another")
    logits = logits.detach()
    out = []
    for b in range(batch):
        act, g = activation[b].detach().double(), grad[b].double()
        if _channels_last(model, target_layer, act):
            act, g = act.movedim(-1, 0), g.movedim(-1, 0)
        out.append(Saliency(cam_of(act, g), logits[b], chosen[b], (target_layer,)))
    return out


def cam_of(activation: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM's map from one item's activations (C, *grid) and their gradient: ReLU of the
    channels weighted by the gradient's spatial mean, on the layer's grid."""
    weights = grad.mean(dim=tuple(range(1, activation.dim())))
    return torch.relu(torch.einsum("c,c...->...", weights, activation))


def grad_cam_of(score: Any, layer: nn.Module, pixels: Tensor) -> tuple[Tensor, float]:
    """Grad-CAM of any scalar of one input: ``score`` maps a batch shaped like ``pixels``
    (1, C, *grid) to (1,) — a class logit, a detection's class score, a region's summed
    logit — and ``layer`` is the module whose (1, C', *grid') output is weighted. Returns the
    map on the layer's grid and the score. The explain engine's Grad-CAM
    (:mod:`vlm_core.explain.attribution`); the caller holds the model in eval mode."""
    seen: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: object) -> object:
        if isinstance(output, Tensor):
            seen.append(output)
            return output.clone()  # an in-place op after the layer cannot touch it
        return None

    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.callback(layer.register_forward_hook(keep).remove)
        x = pixels.detach().clone().requires_grad_(True)
        value = score(x)
        dims = pixels.dim() - 2
        if not seen or not _is_spatial(seen[-1], dims) or seen[-1].shape[0] != 1:
            found = tuple(seen[-1].shape) if seen else "nothing"
            raise UsageError(f"Grad-CAM's layer gave {found}, not a {_grid(dims)} map")
        (grad,) = torch.autograd.grad(value.sum(), seen[-1], allow_unused=True)
    if grad is None:
        raise UsageError("the explained score does not depend on Grad-CAM's layer")
    return cam_of(seen[-1][0].detach().double(), grad[0].double()), float(value.detach()[0])


def grad_cam(
    model: nn.Module,
    pixels: Tensor,
    *,
    class_index: int | None = None,
    target_layer: str | None = None,
    size: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Grad-CAM heat map of a convolutional classifier for one image or volume.

    Args:
        model: A classifier returning (1, num_classes) logits; left unchanged (mode, hooks,
            parameter gradients).
        pixels: (1, C, H, W) preprocessed image, or (1, C, D, H, W) volume for a 3D convnet,
            on the model's device, in its dtype.
        class_index: Class whose logit is explained; default the top-1 prediction.
        target_layer: Module name (as in ``model.named_modules()``) whose output is explained;
            default :func:`find_target_layer`.
        size: (height, width) of the returned map — (depth, height, width) for a volume;
            default the input's (H, W) or (D, H, W).

    Returns:
        float32 of shape ``size`` in [0, 1], upsampled bilinearly (2D) or trilinearly (3D);
        larger = more evidence for the class there.
    """
    saliency = run_grad_cam(model, pixels, class_index, target_layer)
    return to_heat(saliency.coarse, size or spatial_size(pixels))
