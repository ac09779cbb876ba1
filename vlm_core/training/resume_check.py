"""Does a task's training resume bit for bit? :func:`check_resume` trains it twice and compares.

    from vlm_core.training.api import TrainRequest
    from vlm_core.training.resume_check import check_resume

    request = TrainRequest("medical.classify", data, out, params={"augment": True},
                           config={"max_steps": 6, "batch_size": 2, "save_every": 2})
    check = check_resume(request, kill_at=3)
    assert check.identical, check.summary()

One run goes straight to the end (``out/straight``). The other (``out/resumed``) dies at the
end of step ``kill_at`` — an exception no ``except Exception`` catches, raised before that
step is validated or saved, as a crash or a kill would leave it — and is resumed with
``resume=True`` from its last checkpoint, which replays the steps after that checkpoint. The
final checkpoints' weights and training state (optimizer, scheduler, EMA, generators) are
compared tensor by tensor with :func:`torch.equal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vlm_core.errors import UsageError
from vlm_core.plugins import Registry
from vlm_core.training.api import TrainRequest, train_task
from vlm_core.training.config import TrainConfig
from vlm_core.training.trainer import TrainEvent, TrainResult


class Killed(BaseException):
    """Ends a training run where a kill would (a BaseException: the trainer's guards around
    progress callbacks catch only ``Exception``)."""


@dataclass(frozen=True)
class ResumeCheck:
    """How an interrupted and resumed run compares with an uninterrupted one."""

    kill_step: int
    resumed_from: int | None  # the checkpoint's step (None: nothing was saved, so from scratch)
    total_steps: int
    compared: int  # tensors compared (weights and training state)
    differing: list[str] = field(default_factory=list)  # "file:key" of tensors that differ
    max_abs_diff: float = 0.0

    @property
    def identical(self) -> bool:
        return not self.differing

    def summary(self) -> str:
        where = f"from step {self.resumed_from}" if self.resumed_from is not None else "anew"
        head = (
            f"killed at step {self.kill_step} of {self.total_steps}, resumed {where}: "
            f"{len(self.differing)} of {self.compared} tensors differ"
        )
        if self.identical:
            return head
        examples = ", ".join(self.differing[:3])
        return f"{head} (max abs diff {self.max_abs_diff:.3g}; e.g. {examples})"


def given_config(config: Mapping[str, Any] | TrainConfig) -> dict[str, Any]:
    """The settings a request gives (a mapping, or those set on a :class:`TrainConfig`)."""
    if isinstance(config, TrainConfig):
        return config.model_dump(include=config.model_fields_set)
    return dict(config)


def _compare(straight: Path, resumed: Path) -> tuple[int, list[str], float]:
    import torch
    from safetensors.torch import load_file

    from vlm_core.training.checkpoint import STATE_FILE, find_checkpoint
    from vlm_core.weights.trained import MODEL_FILE

    a, b = find_checkpoint(straight), find_checkpoint(resumed)
    if a is None or b is None:
        raise UsageError("the check's runs saved no checkpoint")
    compared, differing, worst = 0, [], 0.0
    for name in (MODEL_FILE, STATE_FILE):
        ta, tb = load_file(a.path / name), load_file(b.path / name)
        for key in sorted(set(ta) | set(tb)):
            compared += 1
            x, y = ta.get(key), tb.get(key)
            if x is None or y is None or x.shape != y.shape or x.dtype != y.dtype:
                differing.append(f"{name}:{key}")
                continue
            if not torch.equal(x, y):
                differing.append(f"{name}:{key}")
                if x.is_floating_point():
                    worst = max(worst, float((x.double() - y.double()).abs().max()))
    return compared, differing, worst


def check_resume(
    request: TrainRequest, *, kill_at: int, registry: Registry | None = None
) -> ResumeCheck:
    """Train ``request`` straight and killed at step ``kill_at`` then resumed (see the module
    docstring), both into sub-folders of ``request.out``; compare the final checkpoints.

    The runs log every step (``log_every=1``, which does not change what is trained).
    """
    if request.out is None:
        raise UsageError("check_resume needs request.out, the folder of its two runs")
    config = {**given_config(request.config), "log_every": 1}
    base = replace(request, config=config, resume=False)
    root = Path(request.out)
    straight: TrainResult = train_task(replace(base, out=root / "straight"), registry=registry)
    if not 0 < kill_at < straight.total_steps:
        raise UsageError(f"kill_at must lie in 1..{straight.total_steps - 1}, got {kill_at}")

    def kill(event: TrainEvent) -> None:
        if event.kind == "log" and event.step == kill_at:
            raise Killed(f"killed at step {kill_at}")

    try:
        train_task(replace(base, out=root / "resumed"), callbacks=[kill], registry=registry)
    except Killed:
        pass
    else:
        raise UsageError(f"the run to kill ended before step {kill_at}")
    from vlm_core.training.checkpoint import find_checkpoint

    saved = find_checkpoint(root / "resumed")
    resumed_from = saved.step if saved is not None else None
    resumed = train_task(replace(base, out=root / "resumed", resume=True), registry=registry)
    if resumed.step != straight.step:
        raise UsageError(
            f"the resumed run ended at step {resumed.step}, the straight one at {straight.step}"
        )
    compared, differing, worst = _compare(root / "straight", root / "resumed")
    return ResumeCheck(kill_at, resumed_from, straight.total_steps, compared, differing, worst)


__all__ = ["Killed", "ResumeCheck", "check_resume", "given_config"]
