"""Training jobs started from the dashboard: background threads every session can follow.

A job runs :func:`vlm_core.training.api.train_task` on its own thread, so training survives
reruns, page changes and closed browser tabs. The trainer's events update the job; the Train
page reads a snapshot of it every second and draws the curves from the run's ``metrics.jsonl``.
Stopping a job asks the trainer to stop at the next step boundary, which saves a checkpoint.

Only ``max_running`` jobs train at once (one by default): training holds the device for long
and two jobs would compete for its memory. Task runs keep going through the device queue.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from vlm_core.errors import UsageError, VLMError
from vlm_core.plugins import Registry
from vlm_core.progress import Pace

log = logging.getLogger(__name__)

RUNNING = ("starting", "running", "stopping")


@dataclass(eq=False)
class TrainingJob:
    """One training run started from the dashboard."""

    task: str
    out: Path
    data: Path
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started: float = field(default_factory=time.time)
    status: str = "starting"
    step: int = 0
    total: int = 0
    values: dict[str, float] = field(default_factory=dict)
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    error: str | None = None
    result: dict[str, Any] | None = None
    finished: float | None = None
    _trainer: Any = field(default=None, repr=False)
    _stop: bool = field(default=False, repr=False)
    _pace: Pace | None = field(default=None, repr=False)  # elapsed and ETA, from the start event
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def running(self) -> bool:
        return self.status in RUNNING

    def attach(self, trainer: Any) -> None:
        with self._lock:
            self._trainer = trainer
            if self._stop:
                trainer.request_stop()

    def stop(self) -> None:
        """Ask the trainer to stop at the next step (it saves a checkpoint first)."""
        with self._lock:
            self._stop = True
            if self.running:
                self.status = "stopping"
            if self._trainer is not None:
                self._trainer.request_stop()

    def on_event(self, event: Any) -> None:
        """The trainer's callback (called on the job's thread)."""
        with self._lock:
            self.step, self.total = event.step, event.total_steps
            self.values.update(event.values)
            self._pace = self._pace or Pace(event.total_steps)
            self._pace.update(event.step, event.total_steps)
            if self.status == "starting":
                self.status = "running"
            if event.kind == "start" and event.step > 0:
                self.messages.append(f"resuming from step {event.step} of {event.total_steps}")
            if event.kind == "validate":
                shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(event.values.items()))
                self.messages.append(f"step {event.step}: {shown}")
            elif event.kind == "nonfinite":
                self.messages.append(event.message)

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the job's state for drawing."""
        with self._lock:
            return {
                "id": self.id,
                "task": self.task,
                "out": self.out,
                "data": self.data,
                "status": self.status,
                "step": self.step,
                "total": self.total,
                "values": dict(self.values),
                "messages": list(self.messages),
                "error": self.error,
                "result": self.result,
                "started": self.started,
                "finished": self.finished,
                # "elapsed 0:01:05  ETA 0:03:10" while it trains
                "pace": self._pace.text() if self._pace and self.running else "",
            }

    def _finish(self, status: str, *, error: str | None = None, result: Any = None) -> None:
        with self._lock:
            self.status, self.error, self.finished = status, error, time.time()
            if result is not None:
                self.result = result.to_dict()
                self.step = result.step


class TrainingJobs:
    """Every training job of this server process, newest first."""

    def __init__(self, max_running: int = 1) -> None:
        self.max_running = max_running
        self._jobs: list[TrainingJob] = []
        self._lock = threading.Lock()

    def start(self, request: Any, registry: Registry) -> TrainingJob:
        """Start ``request`` (a :class:`~vlm_core.training.api.TrainRequest` with ``out`` set)
        on a new thread.

        Raises:
            UsageError: ``max_running`` jobs are already training, another job writes to the
                same folder, or the folder holds another run's checkpoints and
                ``request.resume`` is off.
        """
        out = Path(request.out)
        _check_out(out, resume=request.resume)
        with self._lock:
            running = [j for j in self._jobs if j.running]
            for other in running:
                if other.out.resolve() == out.resolve():
                    raise UsageError(f"job {other.id} ({other.task}) is training into {out}")
            if len(running) >= self.max_running:
                raise UsageError(
                    f"{len(running)} training job(s) already running ({running[0].task}); "
                    "stop it or wait for it to finish"
                )
            job = TrainingJob(task=request.task, out=Path(request.out), data=Path(request.data))
            self._jobs.insert(0, job)
        thread = threading.Thread(
            target=self._run, args=(job, request, registry), name=f"vlm-train-{job.id}"
        )
        thread.daemon = True
        thread.start()
        return job

    def _run(self, job: TrainingJob, request: Any, registry: Registry) -> None:
        from vlm_core.training.api import train_task

        try:
            result = train_task(
                request, callbacks=[job.on_event], registry=registry, on_trainer=job.attach
            )
        except VLMError as exc:
            job._finish("failed", error=str(exc))
        except Exception as exc:  # a plugin's bug: reported on the job, the app keeps going
            log.exception("training job %s failed", job.id)
            job._finish("failed", error=f"{type(exc).__name__}: {exc}")
        else:
            job._finish(result.status, result=result)

    def jobs(self) -> list[TrainingJob]:
        with self._lock:
            return list(self._jobs)

    def get(self, job_id: str) -> TrainingJob | None:
        with self._lock:
            return next((j for j in self._jobs if j.id == job_id), None)


def _check_out(out: Path, *, resume: bool) -> None:
    """Refuse, before any data is read, an output folder the trainer would refuse: a file, or a
    folder holding another run's checkpoints when not resuming (the trainer's own rule, in
    the dashboard's words)."""
    from vlm_core.training.checkpoint import find_checkpoint

    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} is a file; choose a folder")
    if resume or not out.is_dir():
        return
    found = find_checkpoint(out, "last")
    if found is not None:
        raise UsageError(
            f"{out} already holds checkpoints (last: step {found.step}); tick 'resume' to "
            "continue that run or choose another output folder"
        )


@st.cache_resource(show_spinner=False)
def training_jobs() -> TrainingJobs:
    """The process-wide training jobs, shared by every session."""
    return TrainingJobs()
