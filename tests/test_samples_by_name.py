"""A task's bundled samples by name: `vlm run TASK sample:NAME`, listed by `vlm tasks` and
`vlm info` (issue 27, item 8a)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from vlm_core.errors import UsageError
from vlm_core.plugins import get_registry
from vlm_core.runner import RunRequest, prepare
from vlm_core.samples import expand_samples, sample_key

Vlm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def vlm_here(vlm_cli: Vlm, fixture_site: Path, monkeypatch: pytest.MonkeyPatch) -> Vlm:
    """`vlm` in this process with the fixture plugins (good.invert's sample: 'square')."""
    monkeypatch.syspath_prepend(str(fixture_site))
    return vlm_cli


def test_a_sample_runs_by_name(vlm_here: Vlm, tmp_path: Path) -> None:
    done = vlm_here("run", "good.invert", "sample:square", "--out", tmp_path / "o", "--json")
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["results"]
    assert Path(result["input"]).name == "square.png"
    assert (tmp_path / "o" / "square" / "inverted.png").is_file()
    # any case; the run store keeps the file, so History can run it again
    again = vlm_here("run", "good.invert", "sample:SQUARE", "--json")
    assert again.returncode == 0, again.stderr
    listed = json.loads(vlm_here("runs", "list", "--json").stdout)
    assert Path(listed[0]["inputs"][0]).name == "square.png"


def test_an_unknown_sample_is_one_line_listing_the_names(vlm_here: Vlm) -> None:
    done = vlm_here("run", "good.invert", "sample:squares")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: task 'good.invert' has no sample 'squares'; did you mean 'square'? "
        "(its samples: square)"
    )
    lone = vlm_here("run", "good.invert", "sample:lesion-ct")
    assert lone.returncode == 2 and lone.stderr.count("\n") == 1
    assert "no sample 'lesion-ct' (its samples: square)" in lone.stderr


def test_tasks_and_info_list_the_sample_names(vlm_here: Vlm) -> None:
    tasks = {t["id"]: t for t in json.loads(vlm_here("tasks", "--json").stdout)}
    assert tasks["good.invert"]["samples"] == ["square"]
    assert "square" in vlm_here("tasks").stdout
    info = json.loads(vlm_here("info", "good.invert", "--json").stdout)
    assert info["samples"][0]["input"] == "sample:square"
    text = vlm_here("info", "good.invert").stdout.splitlines()
    assert "samples (vlm run good.invert sample:NAME):" in text
    assert any(line.startswith("  square: ") for line in text)


def test_a_sample_brings_its_parameters_under_the_given_ones(vlm_home: Path) -> None:
    registry = get_registry()
    spec = registry.task("art.generate")
    assert sample_key("Circles to stripes") == "circles-to-stripes"
    assert expand_samples(spec, ["sample:five styles"]) == ([], {"count": 10, "seed": 1})
    _, params, probes, _ = prepare(
        RunRequest("art.generate", ["sample:five-styles"], {"count": 2}), registry
    )
    assert (params.count, params.seed, probes) == (2, 1, [])  # --param wins, the sample's seed
    with pytest.raises(UsageError, match=r"cannot run together \(the task takes no input files"):
        expand_samples(spec, ["sample:five-styles", "sample:circles-to-stripes"])
    segment = registry.task("medical.segment")
    files, params_set = expand_samples(segment, ["sample:synthetic-lesions", "other.nii.gz"])
    assert Path(files[0]).name == "synthetic-lesions.nii.gz" and files[1] == "other.nii.gz"
    assert params_set == {}
