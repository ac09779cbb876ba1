"""CLEAR-MOT and identity metrics of a tracker's output, through ``motmetrics``.

CLEAR-MOT: Bernardin & Stiefelhagen, "Evaluating Multiple Object Tracking Performance", 2008.
IDF1: Ristani et al., "Performance Measures and a Data Set for Multi-Target, Multi-Camera
Tracking", 2016.

``motmetrics.distances.iou_matrix`` (1.4) calls ``np.asfarray``, which NumPy 2 removed, so the
IoU distance matrix is computed here with ``torchvision.ops.box_iou`` under the same convention
(distance ``1 - IoU``; NaN, "never pair", where the IoU is below the threshold). The accumulator
and the metrics are motmetrics' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import motmetrics
import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["FrameBoxes", "mot_metrics"]

#: Our name → motmetrics' metric name.
_METRICS: dict[str, str] = {
    "mota": "mota",
    "motp": "motp",
    "idf1": "idf1",
    "idp": "idp",
    "idr": "idr",
    "id_switches": "num_switches",
    "num_frames": "num_frames",
    "num_gt_tracks": "num_unique_objects",
    "num_gt": "num_objects",
    "num_pred": "num_predictions",
    "num_matches": "num_matches",
    "misses": "num_misses",
    "false_positives": "num_false_positives",
    "mostly_tracked": "mostly_tracked",
    "partially_tracked": "partially_tracked",
    "mostly_lost": "mostly_lost",
    "fragmentations": "num_fragmentations",
}


@dataclass(frozen=True)
class FrameBoxes:
    """The boxes of one frame, ground truth or prediction."""

    #: (N, 4) boxes x1, y1, x2, y2 in pixels; N may be 0.
    xyxy: np.ndarray
    #: (N,) integer track (or object) ids.
    ids: np.ndarray
    #: (N,) integer class indices; when both frames have them, boxes of different classes
    #: never match.
    labels: np.ndarray | None = None


FrameLike = FrameBoxes | tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]


def _frame(frame: FrameLike) -> FrameBoxes:
    """``frame`` as a checked `FrameBoxes` with float (N, 4) boxes."""
    if not isinstance(frame, FrameBoxes):
        frame = FrameBoxes(*frame)
    xyxy = np.asarray(frame.xyxy, dtype=np.float64)
    xyxy = xyxy.reshape(0, 4) if xyxy.size == 0 else xyxy
    ids = np.asarray(frame.ids).reshape(-1)
    labels = None if frame.labels is None else np.asarray(frame.labels).reshape(-1)
    if xyxy.ndim != 2 or xyxy.shape[1] != 4 or len(ids) != len(xyxy):
        raise ValueError(f"expected xyxy (N, 4) and ids (N,); got {xyxy.shape} and {ids.shape}")
    if labels is not None and len(labels) != len(ids):
        raise ValueError(f"expected labels (N,) with N={len(ids)}; got {labels.shape}")
    return FrameBoxes(xyxy, ids, labels)


def iou_distances(gt: FrameBoxes, pred: FrameBoxes, iou: float = 0.5) -> np.ndarray:
    """(N, K) ``1 - IoU`` of ground truth against prediction; NaN where they may not pair.

    A pair may not match when its IoU is below ``iou`` or, with labels on both, when the
    labels differ. This is ``motmetrics.distances.iou_matrix(..., max_iou=1 - iou)``.
    """
    if len(gt.xyxy) == 0 or len(pred.xyxy) == 0:
        return np.empty((len(gt.xyxy), len(pred.xyxy)))
    overlap = box_iou(torch.from_numpy(gt.xyxy), torch.from_numpy(pred.xyxy)).numpy()
    distance = 1.0 - overlap
    allowed = distance <= 1.0 - iou
    if gt.labels is not None and pred.labels is not None:
        allowed &= gt.labels[:, None] == pred.labels[None, :]
    result: np.ndarray = np.where(allowed, distance, np.nan)
    return result


def mot_metrics(
    gt: Sequence[FrameLike], pred: Sequence[FrameLike], iou: float = 0.5
) -> dict[str, float]:
    """CLEAR-MOT and identity metrics of predicted tracks against ground-truth tracks.

    Args:
        gt: per frame, the ground-truth boxes and object ids (`FrameBoxes` or a tuple
            ``(xyxy, ids)`` or ``(xyxy, ids, labels)``).
        pred: per frame, the tracker's boxes and track ids; as many frames as ``gt``.
        iou: the minimum IoU of a match, default 0.5.

    Returns:
        ``mota``; ``motp`` (motmetrics' convention: the mean ``1 - IoU`` of the matches, lower
        is better); ``idf1``, ``idp``, ``idr``; the counts ``id_switches``, ``num_frames``,
        ``num_gt_tracks`` (distinct ground-truth ids), ``num_gt`` and ``num_pred`` (boxes),
        ``num_matches`` (matches that are not id switches), ``misses``, ``false_positives``,
        ``mostly_tracked``, ``partially_tracked``, ``mostly_lost`` and ``fragmentations``.
    """
    if len(gt) != len(pred):
        raise ValueError(f"gt and pred must cover the same frames; got {len(gt)} and {len(pred)}")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1]; got {iou}")
    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for gt_frame, pred_frame in zip(gt, pred, strict=True):
        truth, guess = _frame(gt_frame), _frame(pred_frame)
        accumulator.update(truth.ids, guess.ids, iou_distances(truth, guess, iou))
    summary = motmetrics.metrics.create().compute(
        accumulator, metrics=list(_METRICS.values()), name="tracker"
    )
    row = summary.loc["tracker"]
    return {ours: float(row[theirs]) for ours, theirs in _METRICS.items()}
