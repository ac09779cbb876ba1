"""Every built-in plugin under plugins/ is installed by the set-up, healthy and conformant.

The conformance check runs each task with its declared tiny settings (``TaskSpec.tiny``):
samples, edge and bad inputs, and for a trainable task a few training steps, an evaluation,
the save/load round trip and a run with the fresh weights.
"""

from __future__ import annotations

import pytest
import tomllib
from conftest import REPO

from vlm_core.plugins import load_registry
from vlm_core.testing import check_plugin


def declared_builtin_plugins() -> dict[str, str]:
    """Entry-point name → plugin folder, from each plugins/*/pyproject.toml."""
    found = {}
    for pyproject in sorted(REPO.glob("plugins/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for name in project.get("entry-points", {}).get("vlm.plugins", {}):
            found[name] = pyproject.parent.name
    return found


BUILTIN = declared_builtin_plugins()


def test_every_builtin_plugin_is_installed_and_healthy(vlm_home):
    registry = load_registry()
    listed = {name: r.status for name, r in registry.plugins.items() if name in BUILTIN}
    assert listed == dict.fromkeys(BUILTIN, "healthy"), (
        "run `bash scripts/setup.sh` to install the built-in plugins"
    )


# parametrized over the plugins declared under plugins/ (not over those installed), so that a
# plugin missing from the environment fails here instead of being skipped
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_plugin_is_conformant_and_its_training_is_checked(vlm_home, name):
    registry = load_registry()
    report = check_plugin(name, registry=registry)
    assert report.ok, f"{name}: " + "\n".join(report.problems)
    names = {c.name for c in report.checks}
    for task_id in registry.plugin(name).tasks:
        if registry.tasks[task_id].train is not None:
            assert f"{task_id}: runs with weights= the fresh checkpoint" in names
