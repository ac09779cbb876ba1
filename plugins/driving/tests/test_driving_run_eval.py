"""`vlm run driving.detect` at its defaults measures what `vlm eval` does on the same images.

A small held-out set (test seeds 7,420,000..) goes through the runner, as `vlm run` runs it,
and through `vlm eval`'s evaluation; the run's boxes are scored against the ground truth with
the evaluation's own metric code (:class:`~vlm_driving.evaluation.DetectionMAP`). At the
run's default score threshold, its mAP is the evaluation's ``map_at_run``; with the
threshold at the evaluation's floor, its mAP and per-class AP@.5 are the evaluation's own.

Why the figures agree to within 1e-3 rather than exactly: the run reports calibrated scores
(a monotone map of the raw scores the evaluation ranks), stored as float32, so boxes whose raw
scores differ near 1 can tie after calibration and pycocotools may order those tied boxes
differently. Any other difference (input size, NMS IoU, boxes per image, the threshold's
scale) moves these figures by whole matches: a hundredth or more on a few images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vlm_driving.evaluation import DetectionMAP
from vlm_driving.shift_data import write_shift_set
from vlm_driving.shifts import TEST_SEED
from vlm_driving.train import VAL_SCORE, score_temperature

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task
from vlm_core.training.api import evaluate_task
from vlm_core.types import Boxes

IMAGES = 8
TOLERANCE = 1e-3


def _run_figures(
    registry, images: list[Path], truth: list[Boxes], params: dict
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The evaluation's metrics of the boxes `vlm run` reports with ``params``."""
    request = RunRequest("driving.detect", [str(p) for p in images], params, device="cpu")
    outcome = run_task(request, registry=registry, keep_results=True)
    names = truth[0].class_names
    metric = DetectionMAP(names)
    for result, gt in zip(outcome.results, truth, strict=True):
        found = result.outputs["detections"]
        assert isinstance(found, Boxes)

        def tensors(boxes: Boxes) -> dict[str, torch.Tensor]:
            labels = [names.index(c) + 1 for c in boxes.labels]
            return {
                "boxes": torch.from_numpy(np.array(boxes.xyxy, np.float32).reshape(-1, 4)),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }

        metric.update(
            [{**tensors(found), "scores": torch.from_numpy(found.scores.astype(np.float32))}],
            [tensors(gt)],
        )
    return {key: float(value) for key, value in metric.compute().items()}


def test_run_at_its_defaults_measures_what_eval_does(tmp_path: Path) -> None:
    from vlm_driving.classes import CLASSES
    from vlm_driving.datasets import read_detection_data
    from vlm_driving.detector import load_detector

    annotations = write_shift_set(tmp_path / "set", "none", IMAGES, TEST_SEED)
    data = read_detection_data(annotations)
    truth = [
        Boxes(
            xyxy=i.xyxy,
            labels=i.labels,
            scores=np.ones(len(i.labels), np.float32),
            image_size=i.size,
            class_names=CLASSES,
        )
        for i in data.items
    ]
    registry = load_registry()
    evaluated = evaluate_task("driving.detect", annotations, params={"eval_all": True},
                              device="cpu", registry=registry).metrics  # fmt: skip
    at_defaults = _run_figures(registry, [i.image for i in data.items], truth, {})
    assert at_defaults["map_50"] == pytest.approx(evaluated["val_map_50_at_run"], abs=TOLERANCE)
    assert at_defaults["map"] == pytest.approx(evaluated["val_map_at_run"], abs=TOLERANCE)

    # the run's threshold at the evaluation's floor (on the run's calibrated scale): COCO mAP
    detector = load_detector()
    floor = detector.score_of(VAL_SCORE)
    assert score_temperature(detector.loaded.card) == detector.score_temperature
    everything = _run_figures(registry, [i.image for i in data.items], truth,
                              {"score_threshold": floor})  # fmt: skip
    assert everything["map_50"] > at_defaults["map_50"]  # the default threshold cuts recall
    for key, value in everything.items():
        if key.startswith(("map", "ap50_")):
            assert value == pytest.approx(evaluated[f"val_{key}"], abs=TOLERANCE), key
