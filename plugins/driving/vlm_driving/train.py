"""Training `driving.detect` with the core trainer: a torchvision detector (FCOS by default) on
a COCO-format or YOLO-format data set, with detection augmentation, validated by COCO mAP
(torchmetrics on pycocotools). The setup also declares the detector's features
(:mod:`vlm_driving.features`), so training ends by fitting the weights' familiarity model on
the training images as a run sees them (whole, at their own size), and
``vlm train --fit-ood-only`` fits one for weights trained elsewhere."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm_core.errors import InputError
from vlm_core.tasks import TrainContext
from vlm_core.training import TrainSetup
from vlm_driving.augment import AugmentConfig, DetectionDataset, collate
from vlm_driving.calibration import raw_threshold
from vlm_driving.classes import COCO_TO_DRIVING
from vlm_driving.datasets import read_detection_data, read_train_val
from vlm_driving.evaluation import detection_metrics
from vlm_driving.features import detect_with_features
from vlm_driving.models import build_detector, coco_detector, set_postprocess, state_from_card
from vlm_driving.params import DetectParams, DetectTrainParams

#: Validation keeps every box above this score, as COCO evaluation expects.
VAL_SCORE = 0.05
#: The run parameters a detector's weights decide for `vlm run` (their card's ``inference``)
#: and that validation measures at: the NMS IoU, the most boxes per image, and the score
#: threshold of the run's boxes (the ``*_at_run`` metrics; mAP itself ranks every box down to
#: VAL_SCORE). The input size is the weights' own already (their architecture's min/max size).
RUN_SETTINGS = ("score_threshold", "nms_iou", "max_detections")


def run_settings(card: dict[str, Any] | None) -> dict[str, Any]:
    """The settings of :data:`RUN_SETTINGS` a run of weights with ``card`` uses by default:
    the card's ``inference`` entry where it has one, else the run parameters' defaults."""
    recorded = dict((card or {}).get("inference") or {})
    defaults = DetectParams()
    return {key: recorded.get(key, getattr(defaults, key)) for key in RUN_SETTINGS}


def score_temperature(card: dict[str, Any] | None) -> float:
    """The temperature of the card's score calibration (1: scores are raw)."""
    fitted = (card or {}).get("score_calibration")
    return float(fitted.get("temperature", 1.0)) if isinstance(fitted, dict) else 1.0


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # type: ignore[no-any-return]


@contextlib.contextmanager
def _loss_mode(model: nn.Module) -> Iterator[None]:
    """Make an eval-mode torchvision detector return its losses: only the detector and its
    proposal/ROI heads switch to training behaviour; the backbone's batch norm stays in eval."""
    parts = [
        m
        for m in (model, getattr(model, "rpn", None), getattr(model, "roi_heads", None))
        if m is not None
    ]
    before = [m.training for m in parts]
    for m in parts:
        m.training = True
    try:
        yield
    finally:
        for m, was in zip(parts, before, strict=True):
            m.training = was


