"""Run a long-lived child process (the dashboard's Streamlit server) as part of this one.

A stop signal sent to this process alone — ``kill PID`` (SIGTERM), a service manager's stop,
SIGINT to this process, SIGHUP when its terminal closes — is forwarded to the child, which is
given :data:`GRACE_S` seconds to shut down by itself; then the child and every process it
started are killed. Whatever the child started and left behind (its process tree, taken when
the stop began) is stopped the same way, so no process of the tree keeps serving a port.

If this process dies abruptly (SIGKILL, a crash), the child is told by the kernel: on Linux the
child is started with ``prctl(PR_SET_PDEATHSIG, SIGTERM)``. That is chosen over a watchdog
thread in the child because it needs no code in the child (Streamlit runs our app script only
when a browser session connects, so a watchdog there would miss a server nobody opened), does
not poll, and fires even while the child is busy. Elsewhere (macOS, Windows) an abrupt death of
this process leaves the child running; every ordinary stop is still forwarded.

The child stays in this process's process group, so a Ctrl-C in the terminal reaches both (the
forwarded copy is harmless) and the child can still prompt on the terminal.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

import psutil

log = logging.getLogger(__name__)

#: seconds a child has to stop after a forwarded signal before it and its tree are killed
GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_POLL_S = 0.1


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop this process and are forwarded to the child."""
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK")  # SIGHUP: POSIX; SIGBREAK: Windows
    return tuple(getattr(signal, n) for n in names if hasattr(signal, n))


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when ``parent`` dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _tree(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The child and every process under it, now (empty when the child is gone)."""
    try:
        child = psutil.Process(proc.pid)
        return [child, *child.children(recursive=True)]
    except psutil.Error:
        return []


def _kill(processes: Sequence[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()  # psutil checks the pid was not reused


def run_supervised(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    name: str = "the child process",
    grace_s: float = GRACE_S,
) -> int:
    """Run ``cmd`` until it exits, forwarding stop signals to it; its exit code.

    A first stop signal is forwarded and the child gets ``grace_s`` seconds to exit; a second
    one, or the end of the grace period, kills the child and its process tree. Processes of the
    tree left behind by a child that did stop are given the rest of the grace period, then
    killed. The signal handlers this installs are removed before it returns.

    Args:
        cmd: the program and its arguments.
        env: its environment (default: this process's).
        name: what the child is, for the message when it has to be killed.
        grace_s: seconds between the forwarded signal and the kill.

    Returns:
        The child's exit code; ``128 + N`` when it ended by signal N (as a shell reports it).
    """
    proc = subprocess.Popen(
        list(cmd), env=None if env is None else dict(env), preexec_fn=_die_with_parent(os.getpid())
    )
    received: list[int] = []
    tree: list[psutil.Process] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if not received:
            tree.extend(_tree(proc))  # before the child can exit and orphan its own children
        received.append(signum)
        # SIGINT stays SIGINT (Streamlit stops cleanly on both); anything else asks for a clean
        # stop with SIGTERM (the only signal Windows can send besides a kill)
        sent = signum if signum == signal.SIGINT and os.name == "posix" else signal.SIGTERM
        with contextlib.suppress(OSError, ValueError):  # already gone
            proc.send_signal(sent)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in stop_signals()} if main_thread else {}
    try:
        deadline: float | None = None
        while True:
            try:
                code = proc.wait(timeout=_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and (len(received) > 1 or time.monotonic() > deadline):
                log.warning("%s did not stop within %g s; killing it", name, grace_s)
                _kill(tree + _tree(proc))
                code = proc.wait()
                break
        if tree:
            left = [p for p in tree[1:] if p.is_running()]
            remaining = max(0.0, deadline - time.monotonic()) if deadline else 0.0
            _, alive = psutil.wait_procs(left, timeout=remaining)
            _kill(alive)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # an exception here (not a signal): take the child down with us
            _kill(_tree(proc))
            proc.wait()
    return 128 - code if code < 0 else code
