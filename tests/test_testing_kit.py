"""The author kit's test helpers: the dashboard run helper and the in-process CLI fixture."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

from vlm_core.testing.dashboard import DashboardRunError, run_in_dashboard

SQUARE = REPO / "tests/fixtures/plugins/vlm-fixture-good/vlm_fixture_good/square.png"


@pytest.fixture
def with_fixture_plugins(monkeypatch, fixture_site, vlm_home):
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "good,exits")


def test_a_task_runs_on_the_dashboard_from_its_sample_and_renders(with_fixture_plugins):
    main = sys.modules["__main__"]
    run = run_in_dashboard("good.invert")
    assert run.results == 1 and " of good.invert: 1 result(s)" in run.summary
    assert run.shown("image"), "the inverted image is drawn"
    assert sys.modules["__main__"] is main  # AppTest's __main__ is given back


def test_uploaded_files_and_parameters_reach_the_run(with_fixture_plugins, vlm_dashboard):
    plain = vlm_dashboard("good.invert", files=[SQUARE])
    halved = vlm_dashboard("good.invert", files=[SQUARE, SQUARE], params={"gain": 0.5})
    assert (plain.results, halved.results) == (1, 2)

    def means(run):  # the Metrics output, drawn as a table of metric and value
        return [float(t.value["value"][0]) for t in run.shown("dataframe") if "metric" in t.value]

    assert means(halved) == pytest.approx([means(plain)[0] * 0.5] * 2, abs=1)  # uint8 pixels


def test_a_failing_run_raises_with_what_the_page_showed(with_fixture_plugins):
    with pytest.raises(DashboardRunError, match=r"running exits\.boom: the page shows .*exits"):
        run_in_dashboard("exits.boom")
    with pytest.raises(DashboardRunError, match=r"does not offer 'good\.nope'"):
        run_in_dashboard("good.nope")
    with pytest.raises(DashboardRunError, match="no widget for parameter 'nope'"):
        run_in_dashboard("good.invert", params={"nope": 1})


def test_vlm_cli_runs_vlm_in_this_process(vlm_cli, fixture_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fixture_site))
    listed = vlm_cli("tasks")
    assert listed.returncode == 0 and "good.invert" in listed.stdout
    refused = vlm_cli("run", "good.nope", str(SQUARE))
    assert refused.returncode == 2 and refused.args[:2] == ["vlm", "run"]
    assert refused.stderr.startswith("error: unknown task 'good.nope'") and not refused.stdout


@pytest.mark.parametrize(("workers", "preset", "expected"), [("2", None, "half"), ("2", "3", "3"),
                                                             (None, None, None)])  # fmt: skip
def test_xdist_workers_share_the_cores(monkeypatch, workers, preset, expected) -> None:
    """Under `pytest -n N` each worker takes cores // N threads for torch and its subprocesses;
    a user's OMP_NUM_THREADS, or no xdist at all, is left alone."""
    import os

    import torch

    from vlm_core.testing.pytest_plugin import _share_the_cores

    for name, value in (("PYTEST_XDIST_WORKER_COUNT", workers), ("OMP_NUM_THREADS", preset)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    before = torch.get_num_threads()
    try:
        _share_the_cores()
        if expected == "half":
            assert os.environ["OMP_NUM_THREADS"] == "4" and torch.get_num_threads() == 4
        else:
            assert os.environ.get("OMP_NUM_THREADS") == expected
            assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
