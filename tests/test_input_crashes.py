"""A crash on one input fails that input, not the run and not the plugin: the other inputs'
results are kept, the run says which input failed and why, and the plugin is quarantined only
when its own bundled samples crash as well (issue 19, section 2).

The fixture distribution vlm-fixture-fragile holds two plugins with the same task, which
divides by an image's intensity range (a flat image raises ZeroDivisionError): "fragile" ships
a gradient as its sample (it runs), "crashy" a flat image (it crashes too).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, plugin_statuses
from PIL import Image as PILImage

from vlm_core.config import read_user_config
from vlm_core.runstore import RunStore


@pytest.fixture
def fragile(vlm_home: Path, fixture_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "fragile,crashy,good")
    from vlm_core.plugins import get_registry

    get_registry(reload=True)
    return vlm_home


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    """Two images with contrast and, between them, a flat one the task crashes on."""
    folder = tmp_path / "in"
    folder.mkdir()
    ramp = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (6, 1))
    PILImage.fromarray(ramp).save(folder / "a.png")
    PILImage.fromarray(np.full((6, 25), 77, np.uint8)).save(folder / "b-flat.png")
    PILImage.fromarray(ramp[:, ::-1]).save(folder / "c.png")
    return [folder / n for n in ("a.png", "b-flat.png", "c.png")]


def test_a_crash_on_one_input_of_a_batch_fails_only_that_input(
    fragile: Path, three: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["run", "fragile.contrast", *map(str, three), "--batch-size", "3", "--out", str(out)]
    code, stdout, stderr = cli(argv, capsys)
    assert code == 1  # not fully successful
    assert stderr.splitlines() == [
        f"error: {three[1]}: plugin 'fragile' failed in task 'fragile.contrast': "
        "ZeroDivisionError: float division by zero"
    ]
    lines = stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == [str(three[0]), str(three[2])]
    assert "2 result(s), 1 input(s) failed" in lines[2]
    # the others' outputs are kept; nothing of the failed input
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "c"]
    # the run store says which input failed and why
    record = RunStore.default().list(limit=1)[0]
    assert record.status == "partial"
    assert record.error.startswith(f"1 of 3 inputs failed: {three[1]}: plugin 'fragile'")
    assert record.provenance["failures"] == [
        {
            "input": str(three[1]),
            "error": "plugin 'fragile' failed in task 'fragile.contrast': "
            "ZeroDivisionError: float division by zero",
        }
    ]
    # no quarantine: the plugin's own sample runs
    assert read_user_config().quarantined == {}
    assert plugin_statuses(capsys)["fragile"]["status"] == "healthy"
    # and it still runs, in this process and the next
    code, stdout, _ = cli(["run", "fragile.contrast", str(three[0])], capsys)
    assert code == 0 and "1 result(s)" in stdout


def test_json_output_lists_the_failures(
    fragile: Path, three: list[Path], capsys: pytest.CaptureFixture
) -> None:
    code, stdout, stderr = cli(["run", "fragile.contrast", *map(str, three), "--json"], capsys)
    assert code == 1
    data = json.loads(stdout)
    assert [r["input"] for r in data["results"]] == [str(three[0]), str(three[2])]
    assert [f["input"] for f in data["failures"]] == [str(three[1])]
    assert len(stderr.splitlines()) == 1


def test_when_every_input_crashes_the_run_fails_in_one_line_and_writes_nothing(
    fragile: Path, three: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    flat = three[1]
    out = tmp_path / "out"
    code, stdout, stderr = cli(["run", "fragile.contrast", str(flat), "--out", str(out)], capsys)
    assert code == 1 and stdout == ""
    assert stderr == (
        "error: plugin 'fragile' failed in task 'fragile.contrast': "
        "ZeroDivisionError: float division by zero\n"
    )
    assert not out.exists()
    assert RunStore.default().list(limit=1)[0].status == "failed"
    assert plugin_statuses(capsys)["fragile"]["status"] == "healthy"


def test_a_plugin_whose_own_sample_crashes_too_is_quarantined_with_who_and_when(
    fragile: Path, three: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = ["run", "crashy.contrast", *map(str, three), "--batch-size", "3", "--out", str(out)]
    code, stdout, stderr = cli(argv, capsys)
    assert code == 1 and stdout == ""
    assert stderr == (
        "error: plugin 'crashy' failed in task 'crashy.contrast': ZeroDivisionError: float "
        "division by zero; plugin disabled until `vlm plugins enable crashy`\n"
    )
    assert not out.exists()  # a broken plugin's run ends: nothing half-written
    record = RunStore.default().list(limit=1)[0]
    assert record.status == "failed"
    quarantined = read_user_config().quarantined
    assert list(quarantined) == ["crashy"]
    entry = quarantined["crashy"]
    assert entry.by == "cli" and entry.run_id == record.id and entry.at
    assert "its sample 'flat' fails too" in entry.reason
    listed = plugin_statuses(capsys)
    assert listed["crashy"]["status"] == "failed"
    assert listed["crashy"]["quarantine"]["run_id"] == record.id
    assert listed["fragile"]["status"] == "healthy"  # the other plugin is untouched
    code, _, stderr = cli(["run", "crashy.contrast", str(three[0])], capsys)
    assert code == 2 and "plugin 'crashy' is failed" in stderr
    code, _, _ = cli(["plugins", "enable", "crashy"], capsys)
    assert code == 0 and read_user_config().quarantined == {}


def test_an_older_config_with_a_bare_reason_still_reads(
    fragile: Path, capsys: pytest.CaptureFixture
) -> None:
    (fragile / "config.json").write_text(
        json.dumps({"disabled": [], "quarantined": {"crashy": "run of 'crashy.contrast' raised X"}})
    )
    listed = plugin_statuses(capsys)
    assert listed["crashy"]["status"] == "failed"
    assert listed["crashy"]["error"] == "run of 'crashy.contrast' raised X"
    assert listed["crashy"]["quarantine"]["reason"] == "run of 'crashy.contrast' raised X"


def test_a_batch_without_a_crash_is_run_once(
    fragile: Path, three: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one-by-one retry happens only after a crash: a healthy batch is one task call."""
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task

    registry = get_registry()
    spec = registry.tasks["fragile.contrast"]
    real = spec.resolve_run()
    calls: list[int] = []

    def counting(inputs, params, ctx):  # type: ignore[no-untyped-def]
        calls.append(len(inputs))
        return real(inputs, params, ctx)

    monkeypatch.setattr(type(spec), "resolve_run", lambda self: counting)
    good = [three[0], three[2], tmp_path / "d.png"]
    shutil.copy(three[0], good[2])
    outcome = run_task(RunRequest("fragile.contrast", good, batch_size=3), registry=registry)
    assert calls == [3] and len(outcome.summaries) == 3 and outcome.failures == []
    calls.clear()
    outcome = run_task(RunRequest("fragile.contrast", three, batch_size=3), registry=registry)
    assert calls == [3, 1, 1, 1, 1]  # the batch, its inputs one by one, the plugin's sample
    assert [Path(f.input).name for f in outcome.failures] == ["b-flat.png"]


def test_a_full_disk_inside_a_task_is_said_as_such_and_judges_no_plugin(
    fragile: Path, three: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task that hits a full disk is not crashing: the run fails with "no space left on
    device", the plugin's samples are not run to judge it and nothing is quarantined."""
    import errno

    from vlm_core.errors import DiskFullError
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task

    registry = get_registry()
    spec = registry.tasks["crashy.contrast"]  # its sample crashes: a judged crash quarantines
    calls: list[int] = []

    def full(inputs, params, ctx):  # type: ignore[no-untyped-def]
        calls.append(len(inputs))
        raise OSError(errno.ENOSPC, "No space left on device", "/scratch/cache.bin")

    monkeypatch.setattr(type(spec), "resolve_run", lambda self: full)
    with pytest.raises(DiskFullError, match="no space left on device while writing /scratch"):
        run_task(RunRequest("crashy.contrast", three, batch_size=3), registry=registry)
    assert calls == [3]  # neither retried one by one nor judged by the plugin's sample
    assert read_user_config().quarantined == {}
    assert registry.plugins["crashy"].status == "healthy"