def _targets(targets: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def detection_loss(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """The detector's summed losses (each also logged); in validation, without touching the
    backbone's statistics."""
    images, targets = batch
    inner = _unwrap(model)
    context = contextlib.nullcontext() if inner.training else _loss_mode(inner)
    with context:
        losses = model(list(images), _targets(targets))
    total = sum(losses.values())
    return {"loss": total, **{k: v.detach() for k, v in losses.items()}}  # type: ignore[dict-item]


def detection_predict(
    model: nn.Module, batch: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    images, targets = batch
    outputs = _unwrap(model)(list(images))
    preds = [
        {"boxes": o["boxes"].float(), "scores": o["scores"].float(), "labels": o["labels"]}
        for o in outputs
    ]
    return preds, _targets(targets)


def detection_features(model: nn.Module, batch: Any) -> torch.Tensor:
    """(B, D): each image's pooled pyramid features, from the forward pass a run makes."""
    images, _ = batch
    inner = _unwrap(model)
    _, rows = detect_with_features(inner, inner, list(images))
    assert rows is not None
    return rows


def _model(
    params: DetectTrainParams,
    class_names: tuple[str, ...],
    size: tuple[int, int],
    ctx: TrainContext,
) -> nn.Module:
    height, width = size
    card = ctx.weights_card
    if "architecture" in card:  # evaluating trained weights: their architecture
        arch = state_from_card(card)
        if tuple(arch["class_names"]) != class_names:
            raise InputError(
                f"the weights detect {', '.join(arch['class_names'])}; the data's classes are "
                f"{', '.join(class_names)}"
            )
        return build_detector(arch)
    if params.init_weights:
        return _fine_tuned(params.init_weights, class_names, ctx)
    if params.coco_weights:
        source, _, name = params.backbone.partition(":")
        if source != "torchvision":
            raise InputError(
                "coco_weights need a torchvision backbone (torchvision:resnet50 or "
                "torchvision:mobilenet_v3_large)"
            )
        model, sha = coco_detector(
            params.family,
            name,
            params.coco_weights,
            class_names,
            COCO_TO_DRIVING,
            min_size=min(size),
            max_size=max(size),
        )
        ctx.logger.info("starting from COCO weights %s (sha256 %s)", params.coco_weights, sha[:12])
        return model
    arch = {
        "family": params.family,
        "backbone": params.backbone,
        "class_names": list(class_names),
        "min_size": min(height, width),
        "max_size": max(height, width),
        "fpn_channels": params.fpn_channels,
        "head_convs": params.head_convs,
    }
    return build_detector(arch, backbone_weights=params.backbone_weights or None)


def _fine_tuned(weights: str, class_names: tuple[str, ...], ctx: TrainContext) -> nn.Module:
    from vlm_core.weights import load_model
    from vlm_driving.detector import DETECTOR

    trained = load_model("" if weights == "bundled" else weights, DETECTOR, fresh=True,
                         param="init_weights")  # fmt: skip
    arch = state_from_card(trained.card)
    if tuple(arch["class_names"]) != class_names:
        raise InputError(
            f"{trained.path} detects {', '.join(arch['class_names'])}; the data's "
            f"classes are {', '.join(class_names)}"
        )
    ctx.logger.info("fine-tuning %s (sha256 %s)", trained.path, trained.sha256[:12])
    return trained.module


def build(data: Path, params: DetectTrainParams, ctx: TrainContext) -> TrainSetup:
    """The TrainSetup of `vlm train driving.detect --data COCO_JSON_OR_YOLO_FOLDER`."""
    if ctx.purpose == "eval" and params.eval_all:
        whole = read_detection_data(data)
        train, val, class_names = [], whole.items, whole.class_names
    else:
        train, val, class_names = read_train_val(
            data, val_fraction=params.val_fraction, seed=ctx.seed
        )
    if ctx.purpose in ("train", "fit") and not train:
        raise InputError(f"{data}: no training images after holding out {params.val_fraction}")
    size = (params.image_height, params.image_width)
    preprocessing = ctx.weights_card.get("preprocessing") if ctx.weights_card else None
    if isinstance(preprocessing, dict) and "image_size" in preprocessing:
        size = tuple(preprocessing["image_size"])  # type: ignore[assignment]
    model = _model(params, class_names, size, ctx)
    run = run_settings(ctx.weights_card)
    set_postprocess(model, score=VAL_SCORE, nms_iou=run["nms_iou"],
                    max_detections=run["max_detections"])  # fmt: skip
    # the run's threshold is on the calibrated scale; validation sees the network's raw scores
    run_score = raw_threshold(run["score_threshold"], score_temperature(ctx.weights_card))
    augment = (
        AugmentConfig()
        if params.augment
        else AugmentConfig(photometric_p=0, zoom_out_p=0, crop_p=0, flip_p=0)
    )
    train_set = DetectionDataset(train, class_names, size, train=True, config=augment)
    # fitting a familiarity model sees images as a run does: whole, at their own size
    fit = ctx.purpose == "fit"
    val_size = None if fit else size
    val_set = DetectionDataset(val, class_names, val_size, train=False) if val else None
    fit_set = DetectionDataset(train, class_names, None, train=False)
    ctx.logger.info(
        "detector %s on %s: %d training images, %d validation images, %d classes, %.2f M "
        "parameters, input %dx%d",
        getattr(model, "arch", {}).get("family"),
        getattr(model, "arch", {}).get("backbone"),
        len(train),
        len(val),
        len(class_names),
        sum(p.numel() for p in model.parameters()) / 1e6,
        size[1],
        size[0],
    )
    return TrainSetup(
        model=model,
        train_data=train_set,
        val_data=val_set,
        loss=detection_loss,
        predict=detection_predict,
        metrics=lambda: detection_metrics(class_names, run_score),
        monitor="val_map",
        mode="max",
        collate=collate,
        features=detection_features,
        fit_data=fit_set,
        card={
            "architecture": getattr(model, "arch", {}),
            "class_names": list(class_names),
            "preprocessing": {"image_size": list(size), "range": [0.0, 1.0]},
            # what validation measured at: a run of these weights takes them by default
            "inference": run,
        },
    )
