"""Backbones: timm models by name, returned with their preprocessing and feature geometry.

    bb = create_backbone("resnet50")                          # pooled embeddings (B, 2048)
    bb = create_backbone("resnet50", features_only=True)      # multi-scale maps for dense heads
    bb.feature_info.strides, bb.feature_info.channels         # (4, 8, 16, 32), (256, ...) FPN-ready
    bb = create_backbone("vit_base_patch16_224", weights="timm:vit_base_patch16_224.augreg_in21k")
    bb = create_backbone("resnet18", weights="/models/resnet18.safetensors")

Weights go through :mod:`vlm_core.weights` (sha256-checked, safetensors first, no unsafe
unpickling) and are handed to timm as a state dict, so timm adapts classifier heads, input
channels and feature wrappers as it does for its own pretrained weights. ``weights=None`` means
random initialisation (always offline). timm's tiny registered models (``test_resnet``,
``test_vit``, ...) make tests run in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlm_core.errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Preprocessing:
    """The input a backbone expects (timm's data config): size (C, H, W) in pixels, mean and
    std of the normalisation, interpolation, the centre-crop fraction."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    crop_mode: str

    def as_timm_config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }

    def transform(self, *, training: bool = False) -> Callable[[Any], torch.Tensor]:
        """timm's PIL-image transform for this config (evaluation by default)."""
        from timm.data import create_transform

        return create_transform(**self.as_timm_config(), is_training=training)

    def pipeline(self, *, gpu_decode: bool = False) -> Any:
        """The tensor pipeline for the streaming executor (:class:`ImagePipeline`)."""
        from vlm_core.runtime.pipeline import ImagePipeline

        return ImagePipeline.from_data_config(self.as_timm_config(), gpu_decode=gpu_decode)


@dataclass(frozen=True)
class FeatureInfo:
    """Per-level geometry of a features-only backbone: output channels and stride (pixels)."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    module_names: tuple[str, ...]


@dataclass
class Backbone:
    """A timm model with what callers need to feed it and read it."""

    name: str
    model: nn.Module
    preprocessing: Preprocessing
    num_features: int  # width of pooled embeddings (features_only=False, num_classes=0)
    feature_info: FeatureInfo | None  # set when features_only
    weights_sha256: str | None
    is_vit: bool

    @property
    def nbytes(self) -> int:
        """The model's parameters and buffers: what the model cache counts against its budget."""
        from vlm_core.runtime.cache import module_nbytes

        return module_nbytes(self.model)

    def __call__(self, x: torch.Tensor) -> Any:
        return self.model(x)

    def explain(self, image: Any, **options: Any) -> Any:
        """A heat-map overlay of what the model looks at in ``image`` (a core ``Image``):
        attention rollout for ViT-family models, Grad-CAM for convnets (of the top class, or
        ``class_index=``; with ``num_classes=0`` the "classes" are embedding channels). Returns
        :class:`vlm_core.explain.ExplainResult`; ``options`` go to :func:`vlm_core.explain.explain`.
        """
        from vlm_core.explain import explain

        if self.feature_info is not None:
            raise UsageError("explain needs a classifier or embedding backbone, not features_only")
        options.setdefault("data_config", self.preprocessing.as_timm_config())
        return explain(self.model, image, **options)


def _check_name(name: str) -> None:
    import timm

    arch = name.split(".", 1)[0]
    if not timm.is_model(arch):
        known = timm.list_models()
        raise UsageError(f"unknown backbone '{name}'{did_you_mean(arch, known)}")


def _state_dict_for(weights: str, plugin: str, sha256: str | None) -> tuple[dict[str, Any], str]:
    from vlm_core import weights as weights_engine

    path = weights_engine.resolve(weights, plugin=plugin, sha256=sha256)
    state = weights_engine.load_state_dict(path, sha256=sha256, plugin=plugin)
    return state, sha256 or weights_engine.sha256_of(path)  # remembered from resolve()


