"""Shared fixtures: fixture plugin distributions installed by pip into a private folder, and a
helper that runs the real `vlm` command against them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parent
FIXTURE_PLUGINS = HERE / "fixtures" / "plugins"
VLM = [sys.executable, "-m", "vlm_core.cli.__main__"]
#: the fixture plugins' entry-point names (tests/fixtures/plugins)
FIXTURE_PLUGIN_NAMES = ("good", "exits", "broken_hook", "broken_import", "misspelled")


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`vlm ARGV` in this process: (exit code, stdout, stderr)."""
    from vlm_core.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def plugin_statuses(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    """`vlm plugins list --json` by name, loaded afresh from the user config (as a new process
    would see it)."""
    from vlm_core.plugins import get_registry

    get_registry(reload=True)
    code, out, err = cli(["plugins", "list", "--json"], capsys)
    assert code == 0, err
    return {p["name"]: p for p in json.loads(out)}


def builtin_plugins() -> set[str]:
    """Entry-point names of the built-in plugins under plugins/ (installed by the set-up)."""
    import tomllib

    names: set[str] = set()
    for pyproject in REPO.glob("plugins/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        names |= set(project.get("entry-points", {}).get("vlm.plugins", {}))
    return names


def pip_install_target(sources: Sequence[Path], target: Path) -> None:
    """A real `pip install` of local distributions into ``target`` (put it on PYTHONPATH)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(autouse=True)
def _restore_main_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamlit's AppTest replaces sys.modules["__main__"] and leaves it replaced, which breaks
    later "spawn" subprocesses (tests/test_runstore.py); put it back after every test."""
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture plugins (one healthy, four broken in different ways), pip-installed."""
    target = tmp_path_factory.mktemp("fixture-site")
    pip_install_target(sorted(FIXTURE_PLUGINS.iterdir()), target)
    return target


class Vlm:
    """Runs `vlm` in a subprocess with its own VLM_HOME and extra sys.path entries."""

    def __init__(self, home: Path, paths: Sequence[Path]) -> None:
        self.home = home
        self.paths = list(paths)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLM_")}
        env["VLM_HOME"] = str(self.home)
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in self.paths)
        env.update(extra)
        return env

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*VLM, *args], capture_output=True, text=True, env=self.env(**env), timeout=300
        )


@pytest.fixture
def vlm(tmp_path: Path, fixture_site: Path) -> Vlm:
    home = tmp_path / "home"
    home.mkdir()
    return Vlm(home, [fixture_site])


@pytest.fixture
def vlm_bare(tmp_path: Path) -> Vlm:
    """`vlm` without the fixture plugins."""
    home = tmp_path / "home"
    home.mkdir()
    return Vlm(home, [])


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


Runner = Callable[..., subprocess.CompletedProcess[str]]
