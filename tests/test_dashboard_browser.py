"""A real browser against `vlm dashboard`: every task with a bundled sample runs from the Run
page and its result renders; screenshots are kept as artefacts.

Marked slow (run with `pytest -m slow`): the set-up installs Chromium from Debian's packages
(`apt-get install chromium`, as root) and Playwright from PyPI when they are missing.
Screenshots go to $VLM_TEST_ARTIFACTS (default: the test's temporary folder).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Vlm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser_tools() -> None:
    """Chromium and Playwright, installed from the package registries when missing."""
    if not (shutil.which("chromium") or os.environ.get("CHROMIUM_PATH")):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail("Chromium is missing; install it (apt-get install chromium)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium", "fonts-noto-color-emoji"], check=True
        )
    if importlib.util.find_spec("playwright") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], check=True)


def test_every_task_with_a_sample_runs_in_the_browser(browser_tools, fixture_site, tmp_path):
    from playwright.sync_api import sync_playwright
    from vlm_dashboard.browser import (
        CHROMIUM_ARGS,
        choose_task,
        chromium_path,
        dashboard_server,
        open_run_page,
        run_and_wait,
        wait_idle,
    )

    artefacts = Path(os.environ.get("VLM_TEST_ARTIFACTS", tmp_path / "screenshots"))
    artefacts.mkdir(parents=True, exist_ok=True)
    vlm = Vlm(tmp_path / "home", [fixture_site])
    env = vlm.env()
    (tmp_path / "home").mkdir()
    listed = json.loads(vlm("plugins", "list", "--json").stdout)
    healthy = sum(p["status"] == "healthy" for p in listed)
    assert set(_builtin_plugins()) <= {p["name"] for p in listed if p["status"] == "healthy"}
    tasks = ["good.invert", *sorted(_builtin_tasks_with_samples())]
    with dashboard_server(env) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2400})
        page.goto(server.url, wait_until="networkidle")
        page.get_by_text(f"{healthy} / {len(listed)} healthy").wait_for(timeout=120_000)
        wait_idle(page)
        page.screenshot(path=str(artefacts / "home.png"))
        open_run_page(page, server.url)
        for task in tasks:
            choose_task(page, task)
            run = run_and_wait(page, task)
            assert run.results >= 1
            page.get_by_text("Provenance").first.wait_for()
            wait_idle(page)  # the rest of the results (downloads, exports) rendered
            page.wait_for_load_state("networkidle")  # and their images fetched
            page.screenshot(path=str(artefacts / f"run-{task}.png"))
        choose_task(page, "exits.boom")
        with pytest.raises(RuntimeError, match=r"Plugin 'exits' failed in task 'exits\.boom'"):
            run_and_wait(page, "exits.boom")
        choose_task(page, "good.invert")  # the app is still usable after a plugin crashed
        assert run_and_wait(page, "good.invert").results == 1
        browser.close()
    assert (artefacts / "run-good.invert.png").stat().st_size > 10_000


def _builtin_plugins() -> set[str]:
    from test_builtin_plugins import BUILTIN

    return set(BUILTIN)


def _builtin_tasks_with_samples() -> list[str]:
    """Tasks with samples from the built-in plugins the set-up installed (plugins/*)."""
    from test_builtin_plugins import BUILTIN

    from vlm_core.plugins import load_registry

    registry = load_registry()
    return [t for t, spec in registry.tasks.items() if spec.plugin in BUILTIN and spec.samples]
