"""`vlm eval driving.detect --shift`: the shifted held-out scenes (test seeds 7,420,000..) and
the per-class AP@.5 the evaluation reports."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from vlm_driving.classes import CLASSES
from vlm_driving.datasets import read_detection_data
from vlm_driving.evaluation import DetectionMAP, metric_name
from vlm_driving.heldout import coco_pair
from vlm_driving.params import DetectTrainParams
from vlm_driving.scenes import random_world, scene
from vlm_driving.shift_data import DENSE_CROWD, shifted_scene, write_eval_set
from vlm_driving.shifts import EVAL_SEED, SHIFTS, TEST_SEED, VALIDATION_SEED

SEEDS = range(TEST_SEED, TEST_SEED + 6)


def test_seed_ranges_are_disjoint_from_the_plugins_others() -> None:
    # detector training, held-out and calibration scenes: below 1,000,000; LiDAR: 8.1M-8.5M
    assert 1_000_000 < EVAL_SEED < VALIDATION_SEED < TEST_SEED < 8_100_000
    assert VALIDATION_SEED - EVAL_SEED >= 10_000 and TEST_SEED - VALIDATION_SEED >= 10_000


def test_no_shift_is_the_generators_own_scene() -> None:
    for seed in SEEDS[:3]:
        plain, unshifted = scene(seed), shifted_scene(seed, "none")
        assert np.array_equal(plain.image, unshifted.image)
        assert plain.labels == unshifted.labels
        assert np.array_equal(plain.xyxy, unshifted.xyxy)


@pytest.mark.parametrize("shift", ["night", "fog", "rain"])
def test_light_and_weather_shifts_keep_the_street_and_change_the_look(shift: str) -> None:
    changes = []
    for seed in SEEDS:
        plain, shifted = shifted_scene(seed, "none"), shifted_scene(seed, shift)
        assert plain.labels == shifted.labels
        assert np.array_equal(plain.xyxy, shifted.xyxy)
        changes.append(np.abs(plain.image.astype(int) - shifted.image.astype(int)).mean())
        if shift == "night":  # never brighter
            assert shifted.image.mean() <= plain.image.mean() + 1
    # a training scene is already at night, in fog or in rain one time in five: unchanged
    assert sum(c < 1 for c in changes) <= 2 and np.mean(changes) > 5


def test_dense_scenes_hold_more_and_smaller_objects() -> None:
    seeds = range(TEST_SEED, TEST_SEED + 20)
    plain = [shifted_scene(s, "none") for s in seeds]
    dense = [shifted_scene(s, "dense") for s in seeds]
    # twice the objects, but many of the farther ones fall under the labelling's minimum size
    assert sum(len(f.labels) for f in dense) > 1.2 * sum(len(f.labels) for f in plain)

    # the worlds behind them: about twice the objects, 1.5 times as far on average
    worlds = [
        (
            random_world(np.random.default_rng(s)),
            random_world(np.random.default_rng(s), crowd=DENSE_CROWD),
        )
        for s in seeds
    ]
    assert sum(len(d.things) for _, d in worlds) > 1.6 * sum(len(w.things) for w, _ in worlds)
    depth = [np.mean([t.z for t in w.things]) for w, _ in worlds]
    dense_depth = [np.mean([t.z for t in d.things]) for _, d in worlds]
    assert np.mean(dense_depth) == pytest.approx(1.5 * np.mean(depth), rel=0.15)


def test_unknown_shift_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown shift 'smog'"):
        shifted_scene(TEST_SEED, "smog")
    assert next(iter(SHIFTS)) == "none"


def test_the_writer_writes_every_scene_at_the_weights_training_size(tmp_path: Path) -> None:
    params = DetectTrainParams(image_width=160, image_height=96)
    annotations = write_eval_set(tmp_path, shift="fog", count=3, seed=TEST_SEED, params=params)
    data = read_detection_data(annotations)
    assert len(data.items) == 3 and {i.size for i in data.items} == {(96, 160)}
    assert data.class_names == CLASSES


def test_cli_refuses_an_unknown_shift_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from vlm_core.cli import main

    with pytest.raises(SystemExit) as info:
        main(["eval", "driving.detect", "--shift", "nigth"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert len(err.splitlines()) == 1 and "unknown shift 'nigth'" in err and "night" in err


def _noisy(seed: int, images: int = 30):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for _ in range(images):
        n = int(rng.integers(1, 8))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(8, 90, (n, 2))])
        labels = rng.integers(1, len(CLASSES) + 1, n)
        found = boxes + rng.normal(0, 6, (n, 4))
        keep = rng.random(n) > 0.2
        gts.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                    "labels": torch.tensor(labels)})  # fmt: skip
        preds.append({"boxes": torch.tensor(found[keep], dtype=torch.float32),
                      "scores": torch.tensor(rng.uniform(0.05, 1, int(keep.sum())),
                                             dtype=torch.float32),
                      "labels": torch.tensor(labels[keep])})  # fmt: skip
    return gts, preds


def test_per_class_ap50_is_cocoevals_own() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from vlm_core.types import Boxes

    gts, preds = _noisy(TEST_SEED)
    metric = DetectionMAP(CLASSES)
    metric.update(preds, gts)
    ours = {k: float(v) for k, v in metric.compute().items()}

    def boxes(d, scores: bool) -> Boxes:  # type: ignore[no-untyped-def]
        n = len(d["labels"])
        labels = tuple(CLASSES[int(i) - 1] for i in d["labels"])
        weights = d["scores"].numpy() if scores else np.ones(n, np.float32)
        return Boxes(xyxy=d["boxes"].numpy(), labels=labels, scores=weights,
                     image_size=(400, 400), class_names=CLASSES)  # fmt: skip

    gt, found = coco_pair([boxes(g, False) for g in gts], [boxes(p, True) for p in preds])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        detections = coco.loadRes(found)
        for category in gt["categories"]:
            evaluator = COCOeval(coco, detections, iouType="bbox")
            evaluator.params.catIds = [category["id"]]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            name = metric_name(category["name"], "ap50")
            assert ours[name] == pytest.approx(evaluator.stats[1], abs=1e-6), name
    per_class = [v for k, v in ours.items() if k.startswith("ap50_")]
    assert len(per_class) == len(CLASSES)
    assert 0.2 < np.mean(per_class) < 0.95  # a real mix of hits and misses
    assert np.mean(per_class) == pytest.approx(ours["map_50"], abs=1e-6)
