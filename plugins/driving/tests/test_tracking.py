"""The ByteTrack-style tracker and the MOT metrics, on tiny synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
from vlm_driving.mot import FrameBoxes, mot_metrics
from vlm_driving.tracking import ByteTracker, TrackedFrame, TrackerConfig, _linear_assignment

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def box(cx: float, cy: float, w: float = 40.0, h: float = 40.0) -> list[float]:
    """An x1, y1, x2, y2 box centred on (cx, cy)."""
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(
    boxes: list[list[float]], scores: list[float] | None = None, labels: list[int] | None = None
) -> Detections:
    """One frame's detections; scores default to 0.9 and labels to 0."""
    n = len(boxes)
    return (
        np.array(boxes, dtype=np.float32).reshape(n, 4),
        np.array([0.9] * n if scores is None else scores, dtype=np.float32),
        np.array([0] * n if labels is None else labels, dtype=np.int64),
    )


NO_DETECTIONS = dets([])


def track(frames: list[Detections], config: TrackerConfig | None = None) -> list[TrackedFrame]:
    tracker = ByteTracker(config)
    return [tracker.update(*frame) for frame in frames]


def ids_of(frame: TrackedFrame) -> list[int]:
    return frame.track_ids.tolist()


# (a) ------------------------------------------------------------------------------------------


def test_two_objects_on_straight_lines_with_jitter_keep_their_ids() -> None:
    rng = np.random.default_rng(0)
    starts, velocities = np.array([[60.0, 100.0], [500.0, 300.0]]), np.array([[4, 1.0], [-3, -2]])
    gt, frames = [], []
    for t in range(50):
        centres = starts + t * velocities
        truth = np.array([box(*c) for c in centres])
        gt.append(FrameBoxes(truth, np.array([1, 2])))
        frames.append(dets((truth + rng.normal(0, 1.5, truth.shape)).tolist(), [0.9, 0.8]))

    out = track(frames)

    pred = [FrameBoxes(f.xyxy, f.track_ids, f.labels) for f in out]
    metrics = mot_metrics(gt, pred)
    assert metrics["id_switches"] == 0
    assert metrics["mota"] == 1.0 and metrics["idf1"] == 1.0
    assert metrics["num_matches"] == 100 and metrics["num_gt_tracks"] == 2
    assert {i for f in out for i in ids_of(f)} == {1, 2}
    # the boxes reported are the detections themselves, not the Kalman filter's
    for frame, detections in zip(out, frames, strict=True):
        order = np.argsort(np.linalg.norm(frame.xyxy[:, None] - detections[0][None], axis=2), 1)
        np.testing.assert_array_equal(frame.xyxy, detections[0][order[:, 0]])


# (b) ------------------------------------------------------------------------------------------


def test_crossing_objects_of_different_classes_never_swap_ids() -> None:
    """A car (0) and a pedestrian (5) of one size cross; the car hides it at the crossing."""
    rng = np.random.default_rng(1)
    frames = []
    for t in range(40):
        car_x, person_x = 100.0 + 8 * t, 420.0 - 8 * t
        boxes, labels = [box(car_x, 200)], [0]
        if abs(car_x - person_x) >= 24:  # hidden behind the car while they overlap most
            boxes.append(box(person_x, 200))
            labels.append(5)
        order = rng.permutation(len(boxes))  # the detector's order says nothing
        frames.append(dets([boxes[i] for i in order], labels=[labels[i] for i in order]))

    out = track(frames)

    id_of_label: dict[int, set[int]] = {0: set(), 5: set()}
    for frame in out:
        for label, track_id in zip(frame.labels.tolist(), ids_of(frame), strict=True):
            id_of_label[label].add(track_id)
    assert id_of_label == {0: {1}, 5: {2}}
    assert ids_of(out[-1]) == [1, 2]


def test_a_detection_never_takes_the_id_of_a_track_of_another_class() -> None:
    """A car vanishes; a pedestrian appears exactly where the lost car is predicted to be."""
    frames = [dets([box(100, 100)], labels=[0])] * 5 + [dets([box(100, 100)], labels=[5])] * 3

    out = track(frames)

    assert [ids_of(f) for f in out[5:]] == [[], [2], [2]]
    assert out[-1].labels.tolist() == [5]


# (c) ------------------------------------------------------------------------------------------


