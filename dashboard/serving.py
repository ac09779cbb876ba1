"""What every dashboard session shares: the plugin registry and one queue for device work.

Both live in :func:`streamlit.cache_resource`, so they are built once per server process and
survive reruns and sessions. Models are cached by the core's process-wide model cache
(:func:`vlm_core.runtime.cache.model_cache`), never copied per rerun or per session.

Every task run goes through :class:`DeviceQueue`: one worker thread runs the jobs one after the
other, in the order they came, so concurrent sessions never put two jobs on the device at once.
The worker is not the script thread: a rerun or a closed browser tab does not interrupt a run
half way (the run finishes, is recorded in the run store and exports its outputs), and
Streamlit's control-flow exceptions never reach a plugin, where they would count as a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from vlm_core.plugins import Registry, load_registry
from vlm_core.runner import Progress, RunOutcome, RunRequest, run_task


@st.cache_resource(show_spinner="Loading plugins…")
def registry() -> Registry:
    """The plugins and their tasks, loaded once per server process and shared by every session.

    Call ``registry.clear()`` after enabling or disabling a plugin to load them again.
    """
    return load_registry()


@st.cache_data(ttl=60, show_spinner=False)
def devices() -> dict[str, Any]:
    """:func:`vlm_core.devices.device_report`, refreshed at most once a minute."""
    from vlm_core.devices import device_report

    return device_report()


@dataclass(eq=False)
class Job:
    """One piece of queued device work, its future and the progress it last reported."""

    label: str  # what runs, for people ("good.invert")
    future: Future[Any] = field(init=False, repr=False)
    fraction: float = 0.0  # in [0, 1]
    message: str = "waiting for the device"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, fraction: float, message: str = "") -> None:
        """The progress callback handed to the work (called from the worker thread)."""
        with self._lock:
            self.fraction = min(max(float(fraction), 0.0), 1.0)
            self.message = message or self.message

    def progress(self) -> tuple[float, str]:
        """The last reported ``(fraction, message)``."""
        with self._lock:
            return self.fraction, self.message


class DeviceQueue:
    """Runs jobs one at a time, in submission order, on a single worker thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlm-device")
        self._lock = threading.Lock()
        self._pending: list[Job] = []  # submitted and not finished, oldest first
        self.completed = 0

    def submit(self, work: Callable[[Progress], Any], label: str) -> Job:
        """Queue ``work(progress)``; the job's future holds its return value or exception."""
        job = Job(label)
        with self._lock:
            job.future = self._pool.submit(self._work, job, work)
            self._pending.append(job)
        return job

    def submit_run(self, request: RunRequest, registry: Registry) -> Job:
        """Queue a task run; the job's future holds the :class:`RunOutcome`."""
        return self.submit(
            lambda progress: run_task(request, registry=registry, progress=progress),
            request.task,
        )

    def run(
        self, request: RunRequest, registry: Registry, timeout: float | None = None
    ) -> RunOutcome:
        """Queue a task run and wait for it: the outcome, or the run's exception raised here."""
        outcome: RunOutcome = self.submit_run(request, registry).future.result(timeout)
        return outcome

    def ahead_of(self, job: Job) -> int:
        """How many jobs run or wait before ``job`` (0: it is running or done)."""
        with self._lock:
            return self._pending.index(job) if job in self._pending else 0

    def pending(self) -> int:
        """Jobs running or waiting."""
        with self._lock:
            return len(self._pending)

    def shutdown(self) -> None:
        """Stop taking jobs and drop the waiting ones; the running one finishes."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._pending = [job for job in self._pending if not job.future.cancelled()]

    def _work(self, job: Job, work: Callable[[Progress], Any]) -> Any:
        job.report(0.0, "running")
        try:
            return work(job.report)
        finally:
            with self._lock:
                self._pending.remove(job)
                self.completed += 1


def _release(queue: DeviceQueue) -> None:
    queue.shutdown()


@st.cache_resource(show_spinner=False, on_release=_release)
def device_queue() -> DeviceQueue:
    """The process-wide device queue shared by every session."""
    return DeviceQueue()
