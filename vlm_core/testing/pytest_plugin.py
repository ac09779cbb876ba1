"""pytest fixtures for vlm and its plugins (registered through the ``pytest11`` entry point).

``vlm_home``         a private VLM_HOME (config, run store) for the test; plugin env cleared
``vlm_registry``     factory: ``vlm_registry({"name": plugin_obj}, entry_points=False)``
                     loads plugins into an isolated registry
``vlm_conformance``  factory: ``vlm_conformance("name")`` runs the conformance check on an
                     installed plugin and fails the test with every problem listed

It also registers the ``slow`` and ``gpu`` markers and skips ``gpu`` tests without CUDA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped when none is present)")


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
