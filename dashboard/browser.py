"""Drive the real dashboard in a headless browser (Playwright + Chromium): for the browser
test and the dashboard benchmarks. Playwright is optional (``pip install vlm-core[browser]``)
and imported only here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
RESULT = re.compile(r"Run ([0-9a-f]{8}) of ([\w.]+): (\d+) result")


def chromium_path() -> str:
    """Chromium from the system (Debian's ``chromium`` package), or CHROMIUM_PATH."""
    found = (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not found:
        raise RuntimeError("no Chromium found: apt-get install chromium, or set CHROMIUM_PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DashboardServer:
    url: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def dashboard_server(
    env: Mapping[str, str] | None = None, timeout: float = 90, log: Path | None = None
) -> Iterator[DashboardServer]:
    """Start `vlm dashboard` on a free port; wait until it answers; stop it afterwards.

    The server's output (its log, tracebacks included) goes to ``log``, or nowhere.
    """
    port = free_port()
    sink: IO[bytes] | int = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_core.cli", "dashboard", "--port", str(port), "--host",
         "127.0.0.1"],
        env=dict(env or os.environ), stdout=sink, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.3)
        yield DashboardServer(url, proc)
    finally:
        with suppress(ProcessLookupError):  # already gone (it crashed or was killed)
            os.killpg(proc.pid, 15)
        proc.wait(30)
        if not isinstance(sink, int):
            sink.close()


def wait_idle(page: Any, quiet_ms: int = 400, timeout_s: float = 60) -> None:
    """Wait until the app has not been running a script for ``quiet_ms``."""
    deadline = time.time() + timeout_s
    quiet_since = None
    while time.time() < deadline:
        if page.get_by_test_id("stStatusWidget").count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif (time.time() - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(25)
    raise TimeoutError(f"the dashboard kept running for {timeout_s} s")


def open_run_page(page: Any, url: str) -> None:
    page.goto(url, wait_until="networkidle")
    page.get_by_role("link", name="Run").first.click()
    page.get_by_test_id("stSelectbox").first.wait_for()
    wait_idle(page)


def choose_task(page: Any, task_id: str) -> None:
    """Pick a task in the Run page's task box and wait for the page to redraw for it."""
    box = page.get_by_test_id("stSelectbox").first
    box.click()
    page.get_by_role("option").filter(has_text=f"({task_id})").first.click()
    wait_idle(page, quiet_ms=800)  # the rerun for the new task starts within a few ms


def set_number(page: Any, label: str, value: float) -> None:
    """Type ``value`` into the number field ``label`` and wait for the rerun it starts, so that
    a click that follows is not taken while that rerun redraws the page."""
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_idle(page, quiet_ms=800)


@dataclass(frozen=True)
class BrowserRun:
    task: str
    run_id: str
    results: int
    seconds: float  # from the click on Run to the result on screen


def _text_now(locator: Any) -> str | None:
    """The element's text, or None when it is gone: a rerun can replace an element between
    the count that found it and the read (Playwright would wait its 30 s for it to return)."""
    try:
        return str(locator.inner_text(timeout=1000))
    except Exception as exc:  # Playwright's TimeoutError, not importable without Playwright
        if type(exc).__name__ != "TimeoutError":
            raise
        return None


def shown_run_id(page: Any) -> str | None:
    """The run id of the result message on screen, if any."""
    message = page.get_by_text(RESULT)
    if not message.count():
        return None
    found = RESULT.search(_text_now(message.first) or "")
    return found.group(1) if found else None


def _error_texts(page: Any) -> list[str]:
    boxes = page.get_by_test_id("stAlertContentError")
    texts = (_text_now(boxes.nth(i)) for i in range(boxes.count()))
    return [text for text in texts if text is not None]


def run_and_wait(page: Any, task_id: str, timeout_s: float = 120) -> BrowserRun:
    """Click Run and wait for a new result message of this task; seconds from click to result.

    An error box raises RuntimeError with its text: a new one at once; one already on screen
    before the click (the page keeps showing it until the rerun replaces it) only when it is
    still there once the app has been idle for 3 s.
    """
    previous = shown_run_id(page)
    stale = set(_error_texts(page))
    start = time.perf_counter()
    page.get_by_role("button", name="Run", exact=True).first.click()
    deadline = time.time() + timeout_s
    idle_since: float | None = None
    while time.time() < deadline:
        message = page.get_by_text(RESULT)
        if message.count():
            found = RESULT.search(_text_now(message.first) or "")
            if found and found.group(1) != previous and found.group(2) == task_id:
                seconds = time.perf_counter() - start
                return BrowserRun(task_id, found.group(1), int(found.group(3)), seconds)
        errors = _error_texts(page)
        fresh = [e for e in errors if e not in stale]
        running = page.get_by_test_id("stStatusWidget").count() > 0
        idle_since = None if running else (idle_since or time.time())
        if fresh or (errors and idle_since is not None and time.time() - idle_since > 3):
            raise RuntimeError(f"{task_id}: {(fresh or errors)[0]}")
        page.wait_for_timeout(25)
    raise TimeoutError(f"{task_id}: no result within {timeout_s} s")
