"""pytest fixtures for vlm and its plugins (registered through the ``pytest11`` entry point).

``vlm_home``         a private VLM_HOME (config, run store) for the test; plugin env cleared
``vlm_registry``     factory: ``vlm_registry({"name": plugin_obj}, entry_points=False)``
                     loads plugins into an isolated registry
``vlm_conformance``  factory: ``vlm_conformance("name")`` runs the conformance check on an
                     installed plugin and fails the test with every problem listed
``vlm_resume_check`` factory: ``vlm_resume_check(request)`` trains a TrainRequest straight and
                     killed at a drawn step then resumed, and fails the test unless the final
                     checkpoints are equal tensor for tensor
``vlm_cli``          ``vlm_cli("train", "my.task", "--data", ...)`` runs `vlm` in this process and
                     returns what a `vlm` subprocess would (exit code, stdout, stderr as a
                     ``CompletedProcess``) without the seconds of an interpreter start-up
``vlm_dashboard``    factory: ``vlm_dashboard("my.task")`` runs one task on the dashboard's Run
                     page (Streamlit's AppTest) and returns what it rendered
                     (:class:`~vlm_core.testing.dashboard.DashboardRun`)

It also registers the ``slow`` and ``gpu`` markers, skips ``gpu`` tests without CUDA and, under
pytest-xdist, gives each worker its share of the CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def vlm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "vlm-home"
    home.mkdir()
    monkeypatch.setenv("VLM_HOME", str(home))
    for name in ("VLM_PLUGINS", "VLM_STRICT_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    from vlm_core import plugins

    monkeypatch.setattr(plugins, "_cached", None)
    yield home


@pytest.fixture
def vlm_registry(vlm_home: Path) -> Callable[..., object]:
    from vlm_core.plugins import Registry, load_registry

    def make(extra: Mapping[str, object] | None = None, *, entry_points: bool = False) -> Registry:
        return load_registry(extra=extra, use_entry_points=entry_points)

    return make


@pytest.fixture
def vlm_conformance(vlm_home: Path) -> Callable[..., object]:
    from vlm_core.plugins import load_registry
    from vlm_core.testing.conformance import ConformanceReport, check_plugin

    def check(name: str, *, run_samples: bool = True) -> ConformanceReport:
        report = check_plugin(name, registry=load_registry(), run_samples=run_samples)
        if not report.ok:
            pytest.fail(
                f"plugin '{name}' is not conformant:\n  " + "\n  ".join(report.problems),
                pytrace=False,
            )
        return report

    return check


@pytest.fixture
def vlm_resume_check(vlm_home: Path) -> Callable[..., object]:
    """Does a task's training resume bit for bit (:func:`~vlm_core.training.resume_check.
    check_resume`)? The run is killed at a step drawn from the task id (the same on every test
    run) after its first checkpoint, on one torch thread (tiny tensors run faster on one than
    on several that wait for each other); the :class:`ResumeCheck` is returned."""
    import random

    def check(request: Any, *, kill_at: int | None = None, registry: Any = None) -> Any:
        import torch

        from vlm_core.training.resume_check import check_resume, given_config

        if kill_at is None:
            config = given_config(request.config)
            if "max_steps" not in config or "save_every" not in config:
                raise ValueError("give kill_at, or max_steps and save_every in request.config")
            first, last = config["save_every"] + 1, config["max_steps"] - 1
            kill_at = random.Random(f"{request.task} kill").randint(first, max(first, last))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            found = check_resume(request, kill_at=kill_at, registry=registry)
        finally:
            torch.set_num_threads(threads)
        if not found.identical:
            pytest.fail(f"'{request.task}' does not resume bit for bit: {found.summary()}")
        return found

    return check


@pytest.fixture
def vlm_cli(
    vlm_home: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`vlm ARGS` in this process, with the test's private home: the exit code and what it
    printed, as a ``subprocess.CompletedProcess`` (``args`` starts with ``"vlm"``). ``sys.argv``
    is ``["vlm", *args]`` meanwhile, so a training run records the command as typed."""
    from vlm_core.cli import main

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()  # only this command's output
        argv = [str(a) for a in args]
        saved = sys.argv
        sys.argv = ["vlm", *argv]  # what `vlm train` records as the command that trained
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.argv = saved
        printed = capsys.readouterr()
        return subprocess.CompletedProcess(["vlm", *args], code, printed.out, printed.err)

    return run


@pytest.fixture
def vlm_dashboard(vlm_home: Path) -> Callable[..., object]:
    """Runs one task on the dashboard's Run page (see :func:`vlm_core.testing.dashboard.
    run_in_dashboard`) with the test's private home, and fails the test with what the page
    showed when the run does not succeed."""
    from vlm_core.testing.dashboard import DashboardRunError, run_in_dashboard

    def run(task: str, **kwargs: Any) -> object:
        try:
            return run_in_dashboard(task, **kwargs)
        except DashboardRunError as exc:
            pytest.fail(str(exc), pytrace=False)

    return run


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped when none is present)")
    _share_the_cores()


def _share_the_cores() -> None:
    """Under pytest-xdist (``-n N``), each worker process takes its share of the CPU cores for
    torch and for the subprocesses it starts (``OMP_NUM_THREADS``), instead of every worker
    starting one thread per core and all of them waiting on each other. Left alone outside
    xdist, and where the user set ``OMP_NUM_THREADS`` already."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2 or os.environ.get("OMP_NUM_THREADS"):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from vlm_core.devices import torch_available

    if torch_available():
        import torch

        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests on machines without CUDA (torch is imported only if one is selected)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from vlm_core.devices import torch_available

    if torch_available():
        import torch

        if torch.cuda.is_available():
            return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)
