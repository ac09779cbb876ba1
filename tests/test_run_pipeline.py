"""How `vlm run` moves files through a task (issue 23): the task's own batch size by default,
inputs read in a thread ahead of the task and results written in a thread behind it, and
durability paid once per run (one filesystem sync before the run folder is published), not by
an fsync per file."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image as PILImage


@pytest.fixture
def fragile(vlm_home: Path, fixture_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("VLM_PLUGINS", "fragile,good")
    from vlm_core.plugins import get_registry

    get_registry(reload=True)
    return vlm_home


@pytest.fixture
def ten(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    ramp = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (6, 1))
    paths = []
    for i in range(10):
        path = folder / f"img{i:02d}.png"
        PILImage.fromarray(np.roll(ramp, i, axis=1)).save(path)
        paths.append(path)
    return paths


def _counting(monkeypatch: pytest.MonkeyPatch, registry) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    spec = registry.tasks["fragile.contrast"]
    real = spec.resolve_run()
    calls: list[tuple[int, str]] = []

    def counting(inputs, params, ctx):  # type: ignore[no-untyped-def]
        calls.append((len(inputs), threading.current_thread().name))
        return real(inputs, params, ctx)

    monkeypatch.setattr(type(spec), "resolve_run", lambda self: counting)
    return calls


def test_the_task_sees_batches_of_its_own_size_unless_the_run_says(
    fragile: Path, ten: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task

    registry = get_registry()
    calls = _counting(monkeypatch, registry)
    assert registry.tasks["fragile.contrast"].batch_size == 8  # TaskSpec's default
    outcome = run_task(RunRequest("fragile.contrast", ten), registry=registry)
    assert [n for n, _ in calls] == [8, 2] and len(outcome.summaries) == 10
    calls.clear()
    run_task(RunRequest("fragile.contrast", ten, batch_size=3), registry=registry)
    assert [n for n, _ in calls] == [3, 3, 3, 1]


def test_reading_and_writing_run_in_their_own_threads_beside_the_task(
    fragile: Path, ten: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vlm_core.fileio as fileio
    import vlm_core.runner as runner
    from vlm_core.plugins import get_registry

    registry = get_registry()
    calls = _counting(monkeypatch, registry)
    readers: set[str] = set()
    writers: set[str] = set()
    real_load, real_write = runner.load_input, fileio.atomic_write_bytes

    def load(*args, **kwargs):  # type: ignore[no-untyped-def]
        readers.add(threading.current_thread().name)
        return real_load(*args, **kwargs)

    def write(*args, **kwargs):  # type: ignore[no-untyped-def]
        writers.add(threading.current_thread().name)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(runner, "load_input", load)
    monkeypatch.setattr(fileio, "atomic_write_bytes", write)
    import vlm_core.export.writer as writer_module

    monkeypatch.setattr(writer_module, "atomic_write_text",
                        lambda path, text: write(path, text.encode()))  # fmt: skip
    request = runner.RunRequest("fragile.contrast", ten, out_dir=tmp_path / "out")
    outcome = runner.run_task(request, registry=registry)
    assert readers == {"vlm-run-read"} and "vlm-run-write" in writers
    assert {name for _, name in calls} == {threading.main_thread().name}
    stages = outcome.timings_ms
    assert {"read_ms", "run_ms", "export_ms", "sync_ms", "total_ms"} <= set(stages)
    assert all(v >= 0 for v in stages.values())


def test_one_filesystem_sync_per_run_instead_of_an_fsync_per_file(
    fragile: Path, ten: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vlm_core.fileio as fileio
    from vlm_core.plugins import get_registry
    from vlm_core.runner import RunRequest, run_task

    fsyncs: list[int] = []
    synced: list[Path] = []
    real_fsync, real_sync = os.fsync, fileio.sync_folder
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])

    def sync(folder: Path) -> None:
        synced.append(folder)
        assert not (tmp_path / "out").exists()  # before the run folder is published
        real_sync(folder)

    monkeypatch.setattr(fileio, "sync_folder", sync)
    outcome = run_task(RunRequest("fragile.contrast", ten, out_dir=tmp_path / "out"),
                       registry=get_registry())  # fmt: skip
    written = [f for f in outcome.files if f.is_file()]
    assert len(written) >= 20  # an image and a result.json per input, and the run's files
    assert len(synced) == 1 and synced[0].name.startswith(".")  # the staging folder
    assert len(fsyncs) <= 3  # the folders' entries, not one per file
    results = sorted((tmp_path / "out").glob("*/result.json"))
    assert len(results) == 10 and all(json.loads(p.read_text())["task"] for p in results)


def test_a_plain_atomic_write_outside_a_run_is_still_durable_on_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlm_core.fileio import atomic_write_bytes, deferred_sync

    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert len(fsyncs) == 1
    with deferred_sync():
        atomic_write_bytes(tmp_path / "b.bin", b"y")
    assert len(fsyncs) == 1 and (tmp_path / "b.bin").read_bytes() == b"y"


def test_a_failing_writer_leaves_nothing_and_says_the_disk_is_full(
    fragile: Path, ten: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import vlm_core.export.writer as writer_module

    real = writer_module.atomic_write_text
    count = {"n": 0}

    def flaky(path: Path, text: str) -> None:
        count["n"] += 1
        if count["n"] == 4:
            raise OSError(28, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(writer_module, "atomic_write_text", flaky)
    out = tmp_path / "out"
    code, _, stderr = cli(["run", "fragile.contrast", str(ten[0].parent), "--out", str(out)],
                          capsys)  # fmt: skip
    assert code == 1 and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith("error: no space left on device while writing ")
    assert "nothing of this run was written" in stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_no_preview_and_preview_format_are_accepted_by_the_cli(
    fragile: Path, ten: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags in (["--no-preview"], ["--preview-format", "png"]):
        out = tmp_path / flags[0].strip("-")
        code, _, stderr = cli(["run", "fragile.contrast", str(ten[0]), "--out", str(out),
                               *flags], capsys)  # fmt: skip
        assert code == 0, stderr
        assert (out / "run.json").is_file()
