"""Every built-in plugin under plugins/ is installed by the set-up, healthy and conformant."""

from __future__ import annotations

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


def test_every_builtin_plugin_is_installed_healthy_and_conformant(vlm_home):
    registry = load_registry()
    listed = {name: r.status for name, r in registry.plugins.items() if name in BUILTIN}
    assert listed == dict.fromkeys(BUILTIN, "healthy"), (
        "run `bash scripts/setup.sh` to install the built-in plugins"
    )
    for name in BUILTIN:  # one test, so that no plugins under plugins/ is not a skipped test
        report = check_plugin(name, registry=registry)
        assert report.ok, f"{name}: " + "\n".join(report.problems)
