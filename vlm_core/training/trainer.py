"""The trainer every plugin's training goes through.

The task supplies a :class:`~vlm_core.training.setup.TrainSetup`; the trainer owns the device
and precision, data order and sharding, the seeding of every random source (so that a resumed
run repeats an uninterrupted one bit for bit, augmentation included), gradient accumulation and
clipping, the EMA of weights, NaN/inf guards, validation with the task's metrics, atomic
best/last checkpoints, resume, early stopping, the metrics log, progress events and the final
report. Under ``torchrun`` it wraps the
model in :class:`~torch.nn.parallel.DistributedDataParallel`; only rank 0 writes.
"""

from __future__ import annotations

import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vlm_core import __version__
from vlm_core.runtime.seeding import derive_seed, seed_everything
from vlm_core.training import checkpoint as ckpt
from vlm_core.training.config import TrainConfig
from vlm_core.training.distributed import World
from vlm_core.training.loop import (
    TrainError,
    amp_dtype,
    dataset_len,
    micro_batches_per_epoch,
    rng_state,
    set_rng_state,
    train_loader,
    val_loader,
    validate,
)
from vlm_core.training.metrics_log import MetricsLog
from vlm_core.training.report import write_report
from vlm_core.training.seeded_data import STEP_STREAM
from vlm_core.training.setup import TrainSetup
from vlm_core.training.stepping import AutoStepper, ManualStepper

log = logging.getLogger(__name__)

Status = Literal["completed", "early_stopped", "stopped", "diverged"]

#: How a run's random numbers are drawn, recorded in every checkpoint's training state: the
#: main process's generators re-seeded from (seed, rank, step) before each optimizer step, each
#: sample's from (seed, epoch, index) (:mod:`vlm_core.training.seeded_data`), validation's
#: from (seed, rank). A run resumed from a checkpoint of another scheme cannot repeat the draws
#: the interrupted run would have made.
SEEDING = "vlm-seeding/2: step (seed, rank, step); sample (seed, epoch, index); validation"


@dataclass(frozen=True)
class TrainEvent:
    """What a progress callback receives: ``start``, ``step`` (after every optimizer step that
    was not skipped), ``log``, ``validate``, ``checkpoint``, ``nonfinite`` and ``end`` events,
    with the step, the total and the latest values."""

    kind: str
    step: int
    total_steps: int
    epoch: int
    values: Mapping[str, float] = field(default_factory=dict)
    message: str = ""
    #: samples trained on by all processes since this process started (not counting a resumed
    #: run's earlier ones): the throughput's numerator
    samples: int = 0
    #: ``step`` events: that step's training loss
    loss: float | None = None
    #: ``start`` events of a resumed run: the checkpoint it continues from
    resumed_from: str = ""


Callback = Callable[[TrainEvent], None]


@dataclass
class TrainResult:
    """How a training run ended."""

    status: Status
    step: int
    total_steps: int
    out: Path
    best: dict[str, Any] | None
    last_values: dict[str, float]
    nonfinite_skipped: int
    seconds: float
    samples_per_s: float
    message: str = ""
    #: the familiarity model fitted for the best checkpoint (its summary), None when none was
    familiarity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


