"""Stopping `vlm dashboard` by signalling the `vlm` process alone stops its Streamlit server.

Issue 27, item 2: a SIGINT or SIGTERM to the parent (``kill PID``, a service manager's stop)
left the Streamlit child serving the port. These start the real command and signal only the
parent; the supervisor itself (:mod:`vlm_core.cli.supervise`) is also driven with small Python
children that ignore signals or leave a grandchild behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

posix_only = pytest.mark.skipif(os.name != "posix", reason="signals to a process are POSIX")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listeners(port: int) -> list[psutil._common.sconn]:
    return [
        c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
    ]


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(predicate())  # type: ignore[operator]


def _start_dashboard(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_core.cli", "dashboard", "--port", str(port), "--host",
         "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,  # a group of its own: only what this test sends reaches it
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise RuntimeError("the dashboard did not start") from None
            time.sleep(0.1)


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_vlm_process_alone_stops_the_server(signum: int) -> None:
    port = _free_port()
    proc = _start_dashboard(port)
    parent = psutil.Process(proc.pid)
    tree = [parent, *parent.children(recursive=True)]
    try:
        assert len(tree) >= 2, "vlm dashboard runs Streamlit in a child process"
        assert _listeners(port), "the server listens on its port"
        os.kill(proc.pid, signum)  # the parent alone, not its process group
        assert _wait_for(lambda: not _listeners(port), 5), f"port {port} still served after 5 s"
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, f"still running 5 s after {signal.Signals(signum).name}: {alive}"
        assert proc.wait(1) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        for p in tree:
            if p.is_running():
                p.kill()


def _supervise(child: str, tmp_path: Path, grace_s: float) -> subprocess.Popen[bytes]:
    """A process that runs ``child`` (Python source) under :func:`run_supervised`."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(child))
    code = (
        "import sys\nfrom vlm_core.cli.supervise import run_supervised\n"
        f"sys.exit(run_supervised([sys.executable, {str(script)!r}], grace_s={grace_s}, "
        "name='the test child'))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, stderr=subprocess.PIPE, start_new_session=True
    )


def _wait_ready(tmp_path: Path, proc: subprocess.Popen[bytes]) -> None:
    assert _wait_for(lambda: (tmp_path / "ready").exists() or proc.poll() is not None, 10)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""


@posix_only
def test_a_child_that_ignores_the_signal_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    proc = _supervise(
        """
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path("ready").touch()
        time.sleep(60)
        """,
        tmp_path,
        grace_s=0.5,
    )
    _wait_ready(tmp_path, proc)
    child = psutil.Process(proc.pid).children()[0]
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(5) == 128 + signal.SIGKILL
    assert time.monotonic() - started < 3
    assert not child.is_running()
    assert b"the test child did not stop within 0.5 s; killing it" in (proc.stderr.read() or b"")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_stops_when_its_parent_is_killed_outright(tmp_path: Path) -> None:
    proc = _supervise(
        """
        import pathlib, time
        pathlib.Path("ready").touch()
        time.sleep(60)
        """,
        tmp_path,
        grace_s=5,
    )
    _wait_ready(tmp_path, proc)
    (child,) = psutil.Process(proc.pid).children()
    os.kill(proc.pid, signal.SIGKILL)  # no handler of the parent runs: the kernel tells the child
    proc.wait(5)
    _, alive = psutil.wait_procs([child], timeout=3)
    assert not alive, "the child outlived its killed parent"


@posix_only
def test_what_the_child_leaves_behind_is_stopped_too(tmp_path: Path) -> None:
    proc = _supervise(
        """
        import pathlib, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pathlib.Path("grandchild").write_text(str(grandchild.pid))
        pathlib.Path("ready").touch()
        time.sleep(60)  # SIGTERM ends this process and orphans the grandchild
        """,
        tmp_path,
        grace_s=0.5,
    )
    _wait_ready(tmp_path, proc)
    grandchild = psutil.Process(int((tmp_path / "grandchild").read_text()))
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(5) == 128 + signal.SIGTERM
    _, alive = psutil.wait_procs([grandchild], timeout=3)
    assert not alive, "the grandchild outlived the stop"


@posix_only
def test_the_supervisor_restores_its_signal_handlers(tmp_path: Path) -> None:
    from vlm_core.cli.supervise import run_supervised, stop_signals

    before = {s: signal.getsignal(s) for s in stop_signals()}
    assert run_supervised([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert {s: signal.getsignal(s) for s in stop_signals()} == before
