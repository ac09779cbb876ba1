"""`vlm run medical.segment` at its defaults measures what `vlm eval` measures: the same Dice
on the same held-out images and volumes, because the run takes the window its weights' card
records (the 2D UNet was trained and is evaluated at roi 128; the run's own default is 64)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vlm_medical.run_check import run_dice
from vlm_medical.shift_data import write_shift_set

from vlm_core.runstore import RunStore
from vlm_core.training.api import evaluate_task
from vlm_core.weights import load_model

TEST_SEED = 7_300_100  # medical.segment's test range; acceptance figures use 7,200,000+


@pytest.mark.parametrize(
    "dims, count",
    [(2, 4), pytest.param(3, 2, marks=pytest.mark.slow)],  # the 3D UNet's run: about 6 s
)
def test_run_at_its_defaults_gives_the_dice_eval_gives(tmp_path: Path, dims: int, count: int):
    from vlm_medical.segment import SEGMENTERS, default_weights

    data = write_shift_set(tmp_path / "data", "none", count, TEST_SEED + dims, dims=dims)
    weights = default_weights(dims)
    evaluated = evaluate_task("medical.segment", data, weights=weights, device="cpu")
    assert evaluated.samples == count
    store = RunStore(tmp_path / "runs.sqlite")
    ran, images = run_dice(data, tmp_path / "out", store=store)
    assert images == count
    assert ran == pytest.approx(evaluated.metrics["val_dice"], abs=0.005)
    card_roi = load_model(weights, SEGMENTERS[dims]).card["inference"]["roi"]
    if dims == 2:  # the window is the card's, not the parameter's default (64)
        assert card_roi == 128
        smaller, _ = run_dice(data, tmp_path / "out64", store=store, roi=64)
        assert smaller != ran  # a window the user gives still wins


def test_a_volume_smaller_than_the_window_is_measured_as_the_run_segments_it(tmp_path: Path):
    """A 48³ volume under the 3D card's 64³ window: the run cuts the window to the volume, and
    eval windows through the same function (it used to pad to 64³ with zeros, and measured
    Dice about 0.5 where the run's masks had 0.97)."""
    from vlm_medical.synthetic import write_dataset

    data = write_dataset(tmp_path / "data", 1, seed=TEST_SEED + 48, size=48, wide=True,
                         split="validation")  # fmt: skip
    evaluated = evaluate_task("medical.segment", data, device="cpu")
    ran, images = run_dice(data, tmp_path / "out", store=RunStore(tmp_path / "runs.sqlite"))
    assert images == 1 and ran > 0.9
    assert ran == pytest.approx(evaluated.metrics["val_dice"], abs=0.005)