def _lr_lambda(config: TrainConfig, total: int) -> Callable[[int], float]:
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
        if config.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            # biases and norm scales are not decayed (timm's and most recipes' rule)
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def versions() -> dict[str, str]:
    out = {"vlm_core": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("timm", "torchvision", "torchmetrics"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = str(getattr(module, "__version__", "?"))
    return out


class Trainer:
    """Train ``setup`` with ``config`` into the folder ``out``.

    Args:
        setup: the task's model, data, loss and metrics.
        config: the trainer's settings.
        out: the output folder (checkpoints, metrics log, report).
        world: this process among ``torchrun``'s (a world of one by default).
        device: the resolved torch device string.
        sidecar: what the caller knows about the run (task, params, data hash, command line);
            written into every checkpoint's ``model.json`` with the trainer's own fields.
        callbacks: called with each :class:`TrainEvent` (rank 0 only by convention).
        resume: continue from the last checkpoint in ``out``; without it, a folder that
            already holds checkpoints is refused.
    """

    def __init__(
        self,
        setup: TrainSetup,
        config: TrainConfig,
        out: Path,
        *,
        world: World | None = None,
        device: str = "cpu",
        sidecar: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        resume: bool = False,
    ) -> None:
        self.setup, self.config, self.out = setup, config, Path(out)
        self.world = world or World()
        self.device = torch.device(device)
        self.sidecar = dict(sidecar or {})
        # the task's own callbacks (sample grids...) write files: the main process only
        self.callbacks = list(callbacks) + (list(setup.callbacks) if self.world.is_main else [])
        self.resume = resume
        self.task = str(self.sidecar.get("task", "task"))
        self._stop_requested = False

    def request_stop(self) -> None:
        """Stop at the next step boundary, saving a checkpoint (safe from a signal handler or
        another thread, e.g. the dashboard's stop button)."""
        self._stop_requested = True

    # -- set-up --------------------------------------------------------------------------------

    def _emit(self, event: TrainEvent) -> None:
        for callback in self.callbacks:
            try:
                callback(event)
            except Exception:  # a broken progress display must not end the run
                log.exception("training callback failed on %s", event.kind)

    def _check_shapes(self) -> tuple[int, int]:
        """(micro-batch per process, optimizer steps per epoch)."""
        cfg, world = self.config, self.world
        n_train = dataset_len(self.setup.train_data, "training data")
        if self.setup.val_data is not None:
            dataset_len(self.setup.val_data, "validation data")
        per_step = world.size * cfg.grad_accum
        if cfg.batch_size % per_step:
            raise TrainError(
                f"batch_size {cfg.batch_size} is not divisible by processes x grad_accum "
                f"({world.size} x {cfg.grad_accum})"
            )
        micro = cfg.batch_size // per_step
        steps_per_epoch = micro_batches_per_epoch(self.setup, world, micro) // cfg.grad_accum
        if steps_per_epoch == 0:
            raise TrainError(
                f"the training data has {n_train} samples, fewer than one batch of "
                f"{cfg.batch_size}; lower --batch-size"
            )
        return micro, steps_per_epoch

    def _resume_state(self) -> tuple[ckpt.Checkpoint | None, dict[str, Any]]:
        found = ckpt.find_checkpoint(self.out, "last") if self.out.exists() else None
        # every process reads the checkpoint rank 0 wrote: on machines that do not share --out
        # they would start from different steps and wait for each other until a timeout
        seen = self.world.gather(found.step if found is not None else None)
        if len(set(seen)) > 1:
            raise TrainError(
                f"the training processes see different checkpoints in {self.out} (last step "
                f"by rank: {', '.join('none' if s is None else str(s) for s in seen)}); --out "
                "must be one folder every machine sees (shared storage)"
            )
        if found is None:
            if self.resume:
                log.info("nothing to resume in %s; starting from scratch", self.out)
            return None, {}
        if not self.resume:
            raise TrainError(
                f"{self.out} already holds checkpoints (last: step {found.step}); pass "
                "--resume to continue that run or choose another --out"
            )
        state = found.train_state()
        changed = self.config.changed_on_resume(dict(state.get("config", {})))
        if changed:
            raise TrainError(
                f"cannot resume {found.path}: setting(s) {', '.join(changed)} differ from the "
                "checkpoint's; keep them or start a new --out"
            )
        saved_params = found.sidecar.get("params")
        if saved_params is not None and saved_params != self.sidecar.get("params", saved_params):
            now = self.sidecar["params"]
            diff = sorted(
                k for k in set(saved_params) | set(now) if saved_params.get(k) != now.get(k)
            )
            raise TrainError(
                f"cannot resume {found.path}: task parameter(s) {', '.join(diff)} differ "
                "from the checkpoint's"
            )
        return found, state

    # -- the run -------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until the length is reached, early stopping, a stop request or divergence."""
        cfg, world, setup, device = self.config, self.world, self.setup, self.device
        micro, steps_per_epoch = self._check_shapes()
        total = cfg.max_steps or (cfg.epochs or 1) * steps_per_epoch
        found, state = self._resume_state()
        if cfg.deterministic:
            from vlm_core.runtime.seeding import set_deterministic

            set_deterministic(True)
        dtype = amp_dtype(cfg.precision, device)

        model = setup.model
        if cfg.sync_batchnorm and world.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        ema = None
        if cfg.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
            )
        scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
        stepper: AutoStepper | ManualStepper
        if setup.train_step is not None:
            stepper = ManualStepper(
                setup, cfg, model, _lr_lambda(cfg, total), scaler=scaler, device=device,
                dtype=dtype, world=world, task=self.task,
            )  # fmt: skip
        else:
            stepper = AutoStepper(
                setup, cfg, model, setup.optimizer or _optimizer, _lr_lambda(cfg, total),
                scaler=scaler, device=device, dtype=dtype, world=world, task=self.task,
            )  # fmt: skip

        step, best, bad_validations, skipped, elapsed0 = 0, None, 0, 0, 0.0
        if found is not None:
            model.load_state_dict(state["model"] if "model" in state else found.model_state())
            stepper.load_state_dict(state)
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            step = int(state["step"])
            if state.get("seeding") != SEEDING:
                log.warning(
                    "%s was written by a vlm that drew random numbers differently: the resumed "
                    "run will not repeat the interrupted run's draws (augmentation, dropout)",
                    found.path,
                )
            best = state.get("best")
            bad_validations = int(state.get("bad_validations", 0))
            skipped = int(state.get("nonfinite_skipped", 0))
            elapsed0 = float(state.get("elapsed_s", 0.0))
            ranks = state.get("rng") or []
            if len(ranks) == world.size:
                set_rng_state(ranks[world.rank])
            else:
                torch.manual_seed(cfg.seed + world.rank + step)
            log.info("resumed %s at step %d", found.path, step)
        else:
            torch.manual_seed(cfg.seed + world.rank)

        train_model: nn.Module = model
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index or 0] if device.type == "cuda" else None
            if setup.train_step is None:
                train_model = DistributedDataParallel(model, device_ids=ids)
            else:
                # a task's own step (a GAN's) calls the model's parts one by one, each with
                # its optimizer: each part is wrapped, so that every call syncs its gradients.
                # A part may run several forwards before one backward, using different
                # parameters in each (the discriminator's class head on real images only):
                # find_unused_parameters marks those ready twice, a static graph does not
                train_model = nn.ModuleDict(
                    {
                        name: DistributedDataParallel(child, device_ids=ids, static_graph=True)
                        if any(p.requires_grad for p in child.parameters())
                        else child
                        for name, child in model.named_children()
                    }
                )

        pin = device.type == "cuda"
        vloader = val_loader(
            setup, world, batch=micro, num_workers=cfg.num_workers, pin=pin, seed=cfg.seed
        )
        metrics_log = (
            MetricsLog(self.out, resume_step=step, tensorboard=cfg.tensorboard)
            if world.is_main
            else None
        )
        if world.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.prune(self.out, cfg.keep_last)
        val_every = cfg.val_every or steps_per_epoch
        save_every = cfg.save_every or val_every
        start_step = step
        started = time.perf_counter()
        status: Status = "completed"
        message = ""
        last_values: dict[str, float] = {}
        last_saved = step if found is not None else -1
        consecutive_bad = 0
        running_loss, running_n = 0.0, 0
        running_extra: dict[str, float] = {}
        samples_seen = 0
        resumed_from = str(found.path) if found is not None else ""
        self._emit(TrainEvent("start", step, total, step // steps_per_epoch,
                              resumed_from=resumed_from))  # fmt: skip

        def save(values: dict[str, float], is_best: bool) -> None:
            nonlocal last_saved
            if world.is_main:
                self._save(
                    step, model, ema, stepper, values, is_best,
                    best, bad_validations, skipped, elapsed0 + time.perf_counter() - started,
                    steps_per_epoch, world,
                )  # fmt: skip
            else:
                world.gather(rng_state())  # pairs with the gather in _save
            world.barrier()
            last_saved = step
            self._emit(TrainEvent("checkpoint", step, total, step // steps_per_epoch, values))

        try:
            train_model.train()
            while step < total and status == "completed":
                epoch, offset = divmod(step, steps_per_epoch)
                loader = train_loader(
                    setup,
                    world,
                    micro=micro,
                    epoch=epoch,
                    start=offset * cfg.grad_accum,
                    seed=cfg.seed,
                    num_workers=cfg.num_workers,
                    pin=pin,
                )
                batches = iter(loader)
                for _ in range(offset, steps_per_epoch):
                    if step >= total:
                        break
                    if world.any(self._stop_requested):
                        status, message = "stopped", f"stopped on request at step {step}"
                        break
                    # everything the step draws in this process (dropout, a GAN's latents and
                    # DiffAugment, on the CPU and CUDA) follows from the seed and the step alone
                    seed_everything(derive_seed(cfg.seed, STEP_STREAM, world.rank, step))
                    outcome = stepper.step(train_model, batches)
                    loss_value, extra, n = outcome.loss, outcome.values, outcome.samples
                    grad_norm = outcome.grad_norm
                    step += 1
                    if outcome.bad:
                        stepper.skip()
                        skipped += 1
                        consecutive_bad += 1
                        what = f"non-finite loss/gradient at step {step} (loss {loss_value})"
                        self._emit(TrainEvent("nonfinite", step, total, epoch, message=what))
                        if cfg.nonfinite == "stop" or consecutive_bad >= cfg.max_nonfinite:
                            status = "diverged"
                            message = f"training diverged: {what}; " + (
                                "nonfinite=stop"
                                if cfg.nonfinite == "stop"
                                else f"{consecutive_bad} steps in a row were skipped"
                            )
                            break
                        log.warning("%s: step skipped", what)
                        continue
                    consecutive_bad = 0
                    stepper.commit()
                    if ema is not None:
                        ema.update_parameters(model)
                    running_loss += loss_value
                    running_n += 1
                    samples_seen += n * world.size
                    for key, value in extra.items():
                        running_extra[key] = running_extra.get(key, 0.0) + value
                    self._emit(TrainEvent("step", step, total, epoch, samples=samples_seen,
                                          loss=loss_value))  # fmt: skip

                    if step % cfg.log_every == 0 or step == total:
                        values = {
                            "train_loss": running_loss / max(running_n, 1),
                            "lr": stepper.lr(),
                            "grad_norm": grad_norm,
                            **{
                                f"train_{k}": v / max(running_n, 1)
                                for k, v in running_extra.items()
                            },
                        }
                        running_loss, running_n, running_extra = 0.0, 0, {}
                        last_values.update(values)
                        self._log(metrics_log, step, epoch, started, values)
                        self._emit(TrainEvent("log", step, total, epoch, values,
                                              samples=samples_seen))  # fmt: skip

                    validated = False
                    is_best = False
                    if vloader is not None and (step % val_every == 0 or step == total):
                        values = validate(
                            ema.module if ema is not None else model,
                            setup,
                            vloader,
                            device=device,
                            dtype=dtype,
                            world=world,
                            task=self.task,
                            seed=cfg.seed,
                        )
                        validated = True
                        last_values.update(values)
                        is_best, best, bad_validations = self._track_best(
                            step, values, best, bad_validations
                        )
                        self._log(metrics_log, step, epoch, started, values)
                        self._emit(TrainEvent("validate", step, total, epoch, values))
                    if validated or step % save_every == 0 or step == total:
                        save(dict(last_values), is_best or (vloader is None))
                    if validated and cfg.patience is not None and bad_validations >= cfg.patience:
                        status = "early_stopped"
                        message = f"no improvement of {setup.monitor} in {cfg.patience} validations"
                        break
                    if world.any(self._stop_requested):
                        status, message = "stopped", f"stopped on request at step {step}"
                        break
                else:
                    continue
                break
            if status == "stopped" and last_saved != step:
                save(dict(last_values), False)
        finally:
            if metrics_log is not None:
                metrics_log.close()

        seconds = time.perf_counter() - started
        result = TrainResult(
            status=status,
            step=step,
            total_steps=total,
            out=self.out,
            best=best,
            last_values=last_values,
            nonfinite_skipped=skipped,
            seconds=round(seconds, 3),
            samples_per_s=round(samples_seen / seconds, 2) if seconds > 0 else 0.0,
            message=message or f"{status} at step {step} of {total}",
        )
        familiarity = None
        if world.is_main and status != "diverged" and cfg.familiarity:
            familiarity = self._fit_familiarity(model, device, micro)
            result.familiarity = familiarity
        if world.is_main:
            # the pointer's last checkpoint, without re-hashing its files for the report
            last = ckpt.read_pointer(self.out).get("last")
            report = {
                **result.to_dict(),
                "task": self.task,
                "monitor": setup.monitor,
                "mode": setup.mode,
                "resumed_from_step": start_step if found is not None else None,
                "last_checkpoint": str(self.out / ckpt.CHECKPOINTS / last) if last else None,
                "config": cfg.model_dump(mode="json"),
                "world_size": world.size,
                "device": str(device),
                "versions": versions(),
                "familiarity": familiarity,
            }
            write_report(self.out, report)
        self._emit(TrainEvent("end", step, total, step // steps_per_epoch, last_values, message,
                              samples=samples_seen))  # fmt: skip
        return result

    def _fit_familiarity(
        self, model: nn.Module, device: torch.device, batch: int
    ) -> dict[str, Any] | None:
        """Fit the familiarity model of the best checkpoint (the one the output folder
        resolves to) with its weights; its summary, or None when the task declares no
        features or there is no checkpoint."""
        if self.setup.features is None:
            return None
        best = ckpt.read_pointer(self.out).get("best")
        if not best:
            return None
        import copy

        from vlm_core.familiarity.fitting import fit_checkpoint
        from vlm_core.familiarity.model import FamiliarityError

        folder = self.out / ckpt.CHECKPOINTS / best
        model = copy.deepcopy(model)  # the best weights, leaving the trained module as it ended
        model.load_state_dict(ckpt.verify(folder).model_state())
        command = self.sidecar.get("command")
        try:
            found = fit_checkpoint(folder, model, self.setup, device=device, batch=batch,
                                   seed=self.config.seed, command=command)  # fmt: skip
        except FamiliarityError as exc:  # the training itself is done and saved
            log.warning("no familiarity model fitted for %s: %s", folder, exc)
            return None
        return found.summary() if found is not None else None

    def _track_best(
        self,
        step: int,
        values: dict[str, float],
        best: dict[str, Any] | None,
        bad_validations: int,
    ) -> tuple[bool, dict[str, Any] | None, int]:
        monitor, mode = self.setup.monitor, self.setup.mode
        if monitor not in values:
            raise TrainError(
                f"task '{self.task}' monitors '{monitor}', which validation does not produce "
                f"(it produces {', '.join(sorted(values))})"
            )
        value = values[monitor]
        if not math.isfinite(value):
            return False, best, bad_validations + 1
        better = best is None or (value > best["value"] if mode == "max" else value < best["value"])
        if better:
            return True, {"step": step, "value": value, "metrics": dict(values)}, 0
        return False, best, bad_validations + 1

    def _log(
        self,
        metrics_log: MetricsLog | None,
        step: int,
        epoch: int,
        started: float,
        values: Mapping[str, float],
    ) -> None:
        if metrics_log is not None:
            record = {"step": step, "epoch": epoch, "time": round(time.perf_counter() - started, 3)}
            metrics_log.write({**record, **values})

    def _save(
        self,
        step: int,
        model: nn.Module,
        ema: Any,
        stepper: AutoStepper | ManualStepper,
        values: dict[str, float],
        is_best: bool,
        best: dict[str, Any] | None,
        bad_validations: int,
        skipped: int,
        elapsed: float,
        steps_per_epoch: int,
        world: World,
    ) -> None:
        rngs = world.gather(rng_state())
        weights = (ema.module if ema is not None else model).state_dict()
        train_state: dict[str, Any] = {
            "step": step,
            **stepper.state_dict(),
            "rng": rngs,
            "seeding": SEEDING,
            "best": best,
            "bad_validations": bad_validations,
            "nonfinite_skipped": skipped,
            "elapsed_s": elapsed,
            "config": self.config.model_dump(mode="json"),
            "world_size": world.size,
        }
        if ema is not None:
            train_state["model"] = model.state_dict()
            train_state["ema"] = ema.state_dict()
        sidecar = {
            **self.sidecar,
            "card": dict(self.setup.card),
            "metrics": values,
            "monitor": self.setup.monitor,
            "mode": self.setup.mode,
            "best": is_best,
            "epoch": step // steps_per_epoch,
            "ema": ema is not None,
            "seed": self.config.seed,
            "config": self.config.model_dump(mode="json"),
            "world_size": world.size,
            "device": str(self.device),
            "versions": versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        ckpt.write_checkpoint(
            self.out,
            step,
            weights,
            sidecar,
            train_state,
            best=is_best,
            keep_last=self.config.keep_last,
        )
