"""`vlm eval TASK --shift NAME`: a trainable task's metrics on held-out data its own
generator draws under a named shift (:class:`vlm_core.tasks.EvalShifts`), one row per shift,
so that users see where a model breaks before their data shows them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_core.errors import UsageError, did_you_mean
from vlm_core.plugins import Registry, get_registry
from vlm_core.tasks import EvalShifts, TaskSpec
from vlm_core.training.api import EvalResult, evaluate_task, recorded_params, trainable_spec


@dataclass(frozen=True)
class ShiftResult:
    """One shift's evaluation: what it changes, the data drawn and the metrics."""

    shift: str
    description: str
    seed: int
    count: int
    result: EvalResult

    def to_dict(self) -> dict[str, Any]:
        return {"shift": self.shift, "description": self.description, "shift_seed": self.seed,
                "count": self.count, **self.result.to_dict()}  # fmt: skip


def task_shifts(spec: TaskSpec) -> EvalShifts:
    """The task's shifts, or a one-line error for a task that declares none."""
    if spec.shifts is None:
        raise UsageError(
            f"task '{spec.id}' declares no named shifts: evaluate it on your own data with "
            "--data DATA"
        )
    return spec.shifts


def chosen_shifts(suite: EvalShifts, names: Sequence[str]) -> list[str]:
    """The names asked for, in the suite's order for ``all``; an unknown one is refused."""
    known = list(suite.names)
    if "all" in names:
        return known
    for name in names:
        if name not in suite.names:
            raise UsageError(
                f"unknown shift '{name}'{did_you_mean(name, known)} (shifts: "
                f"{', '.join(known)}, or all)"
            )
    return list(dict.fromkeys(names))


def evaluate_shifts(
    task: str,
    names: Sequence[str],
    *,
    count: int | None = None,
    seed: int | None = None,
    weights: str | None = None,
    params: Mapping[str, Any] | None = None,
    device: str = "auto",
    batch_size: int = 64,
    keep: Path | None = None,
    on_result: Callable[[ShiftResult], None] | None = None,
    registry: Registry | None = None,
) -> list[ShiftResult]:
    """``task``'s validation metrics of ``weights`` (None: the bundled ones) on ``count`` items
    per named shift (``all``: every one), drawn from the held-out ``seed`` (default: the
    task's) by the task's own generator.

    Every shift draws from the same seed, so the rows differ by the shift, not by luck. The
    data go to a temporary folder removed afterwards, or under ``keep/<shift>`` to look at.
    ``on_result`` hears each shift's result as soon as it is measured.
    """
    registry = registry or get_registry()
    spec = trainable_spec(task, registry, purpose="evaluate")
    suite = task_shifts(spec)
    chosen = chosen_shifts(suite, names)
    count = suite.count if count is None else count
    seed = suite.seed if seed is None else seed
    if count < 1:
        raise UsageError(f"--count must be at least 1, got {count}")
    given = {**suite.params, **dict(params or {})}
    _, trained, _, trained_params = recorded_params(spec, weights, given)  # for the writer
    card = dict(trained.card) if trained is not None else {}
    write = suite.resolve_write()
    results = []
    with tempfile.TemporaryDirectory(prefix="vlm-shift-") as scratch:
        for name in chosen:
            folder = (keep or Path(scratch)) / name
            if keep is not None and folder.exists():
                raise UsageError(f"--keep-data {keep}: {folder} exists already")
            made = write(folder, shift=name, count=count, seed=seed, params=trained_params,
                         card=card)  # fmt: skip
            result = evaluate_task(
                spec.id, Path(made or folder), weights=weights, params=given, device=device,
                batch_size=batch_size, registry=registry,
            )  # fmt: skip
            results.append(ShiftResult(name, suite.names[name], seed, count, result))
            if on_result is not None:
                on_result(results[-1])
            if keep is None:
                shutil.rmtree(folder, ignore_errors=True)
    return results