def test_a_moving_object_hidden_for_10_frames_gets_its_id_back() -> None:
    rng = np.random.default_rng(2)
    frames = []
    for t in range(40):
        seen = not 20 <= t < 30
        centre = np.array([50.0 + 6 * t, 80.0 + 2 * t]) + rng.normal(0, 1.0, 2)
        frames.append(dets([box(*centre, w=30, h=70)]) if seen else NO_DETECTIONS)

    out = track(frames, TrackerConfig(max_lost=30))

    assert all(ids_of(f) == [1] for f in out[:20])
    assert all(len(f) == 0 for f in out[20:30])
    assert all(ids_of(f) == [1] for f in out[30:])


@pytest.mark.parametrize(("gap", "ids_after"), [(30, [1, 1, 1]), (31, [2, 2])])
def test_a_lost_track_is_kept_for_max_lost_frames(gap: int, ids_after: list[int]) -> None:
    """A still object unseen for max_lost frames is re-found; one frame longer, it is new."""
    seen = [dets([box(200, 150, w=50, h=30)])]
    out = track(seen * 5 + [NO_DETECTIONS] * gap + seen * 3, TrackerConfig(max_lost=30))

    after = [i for f in out[5 + gap :] for i in ids_of(f)]
    assert after == ids_after  # a new track is confirmed on its second frame


def test_for_frame_rate_scales_the_track_buffer() -> None:
    assert TrackerConfig.for_frame_rate(30).max_lost == 30
    assert TrackerConfig.for_frame_rate(15, track_buffer=60, high_score=0.6).max_lost == 30
    assert TrackerConfig.for_frame_rate(10, high_score=0.6).high_score == 0.6


# (d) ------------------------------------------------------------------------------------------


def test_low_score_detections_continue_a_track() -> None:
    frames = [dets([box(100 + 3 * t, 100)], [0.9 if t < 5 else 0.2]) for t in range(15)]

    out = track(frames)

    assert [ids_of(f) for f in out] == [[1]] * 15
    np.testing.assert_allclose(out[-1].scores, [0.2])


@pytest.mark.parametrize("score", [0.2, 0.45, 0.55])
def test_detections_below_new_track_score_never_start_a_track(score: float) -> None:
    out = track([dets([box(100 + 3 * t, 100)], [score]) for t in range(10)])

    assert all(len(f) == 0 for f in out)


def test_detections_below_low_score_are_ignored() -> None:
    frames = [dets([box(100, 100)])] * 3 + [dets([box(100, 100)], [0.05])] * 3

    out = track(frames)

    assert [ids_of(f) for f in out] == [[1]] * 3 + [[]] * 3


# (e) ------------------------------------------------------------------------------------------


def test_ids_are_never_reused_after_a_track_dies() -> None:
    a, b = dets([box(100, 100)]), dets([box(400, 300)])
    gone = [NO_DETECTIONS] * 5  # longer than max_lost: the track dies
    frames = [a] * 3 + gone + [b] * 3 + gone + [a] * 3

    out = track(frames, TrackerConfig(max_lost=2))

    assert [i for f in out for i in ids_of(f)] == [1, 1, 1, 2, 2, 3, 3]


def test_a_one_frame_false_alarm_uses_no_id_and_reset_restarts_ids() -> None:
    tracker = ByteTracker()
    tracker.update(*dets([box(100, 100)]))
    tracker.update(*dets([box(100, 100), box(400, 400)]))  # unconfirmed, then dropped
    tracker.update(*dets([box(100, 100)]))
    later = [tracker.update(*dets([box(100, 100), box(300, 50)])) for _ in range(2)]
    assert ids_of(later[-1]) == [1, 2]

    tracker.reset()
    assert ids_of(tracker.update(*dets([box(300, 50)]))) == [1]


# (f) ------------------------------------------------------------------------------------------


