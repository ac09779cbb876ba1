"""Detection metrics: COCO mAP@[.5:.95], mAP@.5 and per-class AP (at IoU .5:.95 and at .5)
through torchmetrics
(whose ``pycocotools`` backend is COCOeval itself), and COCOeval run directly on exported COCO
JSON, to check that both agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

SUMMARY = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


def metric_name(class_name: str, prefix: str = "ap") -> str:
    """``ap_<class>`` with spaces as underscores (``ap_traffic_light``); ``prefix="ap50"``
    names its AP@.5 (``ap50_traffic_light``)."""
    return f"{prefix}_" + class_name.replace(" ", "_")


class DetectionMAP(MeanAveragePrecision):
    """torchmetrics' COCO mAP as flat scalars: ``map``, ``map_50``, ``map_75``, by size,
    ``ap_<class>`` (AP@[.5:.95]) for each class with ground truth or predictions and
    ``ap50_<class>`` (AP@.5) for each class with ground truth. Labels are class index + 1, as
    the detectors use them.

    AP@.5 of a class is COCOeval's own: the mean of its interpolated precision at IoU .5 over
    the 101 recall points (all areas, 100 detections), from the precision array of
    torchmetrics' extended summary, as COCOeval's summary averages it into ``map_50``."""

    def __init__(self, class_names: Sequence[str]) -> None:
        # COCOeval's own thresholds, in float64: torchmetrics' defaults come from a float32
        # linspace, whose 0.75 IoU and recall points differ in the last bits and moved mAP@.75
        # by 0.001 against COCOeval on the bundled detector's held-out scenes
        super().__init__(
            iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
            rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
            box_format="xyxy",
            iou_type="bbox",
            class_metrics=True,
            extended_summary=True,
            backend="pycocotools",
        )
        self.class_names = tuple(class_names)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        result = super().compute()
        out = {key: result[key].float() for key in SUMMARY}
        classes = result["classes"].reshape(-1).tolist()
        per_class = result["map_per_class"].reshape(-1).tolist()
        for label, ap in zip(classes, per_class, strict=True):
            if 1 <= label <= len(self.class_names) and ap >= 0:
                out[metric_name(self.class_names[label - 1])] = torch.tensor(ap)
        # precision: (IoU thresholds, recall points, classes, areas, max detections), classes
        # in the order of result["classes"]; -1 where a class has no ground truth
        at_50 = result["precision"][0, :, :, 0, -1].double()
        for index, label in enumerate(classes):
            column = at_50[:, index]
            if 1 <= label <= len(self.class_names) and bool((column > -1).any()):
                name = metric_name(self.class_names[label - 1], "ap50")
                out[name] = column[column > -1].mean().float()
        return out


def cocoeval(gt: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools' COCOeval of ``detections`` (COCO results: image_id, category_id, bbox
    xywh, score) against the ground truth document ``gt``: its mAP@[.5:.95] and mAP@.5."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections) if detections else COCO()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)
    return {"map": float(stats[0]), "map_50": float(stats[1]), "map_75": float(stats[2])}


class RunPointMAP(MeanAveragePrecision):
    """COCO ``map`` and ``map_50`` of only the boxes scoring at least ``score`` (as
    ``map_at_run`` and ``map_50_at_run``): what pycocotools says of the boxes a run writes at
    that score threshold. :class:`DetectionMAP` ranks every box down to the evaluation's
    floor (COCO's protocol, the figure weights are judged by); a run reports only the boxes
    above its threshold, so its figure is this one, lower by the recall the threshold cuts."""

    def __init__(self, score: float) -> None:
        super().__init__(
            iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
            rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
            box_format="xyxy",
            iou_type="bbox",
            backend="pycocotools",
        )
        self.score = float(score)

    def update(self, preds: list[dict[str, Any]], target: list[dict[str, Any]]) -> None:  # type: ignore[override]
        kept = []
        for p in preds:
            mask = p["scores"] >= self.score
            kept.append({key: value[mask] for key, value in p.items()})
        super().update(kept, target)

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        result = super().compute()
        return {"map_at_run": result["map"].float(), "map_50_at_run": result["map_50"].float()}


def detection_metrics(class_names: Sequence[str], run_score: float | None = None) -> Any:
    """The validation metrics of a detector: :class:`DetectionMAP`, and with ``run_score``
    (the raw score a run's default threshold stands for) :class:`RunPointMAP` at it."""
    from torchmetrics import MetricCollection

    metrics: dict[str, Any] = {"coco": DetectionMAP(class_names)}
    if run_score is not None:
        metrics["run"] = RunPointMAP(run_score)
    # no compute groups: the two see different boxes even where their states first agree
    return MetricCollection(metrics, compute_groups=False)
