"""The wider training mix of the road scenes (vlm_driving.wide_scenes): its shares, its
crowds, and the train/val layout it writes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image
from vlm_driving import wide_scenes
from vlm_driving.datasets import read_train_val
from vlm_driving.scenes import CROWD
from vlm_driving.shifts import SHIFTS


def test_mix_shares_follow_the_declared_ones() -> None:
    mixes = [wide_scenes.scene_mix(s) for s in range(7_420_000, 7_422_000)]
    looks = Counter(kind for kind, _, _ in mixes)
    n = len(mixes)
    assert abs(looks["night"] / n - wide_scenes.NIGHT) < 0.04
    assert abs(looks["fog"] / n - wide_scenes.FOG) < 0.04
    assert abs(looks["rain"] / n - wide_scenes.RAIN) < 0.04
    dense = [f for _, f, _ in mixes if f is not None]
    assert abs(len(dense) / n - wide_scenes.DENSE) < 0.04
    counts, distances = np.array(dense).T
    assert counts.min() >= wide_scenes.COUNT_RANGE[0] and counts.max() <= wide_scenes.COUNT_RANGE[1]
    assert distances.min() >= 1.0 and distances.max() <= wide_scenes.DISTANCE_RANGE[1]


def test_dense_share_is_a_choice_and_the_default_keeps_the_shipped_mix() -> None:
    """`--dense 0.7` (stage 4 of the detector's fine-tune) gives about that share of denser
    crowds; the default share draws exactly the mix the earlier stages trained on."""
    seeds = range(7_421_000, 7_422_000)
    heavy = [wide_scenes.scene_mix(s, 0.7)[1] is not None for s in seeds]
    assert abs(sum(heavy) / len(heavy) - 0.7) < 0.05
    assert all(
        wide_scenes.scene_mix(s) == wide_scenes.scene_mix(s, wide_scenes.DENSE) for s in seeds
    )
    assert not any(wide_scenes.scene_mix(s, 0.0)[1] for s in seeds)
    with pytest.raises(SystemExit):  # a share outside 0..1 is refused by the CLI
        wide_scenes.main(["/tmp/never-written", "--seed", "1", "--dense", "1.5"])


def test_dense_crowd_scales_every_class() -> None:
    crowd = wide_scenes._crowd(2.0, 1.5)
    for cls, (lo, hi, z0, z1) in CROWD.items():
        assert crowd[cls][:2] == (round(lo * 2), max(1, round(hi * 2)))
        assert np.isclose(crowd[cls][2], z0 * 1.5) and np.isclose(crowd[cls][3], z1 * 1.5)


def test_writes_a_train_and_a_shift_val_split(tmp_path) -> None:
    seed = 7_420_100
    wide_scenes.write_wide_set(tmp_path, 2, seed, sizes=[(96, 64)])
    wide_scenes.write_shift_val(tmp_path, len(SHIFTS), seed, size=(96, 64))
    train, val, _ = read_train_val(tmp_path, val_fraction=0.5, seed=0)
    assert len(train) == 2 and len(val) == len(SHIFTS)
    assert train[0].size == (64, 96)
    written = np.asarray(Image.open(train[0].image))
    assert np.array_equal(written, wide_scenes.wide_scene(seed, 96, 64).image)
    assert len(train[0].labels) == len(wide_scenes.wide_scene(seed, 96, 64).labels)
