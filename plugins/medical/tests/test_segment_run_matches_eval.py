"""`vlm run medical.segment` at its defaults measures what `vlm eval` measures: the same Dice
on the same held-out images and volumes, because the run takes the window its weights' card
records (the 2D UNet was trained and is evaluated at roi 128; the run's own default is 64)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from vlm_medical.measure import dice_score
from vlm_medical.shift_data import write_shift_set

from vlm_core.runner import RunRequest, run_task
from vlm_core.runstore import RunStore
from vlm_core.training.api import evaluate_task
from vlm_core.weights import load_model

TEST_SEED = 7_300_100  # medical.segment's test range; acceptance figures use 7,200,000+


def run_dice(data: Path, out: Path, **params: object) -> float:
    """Mean Dice of `vlm run`'s masks (its post-processing included) against the labels."""
    images = sorted((data / "imagesTr").iterdir())
    request = RunRequest("medical.segment", [str(p) for p in images], dict(params),
                         out_dir=out, device="cpu", previews=False)  # fmt: skip
    run_task(request, store=RunStore(out.parent / "runs.sqlite"))
    scores = []
    for image in images:
        name = image.name.removesuffix(".nii.gz")
        truth = np.asarray(nib.load(data / "labelsTr" / image.name).dataobj).astype(np.uint8)
        mask = np.asarray(nib.load(out / name / "mask.nii.gz").dataobj).astype(np.uint8)
        scores.append(dice_score(mask.reshape(truth.shape), truth))
    return float(np.mean(scores))


@pytest.mark.slow  # a run and an eval per network: about 10 s on a quiet 2-core machine
@pytest.mark.parametrize("dims, count", [(2, 4), (3, 2)])
def test_run_at_its_defaults_gives_the_dice_eval_gives(tmp_path: Path, dims: int, count: int):
    from vlm_medical.segment import SEGMENTERS, default_weights

    data = write_shift_set(tmp_path / "data", "none", count, TEST_SEED + dims, dims=dims)
    weights = default_weights(dims)
    evaluated = evaluate_task("medical.segment", data, weights=weights, device="cpu")
    assert evaluated.samples == count
    ran = run_dice(data, tmp_path / "out")
    assert ran == pytest.approx(evaluated.metrics["val_dice"], abs=0.005)
    card_roi = load_model(weights, SEGMENTERS[dims]).card["inference"]["roi"]
    if dims == 2:  # the window is the card's, not the parameter's default (64)
        assert card_roi == 128
        smaller = run_dice(data, tmp_path / "out64", roi=64)
        assert smaller != ran  # a window the user gives still wins
