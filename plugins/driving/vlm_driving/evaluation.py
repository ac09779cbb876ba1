"""Detection metrics: COCO mAP@[.5:.95], mAP@.5 and per-class AP through torchmetrics
(whose ``pycocotools`` backend is COCOeval itself), and COCOeval run directly on exported COCO
JSON, to check that both agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

SUMMARY = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


def metric_name(class_name: str) -> str:
    """``ap_<class>`` with spaces as underscores (``ap_traffic_light``)."""
    return "ap_" + class_name.replace(" ", "_")


class DetectionMAP(MeanAveragePrecision):
    """torchmetrics' COCO mAP as flat scalars: ``map``, ``map_50``, ``map_75``, by size, and
    ``ap_<class>`` (AP@[.5:.95]) for each class with ground truth or predictions. Labels are
    class index + 1, as the detectors use them."""

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
