"""Detectors: torchvision's FCOS, RetinaNet and Faster R-CNN on a timm backbone from the core
(through torchvision's feature pyramid) or on torchvision's own ResNet-50 / MobileNetV3 FPN;
and COCO-pretrained torchvision weights mapped onto the driving classes.

An architecture is a plain mapping (it is written into every trained weights file's card, so
the weights rebuild their model)::

    {"family": "fcos", "backbone": "timm:resnet18", "class_names": [...],
     "min_size": 224, "max_size": 400, "fpn_channels": 64, "head_convs": 2}

``backbone`` is ``timm:<name>`` (any timm model with feature maps; ImageNet weights through
``backbone_weights``) or ``torchvision:resnet50`` / ``torchvision:mobilenet_v3_large``
(torchvision's detection builders, the layout of its COCO checkpoints).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vlm_core.errors import InputError, UsageError, check_fields
from vlm_core.weights import ModelRecipe
from vlm_core.weights.errors import WeightsError

FAMILIES = ("fcos", "retinanet", "fasterrcnn")
TORCHVISION_BACKBONES = ("resnet50", "mobilenet_v3_large")
ARCH_FIELDS = frozenset(
    {
        "family",
        "backbone",
        "class_names",
        "min_size",
        "max_size",
        "fpn_channels",
        "head_convs",
        "levels",
    }
)

#: The torchvision builders of each (family, torchvision backbone) and their COCO weights enum.
_BUILDERS: dict[tuple[str, str], tuple[str, str]] = {
    ("fcos", "resnet50"): ("fcos_resnet50_fpn", "FCOS_ResNet50_FPN_Weights"),
    ("retinanet", "resnet50"): ("retinanet_resnet50_fpn_v2", "RetinaNet_ResNet50_FPN_V2_Weights"),
    ("fasterrcnn", "resnet50"): (
        "fasterrcnn_resnet50_fpn_v2",
        "FasterRCNN_ResNet50_FPN_V2_Weights",
    ),
    ("fasterrcnn", "mobilenet_v3_large"): (
        "fasterrcnn_mobilenet_v3_large_fpn",
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    ),
}


def check_arch(arch: Mapping[str, Any]) -> dict[str, Any]:
    """``arch`` with defaults filled in; a one-line error for a field that cannot work."""
    check_fields(arch, ARCH_FIELDS, "detector architecture")
    out = {
        "family": "fcos",
        "backbone": "timm:resnet18",
        "min_size": 224,
        "max_size": 400,
        "fpn_channels": 64,
        "head_convs": 2,
        "levels": [2, 3, 4],
        **arch,
    }
    if out["family"] not in FAMILIES:
        raise UsageError(
            f"detector family must be one of {', '.join(FAMILIES)}, got {out['family']!r}"
        )
    source, _, name = str(out["backbone"]).partition(":")
    if source not in ("timm", "torchvision") or not name:
        raise UsageError(
            f"backbone must be timm:<name> or torchvision:<name>, got {out['backbone']!r}"
        )
    if source == "torchvision" and (out["family"], name) not in _BUILDERS:
        have = ", ".join(f"{f} + torchvision:{b}" for f, b in _BUILDERS)
        raise UsageError(
            f"no torchvision builder for {out['family']} on {name} (there are: {have})"
        )
    if not out.get("class_names"):
        raise UsageError("detector architecture needs class_names")
    return out


class TimmFPN(nn.Module):
    """A timm backbone's feature maps (levels ``levels``) through torchvision's
    :class:`~torchvision.ops.FeaturePyramidNetwork`: what torchvision detectors call a backbone
    (``out_channels``, an ordered dict of maps)."""

    def __init__(
        self,
        name: str,
        levels: Sequence[int],
        channels: int,
        extra: str,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        from vlm_core.backbones import create_backbone

        backbone = create_backbone(
            name, weights, features_only=True, out_indices=tuple(levels), plugin="driving"
        )
        assert backbone.feature_info is not None
        self.body = backbone.model
        self.preprocessing = backbone.preprocessing
        self.weights_sha256 = backbone.weights_sha256
        in_channels = list(backbone.feature_info.channels)
        extra_block = LastLevelP6P7(channels, channels) if extra == "p6p7" else LastLevelMaxPool()
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=extra_block)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def _anchors(levels: int, family: str) -> Any:
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    base = 16 if family == "fasterrcnn" else 32
    sizes = tuple(
        (base * 2**i, int(base * 2**i * 2 ** (1 / 3)), int(base * 2**i * 2 ** (2 / 3)))
        for i in range(levels)
    )
    if family == "fasterrcnn":
        sizes = tuple((s[0],) for s in sizes)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)


def build_detector(arch: Mapping[str, Any], *, backbone_weights: str | None = None) -> nn.Module:
    """The torchvision detector of ``arch`` (random head; ``backbone_weights``: timm weights)."""
    from torchvision.models import detection

    arch = check_arch(arch)
    family = arch["family"]
    num_classes = len(arch["class_names"]) + 1  # label 0 is the background
    sizes = {"min_size": arch["min_size"], "max_size": arch["max_size"]}
    source, _, name = arch["backbone"].partition(":")
    if source == "torchvision":
        builder = getattr(detection, _BUILDERS[(family, name)][0])
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **sizes)
        model.arch = dict(arch)
        return model  # type: ignore[no-any-return]
    levels = list(arch["levels"])
    body = TimmFPN(
        name,
        levels,
        arch["fpn_channels"],
        "maxpool" if family == "fasterrcnn" else "p6p7",
        backbone_weights,
    )
    norm = {"image_mean": list(body.preprocessing.mean), "image_std": list(body.preprocessing.std)}
    maps = len(levels) + (1 if family == "fasterrcnn" else 2)
    if family == "fcos":
        from torchvision.models.detection.fcos import FCOSHead

        head = FCOSHead(body.out_channels, 1, num_classes, num_convs=arch["head_convs"])
        _single_value_groups_allowed(head)
        model = detection.FCOS(
            body, num_classes, head=head, anchor_generator=_fcos_anchors(maps), **sizes, **norm
        )
    elif family == "retinanet":
        from torchvision.models.detection.retinanet import RetinaNetHead

        anchors = _anchors(maps, family)
        head = RetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], num_classes)
        model = detection.RetinaNet(
            body, num_classes, anchor_generator=anchors, head=head, **sizes, **norm
        )
    else:
        from torchvision.ops import MultiScaleRoIAlign

        pooler = MultiScaleRoIAlign([str(i) for i in range(len(levels))], 7, 2)
        model = detection.FasterRCNN(
            body,
            num_classes,
            rpn_anchor_generator=_anchors(maps, family),
            box_roi_pool=pooler,
            **sizes,
            **norm,
        )
    model.arch = dict(arch)
    return model  # type: ignore[no-any-return]


class _GroupNorm(nn.GroupNorm):
    """:class:`~torch.nn.GroupNorm` that also takes groups of one value: a 1x1 map of a
    32-channel pyramid in FCOS's 32-group head (a square image at a small ``min_size``), which
    ``F.group_norm`` refuses ("Expected more than 1 value per channel"). One value normalises
    to 0, so the output is the bias, as the formula gives; any other input is unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2 and math.prod(x.shape[2:]) * (x.shape[1] // self.num_groups) == 1:
            out = torch.zeros_like(x)
            return out + self.bias.view(1, -1, *([1] * (x.dim() - 2))) if self.affine else out
        return super().forward(x)


def _single_value_groups_allowed(head: nn.Module) -> None:
    """Every GroupNorm of a freshly built ``head`` as :class:`_GroupNorm` (the same
    parameters and state dict keys, so trained weights load as before)."""
    for name, module in list(head.named_modules()):
        if type(module) is nn.GroupNorm:
            parent = head.get_submodule(name.rpartition(".")[0]) if "." in name else head
            # a fresh head: GroupNorm starts at weight 1, bias 0 either way
            swapped = _GroupNorm(module.num_groups, module.num_channels, module.eps, module.affine)
            setattr(parent, name.rpartition(".")[2], swapped)


def _fcos_anchors(maps: int) -> Any:
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator(tuple((8 * 2**i,) for i in range(maps)), ((1.0,),) * maps)


def set_postprocess(model: nn.Module, *, score: float, nms_iou: float, max_detections: int) -> None:
    """Score threshold, NMS IoU and the most detections per image, on any of the families
    (torchvision applies them with :func:`torchvision.ops.batched_nms`)."""
    target = getattr(model, "roi_heads", model)
    target.score_thresh = score  # type: ignore[assignment]
    target.nms_thresh = nms_iou  # type: ignore[assignment]
    attr = "detections_per_img"
    setattr(target, attr, max_detections)


def set_input_size(model: nn.Module, min_size: int, max_size: int) -> None:
    """The size torchvision's transform resizes every image to (shorter side, longest side)."""
    model.transform.min_size = (int(min_size),)  # type: ignore[union-attr]
    model.transform.max_size = int(max_size)  # type: ignore[union-attr]


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The (height, width) torchvision's detection transform resizes an image to: the shorter
    side scaled to ``min_size`` unless that takes the longer one past ``max_size`` (then the
    longer side to ``max_size``), rounded down as its interpolation does."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return math.floor(height * scale), math.floor(width * scale)


def check_frame_sizes(model: nn.Module, frames: Sequence[Any]) -> None:
    """Refuse (one-line ``InputError``) a frame ((H, W, 3) array) the detector would resize to
    nothing: a strip so elongated that its shorter side falls under a pixel at the model's input
    size (torchvision would raise instead)."""
    min_size = int(model.transform.min_size[-1])  # type: ignore[union-attr, index]
    max_size = int(model.transform.max_size)  # type: ignore[union-attr, arg-type]
    for frame in frames:
        height, width = int(frame.shape[0]), int(frame.shape[1])
        if min(resized_shape(height, width, min_size, max_size)) < 1:
            raise InputError(
                f"image {width}x{height} is too elongated for the detector: at its input size "
                f"({min_size} px, longer side at most {max_size} px) its shorter side is under "
                "a pixel"
            )


# --------------------------------------------------------------------------- COCO weights


def _class_layers(family: str) -> list[tuple[str, int]]:
    """The state-dict keys whose first dimension runs over classes, and the number of rows per
    class (4 for Faster R-CNN's box regression)."""
    if family in ("fcos", "retinanet"):
        return [
            ("head.classification_head.cls_logits.weight", 1),
            ("head.classification_head.cls_logits.bias", 1),
        ]
    return [
        ("roi_heads.box_predictor.cls_score.weight", 1),
        ("roi_heads.box_predictor.cls_score.bias", 1),
        ("roi_heads.box_predictor.bbox_pred.weight", 4),
        ("roi_heads.box_predictor.bbox_pred.bias", 4),
    ]


def map_coco_state(
    state: Mapping[str, torch.Tensor],
    family: str,
    class_names: Sequence[str],
    coco_to_class: Mapping[int, str],
    *,
    coco_classes: int = 91,
) -> dict[str, torch.Tensor]:
    """A torchvision COCO checkpoint (``coco_classes`` labels) cut down to ``class_names``:
    each class-dependent layer keeps the rows of the COCO labels that map onto a class (the
    background row first; a class no COCO label maps to starts from the background's row)."""
    keep = [0]
    for name in class_names:
        ids = [i for i, c in coco_to_class.items() if c == name]
        keep.append(ids[0] if ids else 0)
    out = dict(state)
    for key, rows in _class_layers(family):
        if key not in state:
            raise WeightsError(f"not a torchvision {family} COCO checkpoint: it has no {key}")
        tensor = state[key]
        per_anchor = tensor.shape[0] // (coco_classes * rows)
        if per_anchor * coco_classes * rows != tensor.shape[0]:
            raise WeightsError(
                f"{key} has {tensor.shape[0]} rows, not a multiple of {coco_classes} classes"
            )
        grouped = tensor.reshape(per_anchor, coco_classes, rows, *tensor.shape[1:])
        out[key] = grouped[:, keep].reshape(-1, *tensor.shape[1:]).clone()
    return out


def coco_recipe(
    family: str,
    backbone: str,
    class_names: Sequence[str],
    coco_to_class: Mapping[int, str],
    *,
    min_size: int = 800,
    max_size: int = 1333,
    task: str = "driving.detect",
) -> ModelRecipe:
    """How torchvision's COCO-pretrained ``family`` on ``backbone`` loads through the core's
    one weights path: its architecture as the card (COCO checkpoints carry none) and its
    classifier cut down to ``class_names`` (:func:`map_coco_state`)."""
    if (family, backbone) not in _BUILDERS:
        have = ", ".join(f"{f}/{b}" for f, b in _BUILDERS)
        raise UsageError(f"no COCO weights for {family} on {backbone} (there are: {have})")
    arch = {
        "family": family,
        "backbone": f"torchvision:{backbone}",
        "class_names": list(class_names),
        "min_size": min_size,
        "max_size": max_size,
    }

    def adapt(state: dict[str, torch.Tensor], card: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return map_coco_state(state, family, class_names, coco_to_class)

    return ModelRecipe(
        task=task,
        name=f"{_BUILDERS[(family, backbone)][0]} (COCO, mapped)",
        build=lambda card: build_detector(card["architecture"]),
        card={"architecture": arch},
        adapt=adapt,
    )


def coco_reference(family: str, backbone: str, weights: str) -> str:
    """``weights`` as a reference: ``torchvision`` becomes the URL of torchvision's COCO
    checkpoint of ``family`` on ``backbone`` (downloaded into torch hub's cache)."""
    if weights != "torchvision" or (family, backbone) not in _BUILDERS:
        return weights
    from torchvision.models import detection

    return str(getattr(detection, _BUILDERS[(family, backbone)][1]).DEFAULT.url)


def coco_detector(
    family: str,
    backbone: str,
    weights: str,
    class_names: Sequence[str],
    coco_to_class: Mapping[int, str],
    *,
    min_size: int = 800,
    max_size: int = 1333,
) -> tuple[nn.Module, str]:
    """torchvision's COCO-pretrained ``family`` on ``backbone`` with its classifier cut down
    to ``class_names``, to train (a module of its own), and the checkpoint's sha256.
    ``weights``: a local ``.pth`` file (as torchvision downloads it) or ``torchvision`` to
    download the weights enum's file. A ``weights`` that cannot be used is the request's
    ``coco_weights`` fault (exit 2)."""
    from vlm_core.weights import load_model

    recipe = coco_recipe(family, backbone, class_names, coco_to_class,
                         min_size=min_size, max_size=max_size)  # fmt: skip
    ref = coco_reference(family, backbone, weights)
    loaded = load_model(ref, recipe, fresh=True, param="coco_weights")
    return loaded.module, loaded.sha256


def state_from_card(card: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture recorded in a weights card (one-line error when there is none)."""
    arch = card.get("architecture")
    if not isinstance(arch, Mapping) or "family" not in arch:
        raise InputError("these weights carry no detector architecture in their card")
    return dict(arch)
