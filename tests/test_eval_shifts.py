"""`vlm eval TASK --shift`: held-out data a task's generator draws under named shifts, one row
per shift; and the rule that a run takes the settings its weights' card records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from vlm_core.errors import ParameterError, UsageError
from vlm_core.params import under_given
from vlm_core.plugins import get_registry
from vlm_core.tasks import EvalShifts, TaskParams, shifts_problems
from vlm_core.training.shifts import chosen_shifts, task_shifts

TEST_SEED = 7_300_000  # medical.segment's test range (its acceptance figures use 7,200,000+)


class Window(TaskParams):
    roi: int = 64
    overlap: float = 0.25


def test_card_settings_replace_defaults_but_not_what_the_user_gave() -> None:
    given = Window.model_validate({"overlap": 0.5})
    found = under_given(given, {"roi": 128, "overlap": 0.1, "not_a_field": 3})
    assert (found.roi, found.overlap) == (128, 0.5)
    assert under_given(Window.model_validate({"roi": 32}), {"roi": 128}).roi == 32
    assert under_given(Window(), None) == Window()


def test_a_card_setting_that_is_no_valid_value_is_refused_on_one_line() -> None:
    with pytest.raises(ParameterError, match=r"weights W set roi='big', which is not valid"):
        under_given(Window(), {"roi": "big"}, owner="weights W")


def test_shift_declarations_are_checked() -> None:
    spec = get_registry().task("medical.segment")
    assert shifts_problems(spec) == []
    bad = EvalShifts(write="not a ref", names={"all": "x", "Night": "y"}, count=0)
    problems = shifts_problems(dataclasses.replace(spec, shifts=bad))
    assert any("module:function" in p for p in problems)
    assert any("'all'" in p and "Night" in p for p in problems)
    assert any("count" in p for p in problems)
    untrainable = dataclasses.replace(spec, train=None, shifts=spec.shifts)
    assert any("train builder" in p for p in shifts_problems(untrainable))


def test_shift_names_all_unknown_and_undeclared() -> None:
    spec = get_registry().task("medical.segment")
    suite = task_shifts(spec)
    assert chosen_shifts(suite, ["all"]) == list(suite.names)
    assert chosen_shifts(suite, ["noise", "none", "noise"]) == ["noise", "none"]
    with pytest.raises(UsageError, match=r"unknown shift 'nois'.*did you mean 'noise'"):
        chosen_shifts(suite, ["nois"])
    with pytest.raises(UsageError, match="declares no named shifts"):
        task_shifts(dataclasses.replace(spec, shifts=None))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shift", "bogus"], "unknown shift 'bogus'"),
        (["--shift", "none", "--data", "."], "give --data or --shift, not both"),
        ([], "needs --data DATA, or --shift NAME"),
        (["--data", ".", "--count", "3"], "go with --shift"),
    ],
)
def test_bad_shift_requests_exit_2_on_one_line(vlm_cli, args, message) -> None:
    found = vlm_cli("eval", "medical.segment", *args)
    assert found.returncode == 2
    assert message in found.stderr and len(found.stderr.strip().splitlines()) == 1


def test_shift_list_names_every_shift(vlm_cli) -> None:
    found = vlm_cli("eval", "medical.segment", "--shift", "list")
    assert found.returncode == 0
    names = [line.split()[0] for line in found.stdout.splitlines()[:-1]]
    assert names == ["none", "noise", "small", "both"]


@pytest.mark.slow  # two evaluations of the 3D UNet: about 6 s on a quiet 2-core machine
def test_two_shifts_measure_count_items_each_and_keep_what_they_drew(vlm_cli, tmp_path) -> None:
    keep = tmp_path / "drawn"
    found = vlm_cli("eval", "medical.segment", "--shift", "noise", "--shift", "none",
                    "--count", "1", "--shift-seed", str(TEST_SEED), "--keep-data", keep,
                    "--json")  # fmt: skip
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert [r["shift"] for r in rows] == ["noise", "none"]
    for row in rows:
        assert row["samples"] == 1 and row["count"] == 1 and row["shift_seed"] == TEST_SEED
        assert 0.0 <= row["metrics"]["val_dice"] <= 1.0
    drawn = json.loads((keep / "noise" / "dataset.json").read_text())
    assert len(drawn["validation"]) == 1 and not drawn["training"]
    assert "shift noise" in drawn["description"]
    again = vlm_cli("eval", "medical.segment", "--shift", "none", "--count", "1",
                    "--keep-data", keep)  # fmt: skip
    assert again.returncode == 2 and "exists already" in again.stderr


def test_the_noise_shift_draws_other_images_than_the_training_distribution(tmp_path) -> None:
    import numpy as np
    from vlm_medical.synthetic import make_image

    plain, _ = make_image(np.random.RandomState(TEST_SEED), 64)
    noisy, _ = make_image(np.random.RandomState(TEST_SEED), 64, "noise")
    assert not np.allclose(plain, noisy)
    with pytest.raises(ValueError, match="unknown shift 'fog'"):
        make_image(np.random.RandomState(0), 64, "fog")


def test_eval_on_shifted_data_is_refused_for_a_missing_data_path(vlm_cli, tmp_path: Path) -> None:
    found = vlm_cli("eval", "medical.segment", "--data", tmp_path / "nothing")
    assert found.returncode == 2 and "no such file or folder" in found.stderr
