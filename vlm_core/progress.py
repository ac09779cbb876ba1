"""Progress of long work, shown the same way everywhere: training, runs over many inputs, a task
that reports its own iterations.

On a terminal a rich bar (elapsed, ETA, a short info text); anywhere else (a log file, CI,
``nohup``) plain lines, one when at least ``every_s`` seconds *and* ``every_fraction`` of the
work have passed since the last one (the rarer of the two sets the pace), like Ultralytics'
and tqdm's non-interactive output. :class:`Pace` holds the arithmetic (elapsed, rate, ETA) so a
display that is not a stream (the dashboard) can show the same figures.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from vlm_core.training.trainer import TrainEvent

Clock = Callable[[], float]

#: a plain line at most this often (seconds) ...
EVERY_S = 10.0
#: ... and only after this share of the work
EVERY_FRACTION = 0.05


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (as rich's time columns show it); ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Pace:
    """Elapsed time, rate and ETA of work measured in any unit (steps, a fraction of a run).

    The rate counts only work done since the first :meth:`update`, so a resumed run's ETA
    comes from its own speed, not from the steps an earlier process did.

    Args:
        total: how much work there is, in the unit of ``completed``.
        clock: seconds from an arbitrary origin (default ``time.monotonic``).
    """

    def __init__(self, total: float, *, clock: Clock | None = None) -> None:
        self.clock = clock or time.monotonic
        self.total = total
        self.started = self.clock()
        self.completed = 0.0
        self._base: tuple[float, float] | None = None  # (time, completed) at the first update
        self._now = self.started

    def update(self, completed: float, total: float | None = None) -> None:
        if total is not None:
            self.total = total
        self._now = self.clock()
        self.completed = completed
        if self._base is None:
            self._base = (self._now, completed)

    @property
    def elapsed(self) -> float:
        """Seconds since this pace started (read now: it goes on between updates)."""
        return self.clock() - self.started

    @property
    def fraction(self) -> float:
        return min(max(self.completed / self.total, 0.0), 1.0) if self.total > 0 else 0.0

    @property
    def rate(self) -> float | None:
        """Work per second since the first update; None before any work was measured."""
        if self._base is None:
            return None
        seconds, done = self._now - self._base[0], self.completed - self._base[1]
        return done / seconds if seconds > 0 and done > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while unknown."""
        if self.completed >= self.total:
            return 0.0
        rate = self.rate
        return (self.total - self.completed) / rate if rate else None

    def text(self) -> str:
        """``elapsed 0:01:05  ETA 0:03:10``."""
        return f"elapsed {format_duration(self.elapsed)}  ETA {format_duration(self.eta)}"


