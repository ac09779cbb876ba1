"""Multi-object tracking of per-frame detections in the style of ByteTrack.

ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection Box",
ECCV 2022) keeps the low-score detections that other trackers throw away: they may not start a
track, but they continue one through partial occlusion. Every frame:

1. predict each tracked and lost track with a constant-velocity Kalman filter;
2. match the high-score detections to the tracked and lost tracks (IoU, Hungarian);
3. match the low-score detections to the tracked tracks still unmatched (a stricter IoU);
   tracked tracks still unmatched become lost;
4. match the remaining high-score detections to the unconfirmed tracks (seen once); unconfirmed
   tracks left unmatched are dropped;
5. start unconfirmed tracks from the high-score detections left over that score at least
   ``new_track_score`` (on the very first frame they are confirmed at once);
6. forget lost tracks that have been unmatched for more than ``max_lost`` frames.

Matching is class-aware: a detection only matches a track of its own label.

Differences from the reference implementation: the cost is ``1 - IoU`` without fusing the
detection score in; a track's id is given when it is confirmed, so a one-frame false alarm uses
no id; the tracked/lost duplicate removal is left out; the boxes reported are the detections'
own, not the Kalman filter's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

__all__ = ["ByteTracker", "TrackedFrame", "TrackerConfig"]


@dataclass(frozen=True)
class TrackerConfig:
    """How `ByteTracker` associates detections; the defaults are ByteTrack's for 30 fps video."""

    #: Detections scoring at least this are matched first and may start tracks.
    high_score: float = 0.5
    #: Detections scoring below this are ignored; those between it and `high_score` only
    #: continue tracks that are already tracked.
    low_score: float = 0.1
    #: An unmatched high-score detection starts a new track only if it scores at least this.
    new_track_score: float = 0.6
    #: Minimum IoU of a first-stage match (high-score detections against tracked and lost
    #: tracks); the matching cost is ``1 - IoU``.
    match_iou: float = 0.2
    #: Minimum IoU of a second-stage match (low-score detections against tracked tracks).
    low_match_iou: float = 0.5
    #: Minimum IoU of a match between a leftover high-score detection and an unconfirmed track.
    unconfirmed_match_iou: float = 0.3
    #: Frames a lost track is kept: it can take its id back after up to this many frames unseen.
    max_lost: int = 30

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError(
                f"scores must satisfy 0 <= low_score <= high_score <= 1; got "
                f"low_score={self.low_score}, high_score={self.high_score}"
            )
        for name in ("match_iou", "low_match_iou", "unconfirmed_match_iou"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]; got {value}")
        if self.max_lost < 0:
            raise ValueError(f"max_lost must be >= 0 frames; got {self.max_lost}")

    @classmethod
    def for_frame_rate(cls, fps: float, track_buffer: int = 30, **fields: Any) -> TrackerConfig:
        """A config whose `max_lost` is ``track_buffer`` frames of 30 fps video, scaled to ``fps``.

        ByteTrack's ``max_time_lost = int(fps / 30 * track_buffer)``: the same time span unseen,
        whatever the frame rate. ``fields`` set the other fields.
        """
        if fps <= 0:
            raise ValueError(f"fps must be positive; got {fps}")
        return cls(max_lost=int(fps / 30.0 * track_buffer), **fields)


@dataclass(frozen=True)
class TrackedFrame:
    """The detections of one frame that belong to active tracks (confirmed, matched this frame).

    Rows are sorted by track id.
    """

    #: (K, 4) float32 detection boxes (x1, y1, x2, y2) in pixels, not the Kalman prediction.
    xyxy: np.ndarray
    #: (K,) float32 detection scores.
    scores: np.ndarray
    #: (K,) int64 class indices.
    labels: np.ndarray
    #: (K,) int64 track ids, from 1, never reused by the same tracker.
    track_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.track_ids)


