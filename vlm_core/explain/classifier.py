"""Explain a timm classifier's view of an image: attention rollout for ViTs, Grad-CAM for
convnets (:func:`explain`, the one call a script needs; the package's explain engine for tasks is
:mod:`vlm_core.explain.attribution`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from vlm_core.errors import UsageError, did_you_mean
from vlm_core.explain._common import Saliency, to_heat
from vlm_core.explain.blend import overlay
from vlm_core.explain.gradcam import run_grad_cam
from vlm_core.explain.rollout import HeadFusion, is_vit_family, run_rollout
from vlm_core.types import Image

__all__ = ["ExplainResult", "Method", "explain", "preprocess"]

Method = Literal["auto", "rollout", "gradcam"]
_METHODS = ("auto", "rollout", "gradcam")


@dataclass(frozen=True, eq=False)
class ExplainResult:
    """An explanation of one image.

    ``overlay``: RGB uint8 (H, W, 3) heat map blended over the image; ``heat``: (H, W)
    float32 in [0, 1] at the image's own size; ``method``: ``"rollout"`` or ``"gradcam"``;
    ``class_index`` and ``score``: the class explained (Grad-CAM) or predicted (rollout, which
    is class-agnostic) and its logit; ``layers``: the modules whose outputs were used.
    """

    overlay: Image
    heat: np.ndarray
    method: Literal["rollout", "gradcam"]
    class_index: int
    score: float
    layers: tuple[str, ...]


def preprocess(
    model: nn.Module, image: Image, data_config: Mapping[str, Any] | None = None
) -> Tensor:
    """The model's input for ``image``: (1, 3, h, w) on the model's device and dtype.

    Uses timm's public ``resolve_data_config`` / ``create_transform`` (mean, std, interpolation
    and input size of the model), overridden by ``data_config`` where given. The whole image
    is resized to the input size (``crop_mode="squash"``, ``crop_pct=1``), never cropped, so a
    heat map on the input maps back onto every pixel of the image. For a fixed-size ViT the
    model's own ``patch_embed.img_size`` wins over the pretrained config's input size.
    """
    from PIL import Image as PILImage
    from timm.data import create_transform, resolve_data_config

    config = dict(resolve_data_config(model=model))
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and not getattr(model, "dynamic_img_size", False):
        config["input_size"] = (3, *tuple(img_size))
    config.update(data_config or {})
    config.update(crop_pct=1.0, crop_mode="squash")
    transform = create_transform(**config)
    pixels: Tensor = transform(PILImage.fromarray(image.to_rgb_uint8()))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    return pixels.unsqueeze(0).to(device=device, dtype=dtype)


def explain(
    model: nn.Module,
    image: Image,
    *,
    method: Method = "auto",
    class_index: int | None = None,
    target_layer: str | None = None,
    head_fusion: HeadFusion = "mean",
    discard_ratio: float = 0.0,
    data_config: Mapping[str, Any] | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> ExplainResult:
    """Explain ``model``'s view of ``image`` as a heat map over the image.

    Args:
        model: A timm classifier (or any ``nn.Module`` returning (1, num_classes) logits, with
            Grad-CAM); left unchanged.
        image: The image; the map comes back at its size.
        method: ``"rollout"`` (attention rollout, ViT family), ``"gradcam"`` (convnets), or
            ``"auto"`` (default): rollout when :func:`is_vit_family`, else Grad-CAM.
        class_index: Grad-CAM's class; default the top-1 prediction. Rollout ignores it.
        target_layer: Grad-CAM's layer name; default :func:`find_target_layer`.
        head_fusion: Rollout's head fusion, ``"mean"`` (default), ``"max"`` or ``"min"``.
        discard_ratio: Rollout's fraction of lowest weights dropped per layer; default 0.
        data_config: Overrides for timm's data config (mean, std, input_size, ...), see
            :func:`preprocess`.
        alpha: Weight of the colours in the overlay, in [0, 1]; default 0.5.
        colormap: One of :data:`COLORMAPS`; default ``"jet"``.
    """
    if method not in _METHODS:
        raise UsageError(
            f"unknown explanation method {method!r}; choose one of {', '.join(_METHODS)}"
            + did_you_mean(method, _METHODS)
        )
    chosen = method
    if chosen == "auto":
        chosen = "rollout" if is_vit_family(model) else "gradcam"
    pixels = preprocess(model, image, data_config)
    saliency: Saliency
    if chosen == "rollout":
        if class_index is not None or target_layer is not None:
            raise UsageError("class_index and target_layer apply to Grad-CAM, not to rollout")
        saliency = run_rollout(model, pixels, head_fusion, discard_ratio)
    else:
        saliency = run_grad_cam(model, pixels, class_index, target_layer)
    heat = to_heat(saliency.coarse, (image.height, image.width))
    return ExplainResult(
        overlay=overlay(image, heat, alpha=alpha, colormap=colormap),
        heat=heat,
        method="rollout" if chosen == "rollout" else "gradcam",
        class_index=saliency.class_index,
        score=float(saliency.logits[saliency.class_index]),
        layers=saliency.layers,
    )
