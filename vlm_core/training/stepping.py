"""One optimizer step, two ways.

*Automatic* (the default): the task gives ``loss(model, batch)``; the trainer runs forward
and backward over ``grad_accum`` micro-batches, clips, checks for NaN/inf and steps its one
optimizer. *Manual*: the task gives ``train_step(model, batch, opt)`` and several optimizers
(a GAN's generator and discriminator); it calls ``opt.backward(loss)`` and ``opt.step(name)``
itself, and :class:`Optimizers` does the scaling, clipping, NaN/inf guard and agreement
between processes that the automatic path does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlm_core.training.config import TrainConfig
from vlm_core.training.distributed import World
from vlm_core.training.loop import TrainError, autocast, batch_len, split_loss, to_device
from vlm_core.training.setup import TrainSetup


@dataclass
class StepOutcome:
    """What one step did, before it is committed or skipped."""

    loss: float
    values: dict[str, float]
    samples: int
    grad_norm: float
    bad: bool  # a NaN/inf loss or gradient (already agreed between processes)


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class Optimizers:
    """What a manual ``train_step`` drives: named optimizers behind the trainer's guards.

    ``opt.autocast()`` is the run's precision context for forward passes; ``opt.backward(loss)``
    scales and back-propagates (recording whether the loss is finite); ``opt.step(name)``
    unscales, clips to ``clip_grad_norm``, and applies the step only when the loss and the
    gradients are finite on every process — otherwise it drops the gradients and the whole
    step counts as skipped. ``opt[name]`` is the optimizer itself.
    """

    def __init__(
        self,
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        dtype: torch.dtype | None,
        clip: float | None,
        world: World,
    ) -> None:
        self._optimizers = dict(optimizers)
        self._scaler, self._device, self._dtype = scaler, device, dtype
        self._clip, self._world = clip, world
        self._pending_bad = False
        self.bad = False
        self.grad_norms: dict[str, float] = {}

    def __getitem__(self, name: str) -> torch.optim.Optimizer:
        try:
            return self._optimizers[name]
        except KeyError:
            raise TrainError(
                f"no optimizer named '{name}' (there are: {', '.join(self._optimizers)})"
            ) from None

    def names(self) -> list[str]:
        return list(self._optimizers)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self._device, self._dtype)

    def reset(self) -> None:
        self._pending_bad = False
        self.bad = False
        self.grad_norms = {}

    def backward(self, loss: torch.Tensor) -> None:
        if loss.numel() != 1:
            raise TrainError(f"backward needs a scalar loss, got shape {tuple(loss.shape)}")
        if not math.isfinite(float(loss.detach().float())):
            self._pending_bad = True
        self._scaler.scale(loss).backward()

    def zero_grad(self, name: str | None = None) -> None:
        for key in [name] if name else self._optimizers:
            self[key].zero_grad(set_to_none=True)

    def step(self, name: str) -> bool:
        """Apply optimizer ``name``'s step; False when it was skipped as non-finite."""
        optimizer = self[name]
        self._scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = 0.0
        if params:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self._clip or float("inf")))
        self.grad_norms[name] = norm
        fp16 = self._dtype is torch.float16  # the scaler skips overflowing fp16 steps itself
        bad = self._pending_bad or (not fp16 and not math.isfinite(norm))
        self._pending_bad = False
        if self._world.any(bad):
            self.bad = True
            optimizer.zero_grad(set_to_none=True)
            return False
        self._scaler.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        return True