class _KalmanXYAH:
    """ByteTrack's constant-velocity Kalman filter on (cx, cy, aspect, height) and velocities.

    The noise standard deviations are proportional to the box height (DeepSORT's model).
    """

    std_weight_position = 1.0 / 20
    std_weight_velocity = 1.0 / 160

    def __init__(self) -> None:
        self.motion = np.eye(8)
        self.motion[:4, 4:] = np.eye(4)  # one frame per step
        self.observe = np.eye(4, 8)

    def initiate(self, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State mean (8,) and covariance (8, 8) of a new track, at rest at ``xyah``."""
        height = xyah[3]
        pos, vel = self.std_weight_position * height, self.std_weight_velocity * height
        std = [2 * pos, 2 * pos, 1e-2, 2 * pos, 10 * vel, 10 * vel, 1e-5, 10 * vel]
        return np.concatenate([xyah, np.zeros(4)]), np.diag(np.square(std))

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The state one frame later."""
        height = mean[3]
        pos, vel = self.std_weight_position * height, self.std_weight_velocity * height
        noise = np.diag(np.square([pos, pos, 1e-2, pos, vel, vel, 1e-5, vel]))
        return self.motion @ mean, self.motion @ cov @ self.motion.T + noise

    def update(
        self, mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The state corrected by the measurement ``xyah``."""
        pos = self.std_weight_position * mean[3]
        measured_cov = self.observe @ cov @ self.observe.T + np.diag(
            np.square([pos, pos, 1e-1, pos])
        )
        gain = cho_solve(cho_factor(measured_cov, lower=True), (cov @ self.observe.T).T).T
        innovation = xyah - self.observe @ mean
        return mean + gain @ innovation, cov - gain @ measured_cov @ gain.T


@dataclass(eq=False)
class _Track:
    """One tracked object: its Kalman state and bookkeeping."""

    mean: np.ndarray  # (8,) cx, cy, aspect, height and their velocities per frame
    cov: np.ndarray  # (8, 8)
    label: int
    last_frame: int  # the frame of the last matched detection
    track_id: int | None = None  # given when the track is confirmed
    lost: bool = False
    detection: int = -1  # this frame's matched detection index, -1 if none

    def xyxy(self) -> np.ndarray:
        """The box of the current state, (4,) x1, y1, x2, y2."""
        cx, cy, aspect, height = self.mean[:4]
        half_w, half_h = aspect * height / 2, height / 2
        return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


def _xyah(xyxy: np.ndarray) -> np.ndarray:
    """(4,) x1, y1, x2, y2 → centre x, centre y, width / height, height."""
    x1, y1, x2, y2 = xyxy.astype(np.float64)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / (y2 - y1), y2 - y1])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) xyxy boxes, by torchvision."""
    iou = box_iou(torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32)))
    result: np.ndarray = np.nan_to_num(iou.numpy())  # 0/0 of two empty boxes → 0
    return result


