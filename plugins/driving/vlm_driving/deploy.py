"""`vlm export driving.detect`: the FCOS detector's network out of Python, and a torchvision FCOS
that runs an exported one.

What is exported (:class:`HeadOutputs`) is the part of torchvision's FCOS with weights: the
backbone, its feature pyramid and the head's convolutions, from the normalised, resized and
padded image batch ``images`` (B, 3, H, W; H and W multiples of 32) to, per pyramid level, the
tensors torchvision's head computes before it flattens them: the class logits (B, A*K, h, w),
the box regression after its ReLU (B, A*4, h, w) and the centre-ness logits (B, A, h, w)
(A = 1 anchor per position, K = 8 classes plus the background for the bundled detector).

Everything else stays in Python and is torchvision's own code: resize, normalisation and
padding (``GeneralizedRCNNTransform``), anchors, box decoding, score threshold, top-k, NMS and
the mapping back to the image's pixels. :func:`fcos_running` builds that FCOS from the weights'
card with two thin stand-ins for its backbone and head (:class:`_NetworkBackbone`,
:class:`_NetworkHead`), which call the network once per batch and hand torchvision exactly the
tensors its head would have produced, so an exported network's detections are the torch
detector's.

The parity cases are generated road scenes drawn from the export's held-out ``seed`` (the core's
7,100,000; the detector was trained on scene seeds 0-2999 and every other range the plugin uses
is below 1,000,000: weights/detector/TRAINING.md and the README): ``count`` preprocessed
batches of 1-3 scenes at four sizes, and mAP@.5 of :data:`METRIC_SCENES` scenes at 400x224
through the task's own detection and evaluation code (:func:`vlm_driving.heldout.evaluate_scenes`)
with the network in place of the backbone and head.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vlm_core.errors import InputError, UsageError

if TYPE_CHECKING:
    from vlm_core.deploy.spec import DeploySpec, ParityCases
    from vlm_core.tasks import TaskParams
    from vlm_core.weights import LoadedModel

#: the pyramid levels of every FCOS the plugin builds (P3-P5 of the backbone, P6 and P7)
LEVELS = 5
#: what each level returns, in this order (torchvision's names of the head's outputs)
PARTS = ("cls_logits", "bbox_regression", "bbox_ctrness")
#: held-out scenes the parity metric (mAP@.5) is measured on, at the training size 400x224
METRIC_SCENES = 32
#: the sizes (width, height) of the parity inputs' scenes, in turn: the training size, 16:9
#: frames, a square and a portrait image (each resized and padded as the run does)
CASE_SIZES = ((400, 224), (640, 360), (300, 300), (224, 400))
#: the smallest side (resized and padded) the exported graph is declared for: torch.export
#: assumes every pyramid level's map is at least 2x2 (P7, stride 128: 129 px, padded to 160)
#: and the .pt2 program asserts it when run; the ONNX graph runs smaller images too
MIN_SIDE = 160
NOTE = (
    "the graph is the backbone, feature pyramid and FCOS head convolutions: normalised, resized, "
    "padded images (B, 3, H, W; H, W multiples of 32) to, per pyramid level 0-4, cls_logits "
    "(B, A*K, h, w), bbox_regression after its ReLU (B, A*4, h, w) and bbox_ctrness (B, A, h, w); "
    "resize, normalisation and padding, anchors, box decoding, score threshold, top-k, NMS and "
    "the mapping back to image pixels run in Python (torchvision's FCOS code); declared for "
    f"sides of at least {MIN_SIDE} px (the .pt2 program refuses smaller)"
)


def output_names(levels: int = LEVELS) -> tuple[str, ...]:
    """The exported graph's outputs: ``cls_logits_0``, ``bbox_regression_0``,
    ``bbox_ctrness_0``, ``cls_logits_1``... level by level."""
    return tuple(f"{part}_{level}" for level in range(levels) for part in PARTS)


class HeadOutputs(nn.Module):
    """The exported part of a torchvision FCOS: its backbone (with the feature pyramid) and
    its head's convolutions, per level the head's tensors before torchvision flattens them
    (the same modules, not copies: the detector's own weights)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        classify = self.head.classification_head
        regress = self.head.regression_head
        out: list[torch.Tensor] = []
        for features in self.backbone(images).values():
            # as FCOSClassificationHead.forward and FCOSRegressionHead.forward compute them
            cls_logits = classify.cls_logits(classify.conv(features))
            box_features = regress.conv(features)
            bbox_regression = nn.functional.relu(regress.bbox_reg(box_features))
            bbox_ctrness = regress.bbox_ctrness(box_features)
            out += [cls_logits, bbox_regression, bbox_ctrness]
        return tuple(out)


class _NetworkBackbone(nn.Module):
    """Stands in for the FCOS backbone: calls the network (a :class:`HeadOutputs` or its
    export) once on the batch and gives each level's three outputs joined along the channels,
    which :class:`_NetworkHead` takes apart again (torchvision reads only the maps' sizes
    between the two: anchors and positions per level)."""

    def __init__(
        self, network: nn.Module, out_channels: int, levels: int, min_side: int = 0
    ) -> None:
        super().__init__()
        # not a submodule: the network belongs to the caller (a loaded program or a torch one)
        self._network = (network,)
        self.out_channels = out_channels
        self.levels = levels
        self.min_side = min_side

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        height, width = int(images.shape[-2]), int(images.shape[-1])
        if min(height, width) < self.min_side:
            raise InputError(
                f"the .pt2 detector takes images of at least {self.min_side} px a side as it "
                f"sees them (resized and padded); this one is {width}x{height}: use the ONNX "
                "export or the torch weights, or a larger input_size"
            )
        outs = self._network[0](images.float())
        if isinstance(outs, torch.Tensor) or len(outs) != len(PARTS) * self.levels:
            got = 1 if isinstance(outs, torch.Tensor) else len(outs)
            raise UsageError(
                f"the detector network returned {got} tensors, not {len(PARTS) * self.levels} "
                f"({len(PARTS)} per pyramid level): not an export of this detector"
            )
        return OrderedDict(
            (str(level), torch.cat(list(outs[3 * level : 3 * level + 3]), dim=1))
            for level in range(self.levels)
        )


class _NetworkHead(nn.Module):
    """Stands in for the FCOS head: each level's joined outputs split into class logits, box
    regression and centre-ness, flattened and concatenated exactly as torchvision's
    FCOSClassificationHead and FCOSRegressionHead do."""

    def __init__(self, num_anchors: int, num_classes: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes

    @staticmethod
    def _flat(t: torch.Tensor, width: int) -> torch.Tensor:
        n, _, h, w = t.shape
        return t.view(n, -1, width, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, width)

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        a, k = self.num_anchors, self.num_classes
        cls, reg, ctr = [], [], []
        for joined in x:
            c, r, t = joined.split([a * k, a * 4, a], dim=1)
            cls.append(self._flat(c, k))
            reg.append(self._flat(r, 4))
            ctr.append(self._flat(t, 1))
        return {
            "cls_logits": torch.cat(cls, dim=1),
            "bbox_regression": torch.cat(reg, dim=1),
            "bbox_ctrness": torch.cat(ctr, dim=1),
        }


def _check_fcos(arch: Mapping[str, Any]) -> None:
    if arch.get("family") != "fcos":
        raise UsageError(
            f"only FCOS detectors run as an exported network; these weights are "
            f"{arch.get('family')!r} (run them with their torch weights)"
        )


def fcos_running(network: nn.Module, card: Mapping[str, Any], *, min_side: int = 0) -> nn.Module:
    """torchvision's FCOS of the weights' ``card`` (built without loading weights) whose
    backbone and head hand it ``network``'s outputs: the run's detector for an exported
    network (and, in the parity metric, for the torch one). A batch whose padded side is under
    ``min_side`` is refused in one line (what a .pt2 program cannot take)."""
    from vlm_driving.models import build_detector, state_from_card

    arch = state_from_card(card)
    _check_fcos(arch)
    shell = build_detector(arch)
    head = shell.head.classification_head
    levels = len(shell.anchor_generator.sizes)
    shell.backbone = _NetworkBackbone(network, shell.backbone.out_channels, levels, min_side)
    shell.head = _NetworkHead(head.num_anchors, head.num_classes)
    return shell.eval()


# --------------------------------------------------------------------------- the deploy spec


def _load(weights: str, params: TaskParams) -> LoadedModel:
    from vlm_core.weights import load_model
    from vlm_driving.detector import DETECTOR

    if getattr(params, "coco_model", ""):
        raise UsageError(
            "vlm export driving.detect exports trained detector weights (--weights), not a "
            "COCO model"
        )
    loaded = load_model(weights, DETECTOR)
    if not loaded.exported:
        _check_fcos(dict(loaded.module.arch))
    return loaded


def _network(loaded: LoadedModel) -> nn.Module:
    levels = len(loaded.module.anchor_generator.sizes)
    if levels != LEVELS:
        raise UsageError(f"this FCOS has {levels} pyramid levels; export takes {LEVELS}")
    return HeadOutputs(loaded.module)


def _transform(loaded: LoadedModel) -> nn.Module:
    """A copy of the detector's resize-and-normalise at the weights' own input size (the
    cached module's may hold another run's ``input_size``)."""
    arch = loaded.card["architecture"]
    transform = copy.copy(loaded.module.transform)
    transform.min_size = (int(arch["min_size"]),)
    transform.max_size = int(arch["max_size"])
    return transform


def preprocessed(loaded: LoadedModel, frames: Sequence[Any]) -> torch.Tensor:
    """(H, W, 3) uint8 frames of one size as the network's input: resized, normalised and
    padded to multiples of 32 by the detector's own transform, at its default input size."""
    import numpy as np

    batch = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float() / 255.0
             for f in frames]  # fmt: skip
    with torch.no_grad():
        images, _ = _transform(loaded)(batch)
    return images.tensors.contiguous()


def _example(loaded: LoadedModel) -> tuple[torch.Tensor, ...]:
    """Two 400x224 scenes (the training size) as the run sees them: (2, 3, 224, 416). Two, not
    one: torch.export specialises an axis of size 1. Only traced, never measured."""
    from vlm_driving.scenes import scene

    return (preprocessed(loaded, [scene(s, 400, 224).image for s in (0, 1)]),)


def _cases(loaded: LoadedModel, count: int, seed: int) -> ParityCases:
    from vlm_core.deploy.spec import ParityCases
    from vlm_driving.scenes import scene

    inputs = []
    next_seed = seed
    for i in range(count):
        width, height = CASE_SIZES[i % len(CASE_SIZES)]
        size = 1 + i % 3
        frames = [scene(next_seed + j, width, height).image for j in range(size)]
        next_seed += size
        inputs.append((preprocessed(loaded, frames),))

    def metric(network: Any) -> float:
        from vlm_driving.detector import Detector
        from vlm_driving.heldout import evaluate_scenes

        report = evaluate_scenes(
            Detector(loaded, network=network), count=METRIC_SCENES, seed=seed, size=(400, 224)
        )
        return float(report["metrics"]["map_50"])

    return ParityCases(
        inputs=inputs,
        metric=metric,
        metric_name="mAP@.5",
        higher_is_better=True,
        metric_count=METRIC_SCENES,
    )


def deploy_spec() -> DeploySpec:
    """driving.detect's :class:`~vlm_core.deploy.spec.DeploySpec` (``TaskSpec.deploy``)."""
    from vlm_core.deploy.spec import Axis, DeploySpec, TensorSpec

    images = TensorSpec(
        "images",
        {
            0: Axis("batch", 1, 64),
            2: Axis("height", MIN_SIDE, 4096, multiple=32),
            3: Axis("width", MIN_SIDE, 4096, multiple=32),
        },
    )
    return DeploySpec(
        load=_load,
        inputs=(images,),
        outputs=output_names(),
        example=_example,
        cases=_cases,
        network=_network,
        note=NOTE,
    )
