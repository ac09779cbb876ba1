"""The project's mAP (torchmetrics) equals pycocotools' COCOeval run on the exported COCO
JSON of the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vlm_driving.classes import CLASSES
from vlm_driving.evaluation import DetectionMAP, cocoeval, metric_name
from vlm_driving.heldout import coco_pair

from vlm_core.types import Boxes


def _noisy_predictions(seed: int, images: int = 25):  # type: ignore[no-untyped-def]
    """Ground truth of random boxes and predictions near them (misses, false alarms, jitter,
    wrong classes), as the detectors' tensors."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(images):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(8, 90, (n, 2))
        boxes = np.hstack([xy, xy + wh])
        labels = rng.integers(1, len(CLASSES) + 1, n)
        keep = rng.random(n) > 0.15
        jitter = rng.normal(0, 4, (n, 4))
        p_boxes = (boxes + jitter)[keep]
        p_labels = np.where(rng.random(n) < 0.1, rng.integers(1, len(CLASSES) + 1, n), labels)[keep]
        extra = int(rng.integers(0, 3))
        fxy = rng.uniform(0, 300, (extra, 2))
        p_boxes = np.vstack([p_boxes, np.hstack([fxy, fxy + 30])])
        p_labels = np.concatenate([p_labels, rng.integers(1, len(CLASSES) + 1, extra)])
        scores = rng.uniform(0.05, 1.0, len(p_labels))
        gts.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
        preds.append(
            {
                "boxes": torch.tensor(p_boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.tensor(p_labels, dtype=torch.int64),
            }
        )
    return gts, preds


def _as_boxes(d: dict[str, torch.Tensor], scores: bool) -> Boxes:
    n = len(d["labels"])
    return Boxes(
        xyxy=d["boxes"].numpy(),
        labels=tuple(CLASSES[int(i) - 1] for i in d["labels"]),
        scores=d["scores"].numpy() if scores else np.ones(n, np.float32),
        image_size=(400, 400),
        class_names=CLASSES,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_pycocotools_cocoeval_on_the_exported_json(seed: int) -> None:
    gts, preds = _noisy_predictions(seed)
    metric = DetectionMAP(CLASSES)
    metric.update(preds, gts)
    ours = {k: float(v) for k, v in metric.compute().items()}
    truth = [_as_boxes(g, scores=False) for g in gts]
    found = [_as_boxes(p, scores=True) for p in preds]
    theirs = cocoeval(*coco_pair(truth, found))  # COCOeval on the core's exported COCO JSON
    assert 0.2 < ours["map"] < 0.95  # a real mix of hits and misses
    for key in ("map", "map_50", "map_75"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-3), key
    present = {CLASSES[int(i) - 1] for g in gts for i in g["labels"]}
    assert {metric_name(c) for c in present} <= set(ours)


def test_perfect_predictions_score_one() -> None:
    gts, _ = _noisy_predictions(5)
    perfect = [dict(g, scores=torch.ones(len(g["labels"]))) for g in gts]
    metric = DetectionMAP(CLASSES)
    metric.update(perfect, gts)
    values = metric.compute()
    assert float(values["map"]) == pytest.approx(1.0) and float(values["map_50"]) == pytest.approx(
        1.0
    )