def _linear_assignment(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Minimum-cost (row, column) pairs, each costing at most ``max_cost``.

    The matrix is padded the way ``lap.lapjv(cost, extend_cost=True, cost_limit=max_cost)`` pads
    it in ByteTrack: leaving a row and a column unmatched costs ``max_cost`` together, so the
    solver never takes a pair dearer than that just to match more. Infinite costs never match.
    """
    rows, cols = cost.shape
    padded = np.full((rows + cols, rows + cols), max_cost / 2)
    padded[rows:, cols:] = 0.0
    padded[:rows, :cols] = np.where(np.isfinite(cost), cost, 2 * max_cost + 1)
    pairs = zip(*linear_sum_assignment(padded), strict=True)
    return [(int(r), int(c)) for r, c in pairs if r < rows and c < cols and cost[r, c] <= max_cost]


def _associate(
    tracks: list[_Track],
    dets: list[int],
    boxes: np.ndarray,
    labels: np.ndarray,
    min_iou: float,
) -> tuple[list[tuple[_Track, int]], list[_Track], list[int]]:
    """Match ``tracks`` to the detections ``dets`` (indices into ``boxes``, ``labels``).

    Returns the (track, detection) matches, the unmatched tracks and the unmatched detections.
    """
    if not tracks or not dets:
        return [], list(tracks), list(dets)
    iou = _iou(np.stack([t.xyxy() for t in tracks]), boxes[dets])
    same_label = np.array([t.label for t in tracks])[:, None] == labels[dets][None, :]
    pairs = _linear_assignment(np.where(same_label, 1.0 - iou, np.inf), 1.0 - min_iou)
    matched_tracks = {r for r, _ in pairs}
    matched_dets = {c for _, c in pairs}
    return (
        [(tracks[r], dets[c]) for r, c in pairs],
        [t for i, t in enumerate(tracks) if i not in matched_tracks],
        [d for j, d in enumerate(dets) if j not in matched_dets],
    )


def _check_detections(
    xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections as float32 (N, 4), float32 (N,), int64 (N,); N may be 0."""
    boxes = np.asarray(xyxy, dtype=np.float32)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"expected xyxy (N, 4), scores (N,) and labels (N,); got shapes {boxes.shape}, "
            f"{scores.shape} and {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) and labels.size:
        raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
    return boxes, scores, labels.astype(np.int64)


class ByteTracker:
    """Gives per-frame detections stable track ids (ByteTrack; see the module docstring).

    Feed it every frame of one video in order, with `update`; `reset` before the next video.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._kalman = _KalmanXYAH()
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart the frame count and the ids at 1 (a new video)."""
        self._frame = 0
        self._next_id = 1
        self._tracked: list[_Track] = []  # confirmed and matched in the last frame
        self._lost: list[_Track] = []  # confirmed, unmatched for at most max_lost frames
        self._unconfirmed: list[_Track] = []  # started in the last frame, not yet confirmed

    def update(self, xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> TrackedFrame:
        """Track one frame's detections.

        Args:
            xyxy: (N, 4) boxes x1, y1, x2, y2 in pixels; N may be 0.
            scores: (N,) confidences in [0, 1].
            labels: (N,) integer class indices.

        Returns:
            The detections that belong to active tracks, with their track ids.
        """
        boxes, scores, labels = _check_detections(xyxy, scores, labels)
        self._frame += 1
        cfg = self.config
        usable = (
            (scores >= cfg.low_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        )
        high = np.flatnonzero(usable & (scores >= cfg.high_score)).tolist()
        low = np.flatnonzero(usable & (scores < cfg.high_score)).tolist()

        pool = self._tracked + self._lost
        for track in pool:
            self._predict(track)
        for track in pool + self._unconfirmed:
            track.detection = -1

        matches, unmatched, high = _associate(pool, high, boxes, labels, cfg.match_iou)
        tracked = [t for t in unmatched if not t.lost]
        low_matches, unmatched, _ = _associate(tracked, low, boxes, labels, cfg.low_match_iou)
        for track in unmatched:
            track.lost = True
        new_matches, _, high = _associate(
            self._unconfirmed, high, boxes, labels, cfg.unconfirmed_match_iou
        )
        for track, det in matches + low_matches + new_matches:
            self._correct(track, boxes[det], det)
        confirmed = [track for track, _ in new_matches]
        started = [
            self._start(boxes[d], labels[d], d) for d in high if scores[d] >= cfg.new_track_score
        ]
        if self._frame == 1:
            confirmed, started = confirmed + started, []
        for track in confirmed:
            track.track_id = self._next_id
            self._next_id += 1

        self._tracked = [t for t in pool if not t.lost] + confirmed
        self._lost = [t for t in pool if t.lost and self._frame - t.last_frame <= cfg.max_lost]
        self._unconfirmed = started
        return self._output(boxes, scores, labels)

    def _predict(self, track: _Track) -> None:
        """Move ``track`` one frame on; a lost track's height stops changing (as ByteTrack)."""
        if track.lost:
            track.mean[7] = 0.0
        track.mean, track.cov = self._kalman.predict(track.mean, track.cov)

    def _correct(self, track: _Track, box: np.ndarray, det: int) -> None:
        """Update ``track`` with its matched detection ``det`` of this frame (re-finding it)."""
        track.mean, track.cov = self._kalman.update(track.mean, track.cov, _xyah(box))
        track.lost, track.last_frame, track.detection = False, self._frame, det

    def _start(self, box: np.ndarray, label: int, det: int) -> _Track:
        """A new track at the detection ``det`` of this frame."""
        mean, cov = self._kalman.initiate(_xyah(box))
        return _Track(mean, cov, int(label), last_frame=self._frame, detection=det)

    def _output(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> TrackedFrame:
        """The confirmed tracks matched this frame, as their detections, by track id."""
        active = sorted(self._tracked, key=lambda t: t.track_id or 0)
        dets = np.array([t.detection for t in active], dtype=np.int64)
        return TrackedFrame(
            xyxy=boxes[dets].reshape(-1, 4),
            scores=scores[dets],
            labels=labels[dets],
            track_ids=np.array([t.track_id for t in active], dtype=np.int64),
        )