class ProgressDisplay:
    """A rich bar on a terminal, plain throttled lines elsewhere; nothing when ``quiet``.

    Args:
        label: what is being done (a task id); leads every plain line.
        total: the amount of work, in the unit of :meth:`update`'s ``completed`` (None: not
            known yet; :meth:`update` can give it).
        unit: the name of one piece of work (``"step"``) shown as ``step N/M``; without it the
            position is a percentage.
        quiet: show nothing.
        stream: where to write (default ``sys.stderr``).
        tty: force the bar (True) or the plain lines (False); default: whether ``stream`` is
            a terminal.
        clock: the time source of the plain lines' pace (tests pass a fake one).
        every_s, every_fraction: a plain line once both have passed since the last one.
    """

    def __init__(
        self,
        label: str,
        *,
        total: float | None = 1.0,
        unit: str | None = None,
        quiet: bool = False,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Clock | None = None,
        every_s: float = EVERY_S,
        every_fraction: float = EVERY_FRACTION,
    ) -> None:
        self.label, self.unit, self.quiet = label, unit, quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s, self.every_fraction = every_s, every_fraction
        self.pace = Pace(total or 0.0, clock=clock)
        self.lines = 0  # plain progress lines written so far
        self._last: tuple[float, float] | None = None  # (time, completed) of the last line
        self._info = ""
        self._bar: Any = None
        self._job: Any = None

    def __enter__(self) -> ProgressDisplay:
        if not self.quiet and self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            position = MofNCompleteColumn() if self.unit else TaskProgressColumn()
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                position,
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
                transient=True,
            )
            self._bar.start()
            self._job = self._bar.add_task(self.label, total=self.pace.total or None, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(
        self, completed: float, *, total: float | None = None, info: str | None = None
    ) -> None:
        """Move to ``completed`` (with ``info``, a short text such as the loss); a plain line
        is written when the pace allows."""
        self.pace.update(completed, total)
        if info is not None:
            self._info = info
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._job, completed=completed, total=total, info=self._info)
            return
        if self._last is None:
            self._last = (self.pace.started, completed)  # the pace counts from the start
            return
        since_s = self.pace.clock() - self._last[0]
        share = (completed - self._last[1]) / self.pace.total if self.pace.total > 0 else 0.0
        if since_s >= self.every_s and share >= self.every_fraction:
            self._write_progress()

    def finish(self) -> None:
        """Write the final plain line, unless the last one was written at this position (the
        bar simply goes away)."""
        if self.quiet or self._bar is not None:
            return
        if self.lines == 0 or self._last is None or self._last[1] != self.pace.completed:
            self._write_progress()

    def note(self, message: str) -> None:
        """A line of its own (a validation's figures, a warning), above the bar if there is
        one."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            self._write(message)

    def line(self) -> str:
        """The plain progress line for the current position."""
        pace = self.pace
        percent = f"{math.floor(pace.fraction * 100):d}%"
        if self.unit:
            position = f"{self.unit} {pace.completed:.0f}/{pace.total:.0f} ({percent})"
        else:
            position = percent
        parts = [f"{self.label}: {position}" if self.label else position]
        if self._info:
            parts.append(self._info)
        parts.append(pace.text())
        return "  ".join(parts)

    def _write_progress(self) -> None:
        self._write(self.line())
        self._last = (self.pace.clock(), self.pace.completed)
        self.lines += 1

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class TrainProgress:
    """The trainer callback behind `vlm train`'s progress: ``step N/M``, the mean training
    loss since the last line, samples per second, elapsed and ETA; a line per validation, a
    warning per skipped step, and ``resuming from step N of M (checkpoint PATH)``."""

    def __init__(self, display: ProgressDisplay) -> None:
        self.display = display
        self._loss_sum, self._loss_n = 0.0, 0
        self._logged_loss: float | None = None
        self._first_samples: tuple[float, int] | None = None  # (time, samples) of the start

    def __call__(self, event: TrainEvent) -> None:
        display = self.display
        kind = event.kind
        if kind == "start":
            self._first_samples = (display.pace.clock(), event.samples)
            if event.resumed_from:
                display.note(
                    f"resuming from step {event.step} of {event.total_steps} "
                    f"(checkpoint {event.resumed_from})"
                )
        elif kind == "step" and event.loss is not None and math.isfinite(event.loss):
            self._loss_sum += event.loss
            self._loss_n += 1
        elif kind == "log" and "train_loss" in event.values:
            self._logged_loss = float(event.values["train_loss"])
        elif kind == "validate":
            shown = "  ".join(f"{k}={v:.4g}" for k, v in sorted(event.values.items()))
            display.note(f"step {event.step}/{event.total_steps}: {shown}")
        elif kind == "nonfinite":
            display.note(f"warning: {event.message}")
        lines = display.lines
        display.update(event.step, total=event.total_steps, info=self._info(event))
        if kind == "end":
            display.finish()
        if display.lines != lines or kind == "end":
            self._loss_sum, self._loss_n = 0.0, 0

    def _info(self, event: TrainEvent) -> str:
        parts = []
        if self._loss_n and not self.display.tty:
            parts.append(f"loss={self._loss_sum / self._loss_n:.4g}")
        elif self._logged_loss is not None:
            parts.append(f"loss={self._logged_loss:.4g}")
        elif self._loss_n:
            parts.append(f"loss={self._loss_sum / self._loss_n:.4g}")
        if self._first_samples is not None:
            seconds = self.display.pace.clock() - self._first_samples[0]
            samples = event.samples - self._first_samples[1]
            if seconds > 0 and samples > 0:
                parts.append(f"{samples / seconds:.1f} samples/s")
        return "  ".join(parts)
