"""Detector scores that mean something: temperature scaling of each box's score.

A box's score ``s`` (for FCOS ``sqrt(sigmoid(class logit) * sigmoid(centre-ness))``) is read
as a binary logit ``logit(s)``: whether the box is right, i.e. matches a ground-truth box of
its class at IoU >= 0.5 (greedy, highest score first, each object matched once, as COCO
evaluation matches). One temperature ``T`` is fitted on held-out annotated images by the
core's :func:`~vlm_core.familiarity.calibration.calibrate` (minimum negative log-likelihood),
and the detector then reports ``sigmoid(logit(s) / T)``. The map is increasing, so the boxes'
order, NMS and the boxes above any threshold are the same; a threshold is on the calibrated
scale (the detector asks torchvision for ``sigmoid(T * logit(threshold))``).

``python -m vlm_driving.calibration --data HELD_OUT [--weights W] [--write]`` fits ``T`` for
the weights ``W`` (default: bundled) on an annotated COCO or YOLO data set the weights never
trained on, prints expected calibration error before and after, and with ``--write`` records
``score_calibration`` in the card of the weights' ``model.json``, which every later run reads.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vlm_core.familiarity.calibration import CalibrationReport
    from vlm_driving.datasets import Annotated
    from vlm_driving.detector import Detector

#: The IoU at which a box counts as right.
MATCH_IOU = 0.5
#: Boxes scored: every box the detector returns down to this raw score (COCO evaluation's
#: floor), at most ``max_detections`` per image.
FLOOR = 0.05
#: Scores are kept this far inside (0, 1) before taking their logit.
EPS = 1e-6


def _logit(p: np.ndarray | float) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def calibrated_scores(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(scores) / temperature)`` as float32 (``scores`` unchanged at T = 1)."""
    if temperature == 1.0:
        return np.asarray(scores, dtype=np.float32)
    z = _logit(scores) / temperature
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def raw_threshold(score: float, temperature: float) -> float:
    """The raw score a calibrated ``score`` threshold corresponds to (0 and 1 stay)."""
    if temperature == 1.0 or score <= 0.0 or score >= 1.0:
        return score
    return 1.0 / (1.0 + math.exp(-temperature * float(_logit(score))))


