"""The procedural road scenes: reproducible, every class present, boxes that are what the
image shows (occlusion and truncation), and drives whose objects keep their ids."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from street_worlds import car, street
from vlm_driving.classes import CLASSES
from vlm_driving.datasets import read_detection_data
from vlm_driving.scenes import Drive, render, scene, write_dataset


def test_scenes_are_reproducible_and_their_boxes_lie_in_the_image() -> None:
    a, b = scene(3), scene(3)
    assert a.image.shape == (224, 400, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.xyxy, b.xyxy)
    assert not np.array_equal(a.image, scene(4).image)
    for seed in range(10):
        f = scene(seed, 320, 180)
        assert f.xyxy.shape == (len(f.labels), 4)
        assert (
            (f.xyxy[:, :2] >= 0).all()
            and (f.xyxy[:, 2] <= 320).all()
            and (f.xyxy[:, 3] <= 180).all()
        )
        assert (f.xyxy[:, 2:] > f.xyxy[:, :2]).all()
        assert set(f.labels) <= set(CLASSES)
        assert len(set(f.ids.tolist())) == len(f.ids)


def test_every_class_appears_in_a_few_dozen_scenes() -> None:
    counts = Counter(label for seed in range(40) for label in scene(seed).labels)
    assert set(counts) == set(CLASSES), counts
    assert counts["car"] >= 40  # at least one car per scene on average


def test_a_car_hidden_behind_another_is_not_labelled_and_a_half_hidden_one_is_cut() -> None:
    rng = np.random.default_rng(0)
    alone = render(street([car(1, 1.75, 20.0)]), 400, 224, rng)
    assert alone.labels == ("car",)
    hidden = render(street([car(1, 1.75, 20.0), car(2, 1.75, 10.0)]), 400, 224, rng)
    assert hidden.ids.tolist() == [2]  # the far car is fully behind the near one
    half = render(street([car(1, 1.75, 20.0), car(2, 2.6, 10.0)]), 400, 224, rng)
    assert sorted(half.ids.tolist()) == [1, 2]
    far_alone = alone.xyxy[0]
    far_half = half.xyxy[half.ids.tolist().index(1)]
    assert far_half[2] - far_half[0] < far_alone[2] - far_alone[0]  # its visible part only
    assert far_half[0] == far_alone[0]  # its left side is still seen


def test_a_car_leaving_the_picture_keeps_the_box_of_its_visible_part() -> None:
    rng = np.random.default_rng(0)
    frame = render(street([car(1, -1.2, 4.0)]), 400, 224, rng)
    assert frame.labels == ("car",) and frame.xyxy[0, 0] == 0  # truncated at the left edge


def test_a_drive_keeps_ids_while_cars_stay_in_view() -> None:
    drive = Drive(seed=2, width=320, height=180, fps=10)
    frames = [drive.step() for _ in range(20)]
    seen = [set(f.ids.tolist()) for f in frames]
    steady = set.intersection(*seen)
    assert steady, "some objects stay in view for two seconds"
    for obj in steady:  # a kept object moves smoothly (no jumps between frames)
        centres = [f.xyxy[f.ids.tolist().index(obj)] for f in frames]
        steps = np.abs(np.diff(np.asarray(centres)[:, [0, 2]].mean(axis=1)))
        assert steps.max() < 40, steps


def test_data_sets_in_both_formats_read_back(tmp_path: Path) -> None:
    coco = write_dataset(tmp_path / "coco", 4, (200, 112), seed=10)
    yolo = write_dataset(tmp_path / "yolo", 4, (200, 112), seed=10, fmt="yolo")
    a, b = read_detection_data(coco), read_detection_data(yolo)
    assert a.class_names == b.class_names == CLASSES
    for x, y in zip(a.items, b.items, strict=True):
        assert x.labels == y.labels and np.allclose(x.xyxy, y.xyxy, atol=0.01)
        assert x.labels == scene(10 + a.items.index(x), 200, 112).labels
