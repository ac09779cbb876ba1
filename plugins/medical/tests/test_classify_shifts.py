"""`vlm eval medical.classify --shift`: the shifts draw what they say from the tests' own seeds,
and `vlm run` at its defaults gives the accuracy `vlm eval` measures on the same volumes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from vlm_medical.classify_shifts import EVAL_SEED, SHIFTS, TEST_SEED, VAL_SEED
from vlm_medical.classify_shifts_data import write_eval_set
from vlm_medical.synthetic_classes import CLASSES, make_case, write_class_dataset

from vlm_core.plugins import load_registry
from vlm_core.runner import RunRequest, run_task

TASK = "medical.classify"


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.nii.gz"))


def test_the_eval_set_is_count_volumes_all_held_out(tmp_path: Path) -> None:
    """An odd count too; the first 2 n volumes are `write_class_dataset`'s with n per class."""
    write_eval_set(tmp_path / "a", shift="none", count=5, seed=TEST_SEED, params=None)
    written = _files(tmp_path / "a")
    assert len(written) == 5 and all(p.parent.parent.name == "val" for p in written)
    assert sum(p.parent.name == "lesion" for p in written) == 3
    write_class_dataset(tmp_path / "b", 2, seed=TEST_SEED, split="val")
    for path in _files(tmp_path / "b"):
        twin = tmp_path / "a" / path.relative_to(tmp_path / "b")
        np.testing.assert_array_equal(nib.load(path).get_fdata(), nib.load(twin).get_fdata())


def _roughness(image: np.ndarray) -> float:
    """The median absolute difference of neighbouring voxels: the noise, nearly free of the
    smooth organs and bias field."""
    return float(np.median(np.abs(np.diff(image, axis=0))))


def test_the_shifts_change_noise_and_lesion_size_only() -> None:
    """With the same seed: "noise" keeps the anatomy (the same lesion mask) and raises the
    noise by 0.24 / the drawn sigma (2 to 4 times); "small" draws lesions of radius 1-2 voxels
    (at most 33 voxels each, a radius-2 ball), training ones of radius 2-4 (at least 33)."""
    for n in range(6):
        seed = TEST_SEED + 100 + n
        plain, mask = make_case(np.random.RandomState(seed), lesion=True)
        noisy, same = make_case(np.random.RandomState(seed), lesion=True, shift="noise")
        np.testing.assert_array_equal(mask, same)
        assert 1.8 < _roughness(noisy) / _roughness(plain) < 4.2
        _, small = make_case(np.random.RandomState(seed), lesion=True, shift="small")
        assert 0 < small.sum() <= 2 * 33 and mask.sum() >= 33
        _, none = make_case(np.random.RandomState(seed), lesion=False, shift="both")
        assert none.sum() == 0
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        make_case(np.random.RandomState(0), lesion=True, shift="fog")


def test_the_seed_ranges_are_apart() -> None:
    assert EVAL_SEED < VAL_SEED < TEST_SEED
    assert min(VAL_SEED - EVAL_SEED, TEST_SEED - VAL_SEED) > len(SHIFTS)


def test_shift_list_and_an_unknown_shift_through_the_cli(vlm_cli) -> None:
    found = vlm_cli("eval", TASK, "--shift", "list")
    assert found.returncode == 0, found.stderr
    assert [line.split()[0] for line in found.stdout.splitlines()[: len(SHIFTS)]] == list(SHIFTS)
    wrong = vlm_cli("eval", TASK, "--shift", "nosie")
    assert wrong.returncode == 2
    assert "unknown shift 'nosie'" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1


def test_run_at_its_defaults_gives_the_accuracy_eval_measures(tmp_path: Path) -> None:
    """16 in-domain held-out volumes and 16 with small lesions in noise (some of them
    misclassified, so the figure can differ): the accuracy of `vlm run`'s labels at its
    default parameters equals `vlm eval`'s on the same folder."""
    from vlm_core.training.api import evaluate_task

    for index, shift in enumerate(("none", "both")):
        write_eval_set(tmp_path, shift=shift, count=16, seed=TEST_SEED + index, params=None)
    files = _files(tmp_path)
    request = RunRequest(TASK, [str(p) for p in files], {}, device="cpu")
    outcome = run_task(request, registry=load_registry(), keep_results=True)
    labels = [r.outputs["class"].text for r in outcome.results]
    assert set(labels) <= set(CLASSES)
    right = [label == path.parent.name for label, path in zip(labels, files, strict=True)]
    run_accuracy = sum(right) / len(right)
    evaluated = evaluate_task(TASK, tmp_path, device="cpu")
    assert evaluated.samples == len(files) == 32
    assert evaluated.metrics["val_acc"] == pytest.approx(run_accuracy, abs=1e-6), json.dumps(
        {"run": run_accuracy, "eval": evaluated.metrics}
    )
    assert run_accuracy < 1.0  # the shifted half fools the network: the check means something