def create_backbone(
    name: str,
    weights: str | None = None,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    num_classes: int | None = 0,
    in_chans: int = 3,
    sha256: str | None = None,
    plugin: str = "core",
    **kwargs: Any,
) -> Backbone:
    """Create a timm backbone.

    Args:
        name: a timm architecture (``resnet50``), optionally with a pretrained tag
            (``resnet50.a1_in1k``), which selects that tag's preprocessing.
        weights: None for random initialisation, or a reference resolved by
            :func:`vlm_core.weights.resolve` (a local path, ``hf-hub:...``, ``timm:...``, a URL).
        features_only: return multi-scale feature maps (a list of (B, C_i, H/s_i, W/s_i)).
        out_indices: which feature levels (timm's indices; default: all).
        num_classes: classifier width; 0 (default) returns pooled embeddings, None keeps the
            architecture's default head.
        in_chans: input channels (timm adapts pretrained first-layer weights).
        sha256: expected sha256 of the weights file.
        plugin: who asks (named in errors about weights).
        kwargs: passed to ``timm.create_model`` (``img_size``, ``drop_path_rate``, ...).
    """
    import timm

    _check_name(name)
    create: dict[str, Any] = dict(kwargs, in_chans=in_chans)
    if features_only:
        create["features_only"] = True
        if out_indices is not None:
            create["out_indices"] = tuple(out_indices)
    elif num_classes is not None:
        create["num_classes"] = num_classes
    weights_sha: str | None = None
    if weights is None:
        model = timm.create_model(name, pretrained=False, **create)
    else:
        state, weights_sha = _state_dict_for(weights, plugin, sha256)
        overlay: dict[str, Any] = {"source": "timm", "state_dict": state, "file": None, "url": None,
                   "hf_hub_id": None}  # fmt: skip
        # timm keeps a checkpoint's classifier only when its width matches the request: tell
        # it this checkpoint's width (not the architecture's default tag's)
        cfg = timm.models.get_pretrained_cfg(name)
        head = (
            state.get(f"{cfg.classifier}.weight")
            if cfg and isinstance(cfg.classifier, str)
            else None
        )
        if head is not None:
            overlay["num_classes"] = int(head.shape[0])
        try:
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=overlay, **create
            )
        except RuntimeError as exc:  # timm's strict load_state_dict: weights of another network
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "RuntimeError")
            from vlm_core.weights import WeightsError

            raise WeightsError(
                f"they do not fit the timm backbone '{name}': {detail[:200]}",
                plugin=plugin,
                filename=str(weights),
                hint="give weights trained for this architecture",
            ) from None
    config = timm.data.resolve_model_data_config(model)
    preprocessing = Preprocessing(
        input_size=tuple(config["input_size"]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation=str(config["interpolation"]),
        crop_pct=float(config.get("crop_pct", 1.0)),
        crop_mode=str(config.get("crop_mode", "center")),
    )
    info = None
    if features_only:
        fi: Any = model.feature_info
        info = FeatureInfo(
            channels=tuple(fi.channels()),
            strides=tuple(fi.reduction()),
            module_names=tuple(fi.module_name()),
        )
    from timm.models.vision_transformer import VisionTransformer

    is_vit = isinstance(getattr(model, "model", model), VisionTransformer)
    return Backbone(
        name=name,
        model=model,
        preprocessing=preprocessing,
        num_features=int(getattr(model, "num_features", 0)),
        feature_info=info,
        weights_sha256=weights_sha,
        is_vit=bool(is_vit),
    )


def cached_backbone(
    name: str, weights: str | None = None, *, policy: Any = None, **kwargs: Any
) -> tuple[Backbone, Callable[[], None]]:
    """A prepared backbone from the process-wide model cache, and the function that releases it.

    Callers asking for the same (name, weights, device, dtype, options) share one instance.
    """
    from vlm_core.runtime.cache import CacheKey, model_cache
    from vlm_core.runtime.policy import policy_for, prepare_model

    policy = policy or policy_for()
    options = ",".join(f"{k}={kwargs[k]!r}" for k in sorted(kwargs))
    key = CacheKey(f"{name}[{options}]", f"{weights}|{kwargs.get('sha256')}", str(policy.device),
                   policy.dtype_name)  # fmt: skip

    def build() -> Backbone:
        backbone = create_backbone(name, weights, **kwargs)
        backbone.model = prepare_model(backbone.model, policy)
        return backbone

    cache = model_cache()
    backbone = cache.acquire(key, build)
    return backbone, lambda: cache.release(key)
