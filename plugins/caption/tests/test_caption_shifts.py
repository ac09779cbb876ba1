"""`vlm eval caption.describe --shift`: the named shifts change the photos' exposure, sharpness
and compression as documented and nothing else, draw the same photos from the same seed, and
write a held-out list that `vlm eval` measures whole and `vlm train` refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torchvision.transforms.v2  # noqa: F401  (imported at collection, not in the first test)
from vlm_caption.params import CaptionTrainParams
from vlm_caption.plugin import _describe
from vlm_caption.products import render_photo
from vlm_caption.shift_data import exposure_stops, shifted_pixels, write_eval_set
from vlm_caption.shifts import EVAL_SEED, SHIFTS, TEST_SEED, VAL_SEED
from vlm_caption.train import build

from vlm_core.errors import InputError
from vlm_core.tasks import TrainContext

TASK = "caption.describe"


def _photo(i: int = 0) -> np.ndarray:
    return render_photo(128, TEST_SEED * 1_000_003 + i).pixels


def _sharpness(pixels: np.ndarray) -> float:
    grey = pixels.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_the_task_declares_its_shifts_from_the_acceptance_seed() -> None:
    suite = _describe().shifts
    assert suite is not None and dict(suite.names) == SHIFTS
    assert next(iter(SHIFTS)) == "none" and suite.seed == EVAL_SEED and suite.count >= 500
    assert EVAL_SEED < VAL_SEED < TEST_SEED


def test_each_shift_changes_what_it_says_and_only_that() -> None:
    pixels = _photo()
    seed = TEST_SEED * 1_000_003
    assert np.array_equal(shifted_pixels(pixels, "none", seed), pixels)
    stops = exposure_stops(seed)
    assert abs(stops) == 1.0
    exposed = shifted_pixels(pixels, "exposure", seed).astype(np.float64)
    ratio = exposed.mean() / pixels.astype(np.float64).mean()
    assert (ratio < 0.55) if stops < 0 else (1.3 < ratio <= 2.0)
    blurred = shifted_pixels(pixels, "blur", seed)
    assert _sharpness(blurred) < 0.8 * _sharpness(pixels)
    assert abs(blurred.astype(float).mean() - pixels.astype(float).mean()) < 1.0
    compressed = shifted_pixels(pixels, "jpeg", seed).astype(np.int16)
    assert 0 < np.abs(compressed - pixels).mean() < 6  # lossy, the same picture
    both = shifted_pixels(pixels, "photometric", seed)
    assert np.array_equal(both, shifted_pixels(pixels, "photometric", seed))  # drawn, not random
    assert both.shape == pixels.shape and both.dtype == np.uint8
    signs = {exposure_stops(TEST_SEED * 1_000_003 + i) for i in range(20)}
    assert signs == {-1.0, 1.0}  # darker and brighter photos both occur


def test_the_written_list_is_held_out_and_refused_for_training(tmp_path: Path) -> None:
    listing = write_eval_set(tmp_path / "d", shift="jpeg", count=3, seed=TEST_SEED, params=None)
    assert listing.name == "heldout.csv" and len(list(listing.parent.glob("*.png"))) == 3
    again = write_eval_set(tmp_path / "e", shift="jpeg", count=3, seed=TEST_SEED, params=None)
    assert listing.read_text() == again.read_text()
    ctx = TrainContext(task=TASK, plugin="caption", device="cpu", purpose="train")
    with pytest.raises(InputError, match="held-out evaluation data"):
        build(listing, CaptionTrainParams(image_size=32, width=32, depth=1), ctx)


def test_shift_list_and_an_unknown_shift_through_the_cli(vlm_cli) -> None:
    found = vlm_cli("eval", TASK, "--shift", "list")
    assert found.returncode == 0, found.stderr
    assert [line.split()[0] for line in found.stdout.splitlines()[: len(SHIFTS)]] == list(SHIFTS)
    wrong = vlm_cli("eval", TASK, "--shift", "jpg")
    assert wrong.returncode == 2
    assert "unknown shift 'jpg'" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_eval_measures_every_drawn_photo_through_the_cli(vlm_cli) -> None:
    found = vlm_cli("eval", TASK, "--shift", "jpeg", "--count", "3", "--shift-seed",
                    str(TEST_SEED + 10), "--device", "cpu", "--json")  # fmt: skip
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    rows = rows if isinstance(rows, list) else rows.get("shifts", rows)
    (row,) = rows
    assert row["shift"] == "jpeg" and row["count"] == 3 and row["samples"] == 3
    assert 0.0 <= row["metrics"]["val_bleu4"] <= 1.0
