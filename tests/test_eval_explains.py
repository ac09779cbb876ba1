"""`vlm eval` says which data, seed and sample count it used, and in one line how they compare
with the evaluation training recorded with the weights (issue 27, item 4)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from vlm_core.training.data_hash import data_fingerprint
from vlm_core.training.eval_setting import EvalSetting, comparison_line, differences

Vlm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def vlm_here(vlm_cli: Vlm, fixture_site: Path, monkeypatch: pytest.MonkeyPatch) -> Vlm:
    """`vlm` in this process (stdout and stderr captured: no terminal) with the fixture
    plugins."""
    monkeypatch.syspath_prepend(str(fixture_site))
    return vlm_cli


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory, fixture_site: Path) -> Path:
    import sys

    sys.path.insert(0, str(fixture_site))
    from vlm_fixture_good.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), per_class=20, seed=1)


def test_eval_names_its_data_seed_and_samples_and_compares_them(
    vlm_here: Vlm, shapes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "train"
    done = vlm_here("train", "good.shapes", "--data", shapes, "--steps", "4", "--out", out,
                    "--batch-size", "16", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    sidecar = json.loads(next(out.glob("checkpoints/*/model.json")).read_text())
    assert sidecar["val_samples"] == 15 and sidecar["seed"] == 0  # what eval compares with

    # the same data and seed: the same samples, and the line says the figures match
    same = vlm_here("eval", "good.shapes", "--data", shapes, "--weights", out)
    assert same.returncode == 0, same.stderr
    lines = same.stdout.splitlines()
    assert lines[0].startswith("good.shapes on 15 validation samples: val_acc=")
    digest = data_fingerprint(shapes)["sha256"]
    assert lines[1] == f"data {shapes.resolve()} (sha256 {digest[:12]}, 60 files), seed 0, " \
        "device cpu"  # fmt: skip
    assert re.fullmatch(r"training evaluated the same 15 samples of data with seed 0 at step "
                        r"\d: the figures match", lines[-1])  # fmt: skip

    # another seed (another validation split) and a parameter: said in one line, and in JSON
    other = vlm_here("eval", "good.shapes", "--data", shapes, "--weights", out, "--seed", "1",
                     "--param", "val_fraction=0.5", "--json")  # fmt: skip
    assert other.returncode == 0, other.stderr
    found = json.loads(other.stdout)
    assert (found["samples"], found["seed"], found["device"]) == (30, 1, "cpu")
    assert found["data"]["path"] == str(shapes.resolve()) and found["data"]["sha256"] == digest
    assert found["training_eval"]["samples"] == 15 and found["training_eval"]["seed"] == 0
    assert found["differences"] == ["samples", "seed", "params"]
    assert found["comparison"] == (
        f"training evaluated 15 samples of {shapes.resolve()} (sha256 {digest[:12]}, 60 files) "
        f"with seed 0, val_fraction=0.25 at step {found['step']}; this eval used 30 samples "
        "with seed 1, val_fraction=0.5: figures differ for that reason"
    )

    # other data: its path and fingerprint are named
    fewer = tmp_path / "fewer"
    shutil.copytree(shapes, fewer)
    for extra in sorted(fewer.rglob("*.png"))[::3]:
        extra.unlink()
    moved = json.loads(
        vlm_here("eval", "good.shapes", "--data", fewer, "--weights", out, "--json").stdout
    )
    assert moved["differences"] == ["data", "samples"] and moved["same_data"] is False
    assert f"this eval used 10 samples of {fewer.resolve()} (sha256 " in moved["comparison"]


def setting(**kw: object) -> EvalSetting:
    base: dict[str, object] = {"data": {"path": "/d", "sha256": "a" * 64, "files": 9},
                               "seed": 0, "samples": 64, "device": "cuda:0",
                               "params": {"val_fraction": 0.1}}  # fmt: skip
    return EvalSetting(**{**base, **kw})  # type: ignore[arg-type]


def test_the_comparison_line_names_what_differs() -> None:
    training = setting()
    assert differences(training, setting(device="cuda:1")) == []  # the same arithmetic
    line = comparison_line(training, setting(samples=256, seed=1), step=100)
    assert line == (
        "training evaluated 64 samples of /d (sha256 aaaaaaaaaaaa, 9 files) with seed 0 at "
        "step 100; this eval used 256 samples with seed 1: figures differ for that reason"
    )
    line = comparison_line(training, setting(device="cpu"))
    assert line.endswith("with seed 0 on cuda:0; this eval used 64 samples on cpu: "
                         "figures differ for that reason")  # fmt: skip
    # the same setting, figures apart: a real inconsistency, said as such
    line = comparison_line(training, setting(), max_rel_diff=0.2)
    assert "yet the figures differ" in line and "not reproducible" in line
    # weights written before the sample count was recorded
    old = EvalSetting.recorded({"data": {"path": "/d", "sha256": "a" * 64}, "seed": 0})
    assert old.samples is None
    assert comparison_line(old, setting(), max_rel_diff=0.0).endswith(
        "the figures match (its sample count is not recorded)"
    )