def _lr_of(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


class AutoStepper:
    """``loss(model, batch)``, gradient accumulation, one optimizer."""

    def __init__(
        self,
        setup: TrainSetup,
        config: TrainConfig,
        model: nn.Module,
        make_optimizer: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer],
        lr_lambda: Callable[[int], float],
        *,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        dtype: torch.dtype | None,
        world: World,
        task: str,
    ) -> None:
        if setup.loss is None:
            raise TrainError(f"task '{task}' gives neither a loss nor a train_step")
        self.setup, self.config, self.model = setup, config, model
        self.optimizer = make_optimizer(model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.scaler, self.device, self.dtype = scaler, device, dtype
        self.world, self.task = world, task

    def step(self, train_model: nn.Module, batches: Iterator[Any]) -> StepOutcome:
        accum = self.config.grad_accum
        total = torch.zeros((), device=self.device)
        extras: dict[str, float] = {}
        samples = 0
        assert self.setup.loss is not None
        for i in range(accum):
            batch = to_device(next(batches), self.device)
            samples += batch_len(batch)
            sync = self.world.distributed and i < accum - 1
            context = train_model.no_sync() if sync else contextlib.nullcontext()  # type: ignore[operator]
            with context:
                with autocast(self.device, self.dtype):
                    loss, extra = split_loss(self.setup.loss(train_model, batch), self.task)
                self.scaler.scale(loss / accum).backward()
            total += loss.detach().float() / accum
            for key, value in extra.items():
                scalar = _scalar(value)
                if scalar is not None:
                    extras[key] = extras.get(key, 0.0) + scalar / accum
        loss_value = float(total.item())
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = 0.0
        if params:
            limit = self.config.clip_grad_norm or float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
        bad = not math.isfinite(loss_value) or (
            self.dtype is not torch.float16 and not math.isfinite(norm)
        )
        return StepOutcome(loss_value, extras, samples, norm, self.world.any(bad))

    def commit(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def skip(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def lr(self) -> float:
        return _lr_of(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class ManualStepper:
    """``train_step(model, batch, opt)`` with the task's named optimizers."""

    def __init__(
        self,
        setup: TrainSetup,
        config: TrainConfig,
        model: nn.Module,
        lr_lambda: Callable[[int], float],
        *,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        dtype: torch.dtype | None,
        world: World,
        task: str,
    ) -> None:
        if setup.optimizers is None:
            raise TrainError(f"task '{task}': a train_step needs optimizers(model, config)")
        if config.grad_accum != 1:
            raise TrainError("grad_accum must be 1 for a task with its own train_step")
        made = dict(setup.optimizers(model, config))
        if not made:
            raise TrainError(f"task '{task}': optimizers() returned none")
        self.setup, self.device, self.task = setup, device, task
        self.scaler = scaler
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda) for name, opt in made.items()
        }
        self.opt = Optimizers(made, scaler=scaler, device=device, dtype=dtype,
                              clip=config.clip_grad_norm, world=world)  # fmt: skip

    def step(self, train_model: nn.Module, batches: Iterator[Any]) -> StepOutcome:
        batch = to_device(next(batches), self.device)
        self.opt.reset()
        # gradients never leak from one step into the next (a generator's backward also fills
        # the discriminator's), which also keeps a resumed run identical to an uninterrupted one
        self.opt.zero_grad()
        assert self.setup.train_step is not None
        out = self.setup.train_step(train_model, batch, self.opt)
        values = {k: v for k, v in ((k, _scalar(v)) for k, v in dict(out or {}).items())
                  if v is not None}  # fmt: skip
        loss = values.pop("loss", None)
        if loss is None:
            loss = sum(values.values()) if values else 0.0
        norm = max(self.opt.grad_norms.values(), default=0.0)
        return StepOutcome(loss, values, batch_len(batch), norm, self.opt.bad)

    def commit(self) -> None:
        self.scaler.update()
        for scheduler in self.schedulers.values():
            scheduler.step()

    def skip(self) -> None:
        self.opt.zero_grad()
        self.commit()

    def lr(self) -> float:
        return _lr_of(self.opt[self.opt.names()[0]])

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": {n: self.opt[n].state_dict() for n in self.opt.names()},
            "scheduler": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = dict(state["optimizer"])
        if set(saved) != set(self.opt.names()):
            raise TrainError(
                f"the checkpoint holds optimizers {sorted(saved)}, the task has "
                f"{sorted(self.opt.names())}"
            )
        for name, sd in saved.items():
            self.opt[name].load_state_dict(sd)
        for name, sd in dict(state["scheduler"]).items():
            self.schedulers[name].load_state_dict(sd)
        self.scaler.load_state_dict(state["scaler"])
