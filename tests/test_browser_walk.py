"""The browser walk: a real `vlm dashboard` in headless Chromium, every task run from its bundled
sample on the Run page, one task trained from the Train page and its weights run, then every
page of the navigation opened; any Streamlit exception, error box or uncaught script error in
the browser fails it, with the server log's tail beside. Last, a second dashboard with a test
double of a task whose weights carry a familiarity model (tests/fixtures/familiarity) shows a
flagged result's warning above its answer, and its strict switch refuses the input.

Marked ``browser`` (deselected by default): run it with `bash scripts/browser_walk.sh`, which
skips in one line where Chromium or Playwright is missing. Tasks and pages are found at run
time (the installed plugins' registry, the sidebar's links), so a new task or page is walked
without a change here. Screenshots of every page and every run land in $VLM_TEST_ARTIFACTS
(default: a temporary folder); `scripts/dashboard_screenshots.py` turns them into the user
guide's docs/images/dashboard-*.png.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser
log = logging.getLogger("vlm.walk")

VIEWPORT = {"width": 1280, "height": 900}
MAX_SHOT_HEIGHT = 4000  # px: a taller page is captured down to this
RUN_TIMEOUT_S = 60  # one task from click to result (the slowest takes ~20 s on 2 CPU cores)
TRAIN_TIMEOUT_S = 90  # a tiny training from its start to its end
#: the Train page's labels of the trainer settings (TrainConfig fields) that tiny settings set
TRAINER_LABELS = {"max_steps": "steps", "epochs": "epochs", "batch_size": "batch size",
                  "lr": "learning rate", "seed": "seed"}  # fmt: skip
IDLE_TIMEOUT_S = 20  # a page that keeps its script running longer than this is stuck
#: the tiny parameters for what a sample leaves at its defaults; VLM_WALK_TINY=0 runs the
#: samples exactly as shipped (the user guide's screenshots: what an operator sees)
TINY = os.environ.get("VLM_WALK_TINY", "1") != "0"


@dataclass
class Walk:
    """The browser page on a running dashboard, and what the walk found wrong so far."""

    page: Any
    url: str
    server: Any  # the `vlm dashboard` process (subprocess.Popen)
    shots: Path
    log: Path
    tasks: list[Any]  # the installed tasks' specs, as the server's registry has them
    script_errors: list[str] = field(default_factory=list)  # uncaught errors in the browser

    def problems(self, where: str) -> list[str]:
        """Streamlit exceptions, error boxes and browser script errors now on ``where``."""
        found = [f"{where}: browser script error: {e}" for e in self.script_errors]
        self.script_errors.clear()
        for test_id in ("stException", "stAlertContentError"):
            boxes = self.page.get_by_test_id(test_id)
            found += [
                f"{where}: {_one_line(boxes.nth(i).inner_text())}" for i in range(boxes.count())
            ]
        return found

    def screenshot(self, name: str) -> None:
        """The whole page (Streamlit scrolls inside its main block, so the viewport is grown to
        the block's height for the shot)."""
        height = self.page.evaluate(
            "() => Math.max(...[...document.querySelectorAll("
            "'[data-testid=stMain], [data-testid=stMainBlockContainer], "
            "[data-testid=stSidebarContent]')].map(e => e.scrollHeight), 0)"
        )
        self.page.set_viewport_size(
            {"width": VIEWPORT["width"], "height": min(max(int(height), 600), MAX_SHOT_HEIGHT)}
        )
        try:
            self.page.evaluate(  # from the top, wherever the last click scrolled to
                "() => document.querySelectorAll('[data-testid=stMain]')"
                ".forEach(e => e.scrollTo(0, 0))"
            )
            self.page.mouse.move(0, 0)  # no hover controls over the content
            self.page.wait_for_timeout(300)  # the layout settles at the new size
            self.page.screenshot(path=str(self.shots / f"{name}.png"))
        finally:
            self.page.set_viewport_size(VIEWPORT)

    def state(self) -> str:
        """The server process and the app's status (running, connecting ...), for a failure."""
        code = self.server.poll()
        server = "running" if code is None else f"exited with {code}"
        status = self.page.get_by_test_id("stStatusWidget")
        shown = _one_line(status.first.inner_text()) if status.count() else "idle"
        return f"server process {server}, app status: {shown}"

    def failure(self, problems: list[str]) -> str:
        tail = self.log.read_text(errors="replace").splitlines()[-40:] if self.log.exists() else []
        return "\n".join([*problems, "-- server log (last lines):", *tail])


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())[:400]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _missing_tools() -> str | None:
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[browser]')"
    from vlm_dashboard.browser import chromium_path

    try:
        chromium_path()
    except RuntimeError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Chromium through Playwright, for every dashboard the walk opens."""
    missing = _missing_tools()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright
    from vlm_dashboard.browser import CHROMIUM_ARGS, chromium_path

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: $VLM_TEST_ARTIFACTS, or a temporary folder."""
    artefacts = os.environ.get("VLM_TEST_ARTIFACTS")
    folder = Path(artefacts) if artefacts else tmp_path_factory.mktemp("walk-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def _dashboard(
    browser: Any, home: Path, shots: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[Walk]:
    """`vlm dashboard` on a free port with the private VLM_HOME ``home``, and a page on it."""
    from vlm_dashboard.browser import dashboard_server, wait_idle

    env = {k: v for k, v in os.environ.items() if not k.startswith("VLM_")}
    # VLM_DEBUG: an unexpected error shows its traceback on the page, so the failure quotes it
    env.update(VLM_HOME=str(home), VLM_DEBUG="1", **(extra_env or {}))
    log = home / "server.log"
    with dashboard_server(env, log=log) as server:
        page = browser.new_page(viewport=VIEWPORT)
        try:
            page.set_default_timeout(30_000)
            state = Walk(page, server.url, server.process, shots, log, [])
            page.on("pageerror", lambda exc: state.script_errors.append(str(exc)))
            page.goto(server.url, wait_until="networkidle")
            page.get_by_test_id("stSidebarNavLink").first.wait_for()
            wait_idle(page)
            yield state
        finally:
            page.close()


@pytest.fixture(scope="module")
def walk(chromium: Any, shots: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """The dashboard of the installed plugins, and a Chromium page on it."""
    home = tmp_path_factory.mktemp("walk-home")
    with _dashboard(chromium, home, shots) as state:
        state.tasks = _tasks(home)
        yield state


def _tasks(home: Path) -> list[Any]:
    """The installed tasks, as the dashboard's registry has them (the same VLM_HOME)."""
    from vlm_core.config import settings
    from vlm_core.plugins import load_registry

    private = dataclasses.replace(settings(), config_dir=home, data_dir=home)
    registry = load_registry(private)
    return [registry.tasks[t] for t in sorted(registry.tasks)]


def _require_server(walk: Walk) -> None:
    """Fail at once, with the server's log, when the dashboard process is gone."""
    if walk.server.poll() is not None:
        pytest.fail(walk.failure([f"the dashboard server is gone ({walk.state()})"]))


def _open_page(walk: Walk, title: str, fresh: bool = False) -> None:
    """Click ``title`` in the sidebar; ``fresh``: in a new session (the app loaded again)."""
    from vlm_dashboard.browser import wait_idle

    if fresh:
        walk.page.goto(walk.url, wait_until="networkidle")
    walk.page.get_by_test_id("stSidebarNavLink").filter(has_text=title).first.click()
    walk.page.wait_for_load_state("networkidle")
    wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)


def _choose(walk: Walk, label: str, option: str) -> None:
    """Pick the option starting with ``option`` in the select box ``label`` (outside a form: the
    page reruns for it)."""
    from vlm_dashboard.browser import wait_idle

    walk.page.get_by_label(label, exact=True).first.click()
    walk.page.get_by_role("option").filter(has_text=option).first.click()
    wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)


