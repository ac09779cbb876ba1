"""Measuring a detector on generated road scenes it never saw: COCO mAP on still scenes
(torchmetrics, checked against pycocotools' COCOeval on the exported COCO JSON) and tracking
on a generated drive (ID switches, MOTA, IDF1 by motmetrics). The acceptance figures of the
bundled detector come from here (``benchmarks/evaluate.py``, the plugin's tests)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_core.export.boxes import CocoBuilder
from vlm_core.types import Boxes
from vlm_driving.detect import as_boxes
from vlm_driving.detector import Detector, DetectSettings
from vlm_driving.evaluation import DetectionMAP, cocoeval
from vlm_driving.scenes import scene

#: The classes whose ID switches the drive reports on their own.
VEHICLES = frozenset({"car", "truck", "bus", "motorcycle"})
#: Seeds of the held-out scenes: far from the training seeds (0..2999 of the default weights).
HELDOUT_SEED = 900_000
#: The lowest raw score evaluated (COCO evaluation's usual floor; as a calibrated score it is
#: the detector's :meth:`~vlm_driving.detector.Detector.score_of` this, so that calibrated and
#: raw scores are measured on the same boxes, in the same order: the same mAP).
RAW_FLOOR = 0.05


def coco_pair(
    truth: list[Boxes], found: list[Boxes]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ground truth as a COCO document and the detections as COCO results, both through
    the core's COCO exporter (what `vlm run` writes)."""
    gt_builder, dt_builder = CocoBuilder(), CocoBuilder()
    for i, (t, f) in enumerate(zip(truth, found, strict=True)):
        gt_builder.add(f"scene_{i}.png", t)
        dt_builder.add(f"scene_{i}.png", f)
    gt = gt_builder.document()
    for ann in gt["annotations"]:
        ann.pop("score", None)
    ids = {c["name"]: c["id"] for c in gt["categories"]}
    names = {c["id"]: c["name"] for c in dt_builder.document()["categories"]}
    results = [
        {
            "image_id": a["image_id"],
            "category_id": ids.get(names[a["category_id"]], -1),
            "bbox": a["bbox"],
            "score": a["score"],
        }
        for a in dt_builder.annotations
    ]
    return gt, [r for r in results if r["category_id"] > 0]


def evaluate_scenes(
    detector: Detector,
    count: int = 200,
    seed: int = HELDOUT_SEED,
    size: tuple[int, int] = (400, 224),
    batch: int = 8,
    floor: float | None = None,
) -> dict[str, Any]:
    """mAP of ``detector`` on ``count`` generated scenes (seeds ``seed``...), by torchmetrics
    and by COCOeval on the exported JSON, with the largest difference between the two; every
    box down to :data:`RAW_FLOOR` (``floor``: down to this reported score instead)."""
    names = detector.class_names
    floor = detector.score_of(RAW_FLOOR) if floor is None else floor
    metric = DetectionMAP(names)
    truth, found = [], []
    started = time.perf_counter()
    for start in range(0, count, batch):
        frames = [scene(s, *size) for s in range(seed + start, seed + min(count, start + batch))]
        outputs = detector([f.image for f in frames], DetectSettings(score=floor))
        for frame, out in zip(frames, outputs, strict=True):
            labels = np.asarray([names.index(c) for c in frame.labels], np.int64)
            t = as_boxes(frame.xyxy, np.ones(len(labels)), labels, (size[1], size[0]), names)
            f = as_boxes(out.xyxy, out.scores, out.labels, (size[1], size[0]), names)
            truth.append(t)
            found.append(f)
            metric.update(
                [
                    {
                        "boxes": torch.from_numpy(out.xyxy),
                        "scores": torch.from_numpy(out.scores),
                        "labels": torch.from_numpy(out.labels + 1),
                    }
                ],
                [{"boxes": torch.from_numpy(frame.xyxy), "labels": torch.from_numpy(labels + 1)}],
            )
    seconds = time.perf_counter() - started
    ours = {k: round(float(v), 4) for k, v in metric.compute().items()}
    theirs = cocoeval(*coco_pair(truth, found))
    return {
        "scenes": count,
        "seeds": [seed, seed + count - 1],
        "size": list(size),
        "metrics": ours,
        "cocoeval": {k: round(v, 4) for k, v in theirs.items()},
        "max_abs_difference": round(max(abs(ours[k] - theirs[k]) for k in theirs), 6),
        "objects": sum(len(t) for t in truth),
        "seconds": round(seconds, 2),
    }


def evaluate_drive(
    out: Path,
    seconds: float = 10.0,
    seed: int = 1,
    size: tuple[int, int] = (1280, 720),
    weights: str = "",
    device: str = "cpu",
) -> dict[str, Any]:
    """Write a generated drive (MP4 + ground truth), run `driving.detect` on it through the
    runner (so its MP4 reader, tracker and exporters are what is measured) and compare the
    tracks with the ground truth: ID switches, MOTA, IDF1 and the frames per second."""
    import json

    from vlm_core.plugins import load_registry
    from vlm_core.runner import RunRequest, run_task
    from vlm_core.types import Tracks
    from vlm_driving.mot import FrameBoxes, mot_metrics
    from vlm_driving.scenes import write_drive

    video, truth_file = write_drive(out / "drive", seconds, seed=seed, size=size)
    params = {"weights": weights} if weights else {}
    request = RunRequest("driving.detect", [str(video)], params, device=device, out_dir=out / "run")
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    result = outcome.results[0]
    tracks = result.outputs["tracks"]
    assert isinstance(tracks, Tracks)
    truth = [json.loads(line) for line in truth_file.read_text().splitlines()]

    def frames(keep: frozenset[str] | None) -> tuple[list[FrameBoxes], list[FrameBoxes]]:
        gt, pred = [], []
        for t, boxes in zip(truth, tracks.frames, strict=True):
            g = [b for b in t["boxes"] if keep is None or b["label"] in keep]
            xyxy = np.asarray([b["xyxy"] for b in g], np.float32).reshape(-1, 4)
            gt.append(FrameBoxes(xyxy, np.asarray([b["track_id"] for b in g], np.int64)))
            mask = np.asarray([keep is None or label in keep for label in boxes.labels], bool)
            ids = np.asarray(boxes.track_ids, np.int64)
            pred.append(FrameBoxes(boxes.xyxy[mask].reshape(-1, 4), ids[mask]))
        return gt, pred

    mot = mot_metrics(*frames(None), iou=0.5)
    vehicles = mot_metrics(*frames(VEHICLES), iou=0.5)
    summary = result.outputs["summary"]
    return {
        "video": {"seconds": seconds, "size": list(size), "frames": len(truth), "seed": seed},
        "files": sorted(
            str(p.relative_to(out / "run"))
            for p in (out / "run").rglob("*")
            if p.is_file() and "yolo" not in p.parts[-2]
        ),
        "mot": {k: round(float(v), 4) for k, v in mot.items()},
        "mot_vehicles": {k: round(float(v), 4) for k, v in vehicles.items()},
        "summary": {k: round(float(v), 3) for k, v in summary.values.items()},  # type: ignore[union-attr]
    }