def box_matches(
    xyxy: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    truth_xyxy: np.ndarray,
    truth_labels: np.ndarray,
    iou: float = MATCH_IOU,
) -> np.ndarray:
    """(N,) bool: whether each detected box matches a ground-truth box of its class at IoU >=
    ``iou``; boxes are taken highest score first and each object is matched once."""
    import torch
    from torchvision.ops import box_iou

    right = np.zeros(len(scores), dtype=bool)
    if not len(scores) or not len(truth_labels):
        return right
    found = torch.tensor(np.array(xyxy, dtype=np.float32)).reshape(-1, 4)
    truth = torch.tensor(np.array(truth_xyxy, dtype=np.float32)).reshape(-1, 4)
    ious = box_iou(found, truth).numpy()
    taken = np.zeros(len(truth_labels), dtype=bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        candidates = (truth_labels == labels[i]) & ~taken & (ious[i] >= iou)
        if candidates.any():
            j = int(np.argmax(np.where(candidates, ious[i], -1.0)))
            taken[j] = right[i] = True
    return right


#: One annotated image: (H, W, 3) uint8 pixels, (N, 4) xyxy boxes and their N class names.
Sample = tuple[np.ndarray, np.ndarray, Sequence[str]]


def annotated_samples(items: Iterable[Annotated]) -> Iterator[Sample]:
    """The images of annotated ``items`` with their boxes, decoded one at a time."""
    from PIL import Image

    for item in items:
        with Image.open(item.image) as im:
            yield np.asarray(im.convert("RGB")), item.xyxy, item.labels


def box_logits(
    detector: Detector, samples: Iterable[Sample], *, batch: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, right) of every box the detector finds down to :data:`FLOOR` in ``samples``,
    with its raw scores (temperature 1): ``logit(score)`` and whether the box matches an
    object."""
    from vlm_driving.detector import Detector, DetectSettings

    raw = Detector(detector.loaded, temperature=1.0)
    index = {name: i for i, name in enumerate(raw.class_names)}
    logits: list[np.ndarray] = []
    right: list[np.ndarray] = []
    pending: list[Sample] = []

    def flush() -> None:
        found = raw([pixels for pixels, _, _ in pending], DetectSettings(score=FLOOR))
        for (_, xyxy, labels), dets in zip(pending, found, strict=True):
            truth = np.asarray([index[c] for c in labels], dtype=np.int64)
            logits.append(_logit(dets.scores).astype(np.float32))
            right.append(box_matches(dets.xyxy, dets.scores, dets.labels, xyxy, truth))
        pending.clear()

    for sample in samples:
        pending.append(sample)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    if not logits:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    return np.concatenate(logits), np.concatenate(right)


def fit_score_temperature(
    detector: Detector, items: Sequence[Annotated]
) -> tuple[CalibrationReport, dict[str, Any]]:
    """Fit the score temperature of ``detector`` on held-out annotated ``items``: the core's
    report (temperature, ECE and NLL before and after, boxes) and the card entry to record."""
    from vlm_core.familiarity.calibration import calibrate

    logits, right = box_logits(detector, annotated_samples(items))
    if not len(logits) or right.all() or not right.any():
        from vlm_core.errors import InputError

        raise InputError(
            f"calibration needs both right and wrong boxes; the detector found {len(logits)} "
            f"boxes on {len(items)} images, {int(right.sum())} of them right"
        )
    report = calibrate(logits, right.astype(np.int64))
    entry = {
        **report.to_dict(),
        "images": len(items),
        "right": int(right.sum()),
        "match_iou": MATCH_IOU,
        "floor": FLOOR,
    }
    return report, entry


def record(weights_file: Path, entry: dict[str, Any]) -> Path:
    """Write ``entry`` as ``card.score_calibration`` of the ``model.json`` beside
    ``weights_file`` (atomically); returns that file."""
    from vlm_core.weights.layout import record_in_card

    return record_in_card(weights_file, "score_calibration", entry)


def local_weights_file(weights: str) -> Path:
    """The model file ``weights`` names on this machine (a training or checkpoint folder, or
    the file; empty: the bundled detector's), whose ``model.json`` records the temperature."""
    from vlm_core.weights.layout import trained_weights_file
    from vlm_driving.detector import default_weights

    if not weights:
        return Path(default_weights())
    path = Path(weights).expanduser()
    found = trained_weights_file(path, plugin="driving") if path.is_dir() else None
    return found or path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_driving.calibration",
        description="Fit the detector's score temperature on held-out annotated images.",
    )
    parser.add_argument("--data", type=Path, required=True,
                        help="a COCO or YOLO data set the weights never trained on")  # fmt: skip
    parser.add_argument("--weights", default="",
                        help="a vlm train output folder, checkpoint or model file (default: the "
                        "bundled detector)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=0, help="use at most this many images")
    parser.add_argument("--write", action="store_true",
                        help="record the temperature in the weights' model.json")  # fmt: skip
    args = parser.parse_args(argv)
    from vlm_core.errors import InputError, VLMError
    from vlm_core.training.data_hash import data_fingerprint
    from vlm_driving.datasets import read_detection_data
    from vlm_driving.detector import load_detector

    try:
        data = read_detection_data(args.data)
        items = data.items[: args.limit] if args.limit else data.items
        detector = load_detector(args.weights)
        if tuple(data.class_names) != detector.class_names:
            raise InputError(f"{args.data}: its classes {list(data.class_names)} are not the "
                           f"detector's {list(detector.class_names)}")  # fmt: skip
        _, entry = fit_score_temperature(detector, items)
        entry["data"] = {**data_fingerprint(args.data), "path": Path(args.data).name}
        entry["command"] = ["python", "-m", "vlm_driving.calibration",
                            *(sys.argv[1:] if argv is None else argv)]  # fmt: skip
        print(json.dumps(entry, indent=2))
        if args.write:  # beside the file given (a cached detector may have been read elsewhere)
            print(f"recorded in {record(local_weights_file(args.weights), entry)}")
    except VLMError as exc:
        print(f"error: {exc}")
        return int(getattr(exc, "exit_code", 2)) or 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