def _fill(walk: Walk, values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> None:
    """Set the form's fields labelled with these names (or ``labels[name]``) to the values:
    numbers and text typed (Tab commits without submitting the form), a choice picked from
    its box, a switch ticked or not. A name without exactly one such field is left alone."""
    form = walk.page.get_by_test_id("stForm").first
    for name, value in values.items():
        box = form.get_by_label((labels or {}).get(name, name), exact=True)
        if box.count() != 1 or not isinstance(value, int | float | str):
            continue
        if box.get_attribute("type") == "checkbox":
            box.set_checked(bool(value), force=True)  # Streamlit hides the box under its label
        elif box.get_attribute("role") == "combobox":
            box.click()
            walk.page.get_by_role("option", name=str(value), exact=True).first.click()
        elif not isinstance(value, bool):
            box.fill(str(value))
            box.press("Tab")


def test_every_task_runs_from_its_bundled_sample(walk: Walk) -> None:
    """Each task with a sample: chosen on the Run page, its first sample, Run; a result must
    show and no error box. The parameters the sample leaves at their defaults are set to the
    task's tiny ones where the form has a plain field for them, so the walk stays fast while
    each run shows what an operator who picks the sample sees (as `vlm plugins validate` runs
    a sample: its own parameters over the tiny ones). VLM_WALK_TINY=0: the samples as shipped."""
    from vlm_dashboard.browser import choose_task, run_and_wait, wait_idle

    _require_server(walk)
    specs = [s for s in walk.tasks if s.samples]
    assert specs, "no installed task has a bundled sample"
    _open_page(walk, "Run")
    problems = walk.problems("Run page")
    for spec in specs:
        where = f"Run page, {spec.id}"
        started = time.perf_counter()
        try:
            choose_task(walk.page, spec.id)
            sample_choice = walk.page.get_by_text("Bundled sample", exact=True)
            if sample_choice.count():
                sample_choice.first.click()
                wait_idle(walk.page, quiet_ms=800)
            if TINY:
                sample = spec.samples[0]  # the one the page starts with
                tiny = spec.tiny.params.items()
                _fill(walk, {k: v for k, v in tiny if k not in sample.params})
            run = run_and_wait(walk.page, spec.id, timeout_s=RUN_TIMEOUT_S)
            # the results' renderers and downloads drawn, and their images fetched
            wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
            walk.page.wait_for_load_state("networkidle")
        except Exception as exc:  # record and walk on: one report lists every task that failed
            problems.append(
                f"{where}: {type(exc).__name__}: {_one_line(str(exc))} ({walk.state()})"
            )
            problems += walk.problems(where)
            log.info("%s: failed after %.1f s", spec.id, time.perf_counter() - started)
            if walk.server.poll() is not None:
                break  # nothing more can be walked
            walk.screenshot(f"failed-run-{spec.id}")
            _open_page(walk, "Run", fresh=True)  # a new session, so one failure stays one
            continue
        log.info("%s: %d result(s), %.1f s", spec.id, run.results, time.perf_counter() - started)
        if run.results < 1:
            problems.append(f"{where}: the run gave no result")
        problems += walk.problems(where)
        walk.screenshot(f"run-{spec.id}")
    assert not problems, walk.failure(problems)


def test_a_task_trains_from_the_train_page(walk: Walk, tmp_path: Path) -> None:
    """The first task that can train with tiny settings: its tiny data set written, the Train
    form filled with its tiny training parameters and trainer settings, Start training; the
    job must complete with no error box, and its weights must run on the Run page."""
    from vlm_dashboard.browser import run_and_wait, wait_idle

    _require_server(walk)
    specs = [s for s in walk.tasks if s.train and s.tiny.train_data]
    if not specs:
        pytest.skip("no installed task can train with tiny settings")
    spec, tiny = specs[0], specs[0].tiny
    data = tiny.resolve_train_data()(tmp_path / "data", **tiny.train_data_args) or tmp_path / "data"
    page, started = walk.page, time.perf_counter()
    _open_page(walk, "Train")
    _choose(walk, "task", f"{spec.id} — ")
    for unit in ("max_steps", "epochs"):
        if unit in tiny.train_config:  # the length field is drawn in the unit chosen
            unit_choice = page.get_by_test_id("stRadio").filter(has_text="train for")
            unit_choice.get_by_text(TRAINER_LABELS[unit], exact=True).first.click()
            wait_idle(page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
    _fill(walk, {"data folder": str(data), **tiny.train_params})
    _fill(walk, tiny.train_config, labels=TRAINER_LABELS)
    page.get_by_role("button", name="Start training", exact=True).click()
    ended = page.get_by_role("heading", name=re.compile(rf"^{re.escape(spec.id)} · "))
    ended = ended.filter(has_not_text=re.compile(r"starting|running|stopping"))
    problems = walk.problems("Train page")
    try:
        ended.first.wait_for(timeout=TRAIN_TIMEOUT_S * 1000)
        wait_idle(page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
    except Exception as exc:
        problems.append(f"Train page, {spec.id}: {type(exc).__name__}: {_one_line(str(exc))}")
    problems += walk.problems(f"Train page, {spec.id}")
    status = _one_line(ended.first.inner_text()) if ended.count() else "still running"
    log.info("training %s: %s, %.1f s", spec.id, status, time.perf_counter() - started)
    if not status.endswith("completed"):
        problems.append(f"Train page, {spec.id}: the job ended '{status}', not completed")
    walk.screenshot(f"train-{spec.id}")
    use = page.get_by_role("button", name="Use these weights on the Run page")
    if not problems and use.count():
        use.first.click()
        page.wait_for_load_state("networkidle")
        wait_idle(page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
        try:
            run = run_and_wait(page, spec.id, timeout_s=RUN_TIMEOUT_S)
            assert run.results >= 1, "no result"
            log.info("%s with the trained weights: %d result(s)", spec.id, run.results)
            wait_idle(page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)  # the results drawn
        except Exception as exc:
            problems.append(f"Run page, {spec.id} with the trained weights: {exc}")
        problems += walk.problems(f"Run page, {spec.id} with the trained weights")
    assert not problems, walk.failure(problems)


def test_every_page_opens_without_an_error(walk: Walk) -> None:
    """Every page of the sidebar's navigation, in its order: no exception and no error box.
    History opens the newest run (the walk's last), so its stored results are drawn too."""
    _require_server(walk)
    links = walk.page.get_by_test_id("stSidebarNavLink")
    titles = [_one_line(links.nth(i).inner_text()) for i in range(links.count())]
    titles = [re.sub(r"^\W+", "", t).strip() for t in titles]  # the icon, when it is text
    assert {"Home", "Run", "History", "Train", "Plugins", "System"} <= set(titles), titles
    problems: list[str] = []
    for title in titles:
        try:
            _open_page(walk, title)
        except Exception as exc:
            problems.append(
                f"{title} page: {type(exc).__name__}: {_one_line(str(exc))} ({walk.state()})"
            )
            continue
        problems += walk.problems(f"{title} page")
        walk.screenshot(_slug(title))
        log.info("%s page: opened", title)
    assert not problems, walk.failure(problems)


def test_the_newest_run_runs_again_from_history(walk: Walk) -> None:
    """History opens the newest run; **Run again with these parameters** opens it on the Run
    page, where it runs again without an error box."""
    from vlm_dashboard.browser import RESULT, run_and_wait, wait_idle

    _require_server(walk)
    _open_page(walk, "History")
    heading = walk.page.get_by_role("heading", name=re.compile(r"^\W*[0-9a-f]{8} · [\w.]+ · "))
    if not heading.count():
        pytest.skip("the run store holds no run (every task failed)")
    task = _one_line(heading.first.inner_text()).split(" · ")[1]
    walk.page.get_by_role("button", name="Run again with these parameters").first.click()
    walk.page.wait_for_load_state("networkidle")
    wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
    assert not walk.page.get_by_text(RESULT).count(), "the Run page shows an old result"
    problems = walk.problems(f"Run page, {task} again from History")
    try:
        run = run_and_wait(walk.page, task, timeout_s=RUN_TIMEOUT_S)
        assert run.results >= 1, "no result"
        log.info("%s again from History: %d result(s)", task, run.results)
        wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)  # the results drawn
    except Exception as exc:
        problems.append(f"Run page, {task} again from History: {exc} ({walk.state()})")
    problems += walk.problems(f"Run page, {task} again from History")
    assert not problems, walk.failure(problems)


def test_the_walk_sees_an_error_box(walk: Walk) -> None:
    """The walk's own check: a text file uploaded as a PNG to the first task that takes files
    is refused in an error box, and the walk finds it (a Streamlit release that renamed its
    test ids would otherwise let every error pass unseen)."""
    from vlm_dashboard.browser import choose_task, wait_idle

    _require_server(walk)
    specs = [s for s in walk.tasks if s.samples and s.inputs]
    if not specs:
        pytest.skip("no installed task takes input files")
    _open_page(walk, "Run", fresh=True)
    choose_task(walk.page, specs[0].id)
    walk.page.get_by_text("Upload files", exact=True).first.click()
    wait_idle(walk.page, quiet_ms=800)
    upload = walk.page.get_by_test_id("stFileUploaderDropzoneInput").first
    upload.set_input_files(
        {"name": "not-an-image.png", "mimeType": "image/png", "buffer": b"just some text\n"}
    )
    walk.page.get_by_text("not-an-image.png").first.wait_for()
    walk.page.get_by_role("button", name="Run", exact=True).first.click()
    walk.page.get_by_test_id("stAlertContentError").first.wait_for()
    wait_idle(walk.page)
    problems = walk.problems("Run page")
    assert any("not-an-image.png" in p for p in problems), problems


def test_a_flagged_result_shows_its_warning_and_strict_mode_refuses_it(
    chromium: Any, shots: Path, tmp_path: Path
) -> None:
    """A second dashboard with one task, a test double that records the verdict of a
    familiarity model (tests/fixtures/familiarity; the engine is tested in the core and the
    plugins): run on its sample, a real photograph, the result's warning must be visible above
    its answer, in the CLI's words; with 'Refuse inputs unlike the training data' switched on,
    the run must be refused in an error box instead."""
    from conftest import REPO, pip_install_target
    from vlm_dashboard.browser import choose_task, run_and_wait, wait_idle

    site, home = tmp_path / "site", tmp_path / "home"
    home.mkdir()
    pip_install_target([REPO / "tests/fixtures/familiarity/vlm-fixture-unfamiliar"], site)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    extra = {"PYTHONPATH": path, "VLM_PLUGINS": "unfamiliar"}
    task = "unfamiliar.describe"
    warned = "chelsea.png looks unlike unfamiliar.describe's training data (score 9 > 1)"
    with _dashboard(chromium, home, shots, extra) as walk:
        _open_page(walk, "Run")
        choose_task(walk.page, task)
        run = run_and_wait(walk.page, task, timeout_s=RUN_TIMEOUT_S)
        assert run.results == 1
        wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
        warning = walk.page.get_by_test_id("stAlertContentWarning").filter(has_text=warned)
        warning.first.wait_for(state="visible")
        answer = walk.page.get_by_text("mean brightness").first
        above = warning.first.bounding_box(), answer.bounding_box()
        assert above[0] and above[1] and above[0]["y"] < above[1]["y"], "warning below answer"
        problems = walk.problems(f"Run page, {task}")
        walk.screenshot("run-flagged")
        assert not problems, walk.failure(problems)

        switch = walk.page.get_by_label("Refuse inputs unlike the training data", exact=True)
        switch.set_checked(True, force=True)  # Streamlit hides the box under its label
        with pytest.raises(RuntimeError, match="refused in strict mode"):
            run_and_wait(walk.page, task, timeout_s=RUN_TIMEOUT_S)
        wait_idle(walk.page, quiet_ms=800, timeout_s=IDLE_TIMEOUT_S)
        refused = walk.page.get_by_test_id("stAlertContentError").filter(has_text="refused")
        assert refused.first.is_visible()
        assert not walk.page.get_by_test_id("stAlertContentWarning").filter(has_text=warned).count()
        walk.screenshot("run-strict-refused")