def test_mot_metrics_on_a_hand_made_case_with_one_id_switch() -> None:
    """Two still objects over 4 frames: object 1's track id changes 10 → 11 at frame 2;
    object 2 is missed at frame 2 and found at frame 3 with IoU 0.8; frame 1 has a false alarm.
    """
    a, b, far = [0, 0, 10, 10], [50, 50, 60, 60], [200, 200, 210, 210]
    b_shifted = [50, 50, 60, 58]  # IoU 80 / 100
    gt = [(np.array([a, b]), np.array([1, 2]))] * 4
    pred = [
        (np.array([a, b]), np.array([10, 20])),
        (np.array([a, b, far]), np.array([10, 20, 30])),
        (np.array([a]), np.array([11])),
        (np.array([a, b_shifted]), np.array([11, 20])),
    ]

    m = mot_metrics(gt, pred)

    num_gt = 8
    assert m["id_switches"] == 1 and m["misses"] == 1 and m["false_positives"] == 1
    assert m["mota"] == pytest.approx(1 - (1 + 1 + 1) / num_gt)  # 0.625
    # 7 matched pairs (6 matches + the switch), all exact but one at distance 1 - 0.8
    assert m["num_matches"] == 6
    assert m["motp"] == pytest.approx(0.2 / 7)
    # ids 1↔10 (2 frames) and 2↔20 (3 frames): IDF1 = 2 * 5 / (8 gt + 8 predicted boxes)
    assert m["idf1"] == pytest.approx(10 / 16)
    assert m["num_frames"] == 4 and m["num_gt_tracks"] == 2
    assert m["mostly_tracked"] == 1  # object 2 is tracked in 3 of 4 frames: < 80 %
    assert m["fragmentations"] == 1  # object 2: tracked, missed, tracked


def test_mot_metrics_matches_only_boxes_of_one_label_and_iou_threshold() -> None:
    a = np.array([[0, 0, 10, 10]])
    same_label = mot_metrics([FrameBoxes(a, np.array([1]), np.array([0]))], [(a, [7], [0])])
    other_label = mot_metrics([FrameBoxes(a, np.array([1]), np.array([0]))], [(a, [7], [3])])
    assert same_label["mota"] == 1.0
    assert other_label["misses"] == 1 and other_label["false_positives"] == 1

    half = np.array([[0, 0, 10, 5]])  # IoU 0.5 with a
    assert mot_metrics([(a, [1])], [(half, [7])], iou=0.5)["num_matches"] == 1
    assert mot_metrics([(a, [1])], [(half, [7])], iou=0.6)["num_matches"] == 0


def test_mot_metrics_rejects_sequences_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="same frames"):
        mot_metrics([(np.zeros((0, 4)), np.zeros(0))], [])


# (g) ------------------------------------------------------------------------------------------


def test_empty_frames() -> None:
    tracker = ByteTracker()
    empty = tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    assert empty.xyxy.shape == (0, 4) and empty.xyxy.dtype == np.float32
    assert empty.track_ids.shape == (0,) and empty.track_ids.dtype == np.int64
    assert empty.scores.shape == (0,) and empty.labels.shape == (0,)

    seen = [tracker.update(*dets([box(100, 100)])) for _ in range(3)]
    hidden = [tracker.update(*NO_DETECTIONS) for _ in range(3)]
    back = tracker.update(*dets([box(100, 100)]))
    assert [len(f) for f in hidden] == [0, 0, 0]
    assert ids_of(seen[-1]) == ids_of(back) == [1]

    no_frames = [(np.zeros((0, 4)), np.zeros(0, dtype=int))] * 3
    assert mot_metrics(no_frames, no_frames)["num_frames"] == 3
    missed = mot_metrics([(np.array([box(5, 5)]), np.array([1]))], no_frames[:1])
    assert missed["misses"] == 1 and missed["mota"] == 0.0


def test_malformed_detections_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"xyxy \(N, 4\)"):
        ByteTracker().update(np.zeros((2, 4)), np.zeros(3), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="integer class indices"):
        ByteTracker().update(np.zeros((1, 4)), np.ones(1), np.zeros(1))
    with pytest.raises(ValueError, match="low_score <= high_score"):
        TrackerConfig(low_score=0.6, high_score=0.5)


def test_assignment_leaves_a_pair_unmatched_rather_than_force_two_poor_matches() -> None:
    """As ByteTrack's lapjv with a cost limit: one good match beats two poor ones."""
    cost = np.array([[0.1, 0.5], [0.5, np.inf]])
    assert _linear_assignment(cost, max_cost=0.8) == [(0, 0)]
    assert _linear_assignment(cost, max_cost=0.4) == [(0, 0)]
    assert _linear_assignment(np.array([[0.9]]), max_cost=0.8) == []
