"""Train and evaluate an installed task: what ``vlm train``/``vlm eval`` and the dashboard call."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from vlm_core.errors import InputError, ParameterError, UsageError, VLMError
from vlm_core.params import validate_params
from vlm_core.plugins import Registry, get_registry
from vlm_core.tasks import TaskParams, TaskSpec, TrainContext, merge_train_settings
from vlm_core.training.config import TrainConfig
from vlm_core.training.eval_setting import EvalSetting, comparison_line, differences
from vlm_core.training.loop import TrainError
from vlm_core.training.setup import TrainSetup
from vlm_core.training.trainer import Callback, Trainer, TrainResult

log = logging.getLogger(__name__)


def trainable_spec(
    task: str, registry: Registry | None = None, *, purpose: str = "train"
) -> TaskSpec:
    spec = (registry or get_registry()).task(task)
    if spec.train is None:
        can = ", ".join(sorted(map(str, spec.capabilities)))
        raise UsageError(f"task '{task}' cannot {purpose} (it can: {can})")
    return spec


def make_config(values: Mapping[str, Any] | TrainConfig) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping, with a one-line error on the first bad value."""
    if isinstance(values, TrainConfig):
        return values
    try:
        return TrainConfig.model_validate(dict(values))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "settings"
        extra = f" {err.get('input')!r}" if err["type"] != "extra_forbidden" else ""
        raise ParameterError(f"bad training setting '{loc}'{extra}: {err['msg']}") from None


def task_settings(spec: TaskSpec, given: Mapping[str, Any] | TrainConfig) -> dict[str, Any]:
    """The trainer settings of a run: the task's ``train_defaults`` under those the user gave
    (for a ``TrainConfig``, the fields it was built with)."""
    if isinstance(given, TrainConfig):
        given = given.model_dump(include=given.model_fields_set)
    return merge_train_settings(spec.train_defaults, given)


def bundled_weights(spec: TaskSpec) -> str:
    """The weights file a task ships with its plugin (its first local ``WeightsRef``)."""
    for ref in spec.weights:
        if ref.source is None and Path(ref.filename).is_file():
            return ref.filename
    raise UsageError(
        f"task '{spec.id}' ships no weights: give --weights (a `vlm train` output folder, a "
        "checkpoint or a weights file)"
    )


def default_out(task: str) -> Path:
    from vlm_core.config import settings

    return settings().data_dir / "train" / task / time.strftime("%Y%m%d-%H%M%S")


def build_setup(spec: TaskSpec, data: Path, params: TaskParams, ctx: TrainContext) -> TrainSetup:
    """Call the task's training builder; its failures become one-line errors naming it."""
    if not data.exists():
        raise InputError(f"no such file or folder: {data}")
    try:
        setup = spec.resolve_train()(data, params, ctx)
    except VLMError:
        raise
    except Exception as exc:
        raise TrainError(
            f"task '{spec.id}' could not set up {ctx.purpose} on {data}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(setup, TrainSetup):
        raise TrainError(
            f"task '{spec.id}': its train builder returned {type(setup).__name__}, "
            "not a vlm_core.training.TrainSetup"
        )
    return setup


@dataclass
class TrainRequest:
    """One training run of an installed task."""

    task: str
    data: Path
    out: Path | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] | TrainConfig = field(default_factory=dict)
    resume: bool = False
    command: Sequence[str] | None = None


def train_task(
    request: TrainRequest,
    *,
    callbacks: Sequence[Callback] = (),
    registry: Registry | None = None,
    on_trainer: Any = None,
) -> TrainResult:
    """Validate the request, build the task's setup and train it (see :class:`Trainer`).

    Works the same in one process and under ``torchrun`` (every rank calls it; rank 0 writes).
    ``on_trainer(trainer)`` is called before training starts (to wire a stop button or a signal
    handler to :meth:`Trainer.request_stop`).
    """
    import torch

    from vlm_core.devices import resolve_device
    from vlm_core.runtime.seeding import seed_everything
    from vlm_core.training.data_hash import data_fingerprint
    from vlm_core.training.distributed import close_world, init_world
    from vlm_core.training.loop import dataset_len

    registry = registry or get_registry()
    spec = trainable_spec(request.task, registry)
    params = validate_params(spec, request.params, spec.training_params)
    config = make_config(task_settings(spec, request.config))
    data = Path(request.data).expanduser()
    if not data.exists():
        raise InputError(f"no such file or folder: {data}")
    device = resolve_device(config.device)
    world = init_world(device)
    try:
        if world.distributed and device.startswith("cuda"):
            device = f"cuda:{world.local_rank}"
        out = Path(request.out).expanduser() if request.out else None
        out = world.broadcast(str(out or default_out(spec.id)))
        out = Path(out)
        torch.manual_seed(config.seed)
        seed_everything(config.seed)
        ctx = TrainContext(
            task=spec.id,
            plugin=spec.plugin,
            device=device,
            seed=config.seed,
            purpose="train",
            rank=world.rank,
            world_size=world.size,
            out=out,
        )
        setup = build_setup(spec, data, params, ctx)
        fingerprint = world.broadcast(data_fingerprint(data) if world.is_main else None)
        record = registry.plugins.get(spec.plugin)
        sidecar = {
            "task": spec.id,
            "plugin": spec.plugin,
            "plugin_version": record.version if record else None,
            "params": params.model_dump(mode="json"),
            "data": fingerprint,
            # what `vlm eval` compares its own setting with (with "seed" and "device")
            "val_samples": (
                dataset_len(setup.val_data, "validation data")
                if setup.val_data is not None
                else None
            ),
            "command": list(request.command) if request.command is not None else sys.argv,
        }
        trainer = Trainer(
            setup,
            config,
            out,
            world=world,
            device=device,
            sidecar=sidecar,
            callbacks=callbacks,
            resume=request.resume,
        )
        if on_trainer is not None:
            on_trainer(trainer)
        result = trainer.fit()
        # every rank leaves together: a rank that tears the process group down while another
        # still writes the report aborts in gloo ("terminate called without an active exception")
        world.barrier()
        return result
    finally:
        close_world(world)


@dataclass
class EvalResult:
    """Metrics of one evaluation and its setting, with what the checkpoint recorded of the
    training's evaluation for comparison."""

    task: str
    metrics: dict[str, float]
    weights: str | None
    weights_sha256: str | None
    recorded: dict[str, float] | None
    step: int | None
    samples: int
    same_data: bool | None = None  # the data the recorded metrics came from (None: unknown)
    setting: EvalSetting | None = None  # this evaluation's data, seed, samples, device, params
    training: EvalSetting | None = None  # the recorded evaluation's (None: nothing recorded)
    #: how many of the validation items the weights' familiarity model flags (``flagged``,
    #: ``samples``, ``rate``, ``threshold``, ``method``); None when the weights have none or
    #: the task declares no features
    familiarity: dict[str, Any] | None = None

    @property
    def max_abs_diff(self) -> float | None:
        """Largest difference to the recorded validation metrics (None when none recorded)."""
        diffs = self._diffs(relative=False)
        return max(diffs) if diffs else None

    @property
    def max_rel_diff(self) -> float | None:
        """Largest difference to the recorded metrics relative to max(1, |recorded|)."""
        diffs = self._diffs(relative=True)
        return max(diffs) if diffs else None

    def _diffs(self, *, relative: bool) -> list[float]:
        if not self.recorded:
            return []
        return [
            abs(self.metrics[k] - v) / (max(1.0, abs(v)) if relative else 1.0)
            for k, v in self.recorded.items()
            if k in self.metrics
        ]

    @property
    def differences(self) -> list[str]:
        """What of this evaluation's setting differs from the training's (``data``,
        ``samples``, ``seed``, ``device``, ``params``)."""
        if self.setting is None or self.training is None:
            return []
        return differences(self.training, self.setting)

    @property
    def comparison(self) -> str | None:
        """One line: how this setting compares with the training's evaluation, and so whether
        the figures should match (None when the weights record no evaluation)."""
        if self.setting is None or self.training is None or not self.recorded:
            return None
        return comparison_line(
            self.training, self.setting, step=self.step, max_rel_diff=self.max_rel_diff
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metrics": self.metrics,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "recorded": self.recorded,
            "max_abs_diff": self.max_abs_diff,
            "step": self.step,
            "samples": self.samples,
            "same_data": self.same_data,
            "data": dict(self.setting.data or {}) if self.setting else None,
            "seed": self.setting.seed if self.setting else None,
            "device": self.setting.device if self.setting else None,
            "training_eval": self.training.to_dict() if self.training else None,
            "differences": self.differences,
            "comparison": self.comparison,
            "familiarity": self.familiarity,
        }


def evaluate_task(
    task: str,
    data: Path,
    *,
    weights: str | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    num_workers: int = 0,
    registry: Registry | None = None,
) -> EvalResult:
    """Validation metrics of ``weights`` (a training folder, checkpoint or file; None: the
    weights the task ships) on ``data``.

    The task parameters and seed recorded with the weights are used unless ``params`` or
    ``seed`` override them, so the task's builder makes the same validation split as in
    training; the result says which data, seed and sample count it used and how they compare
    with those of the recorded metrics (:attr:`EvalResult.comparison`).
    """
    from vlm_core.training.data_hash import data_fingerprint
    from vlm_core.training.distributed import World
    from vlm_core.training.loop import amp_dtype, dataset_len, val_loader, validate

    registry = registry or get_registry()
    spec = trainable_spec(task, registry, purpose="evaluate")
    data = _existing(data)
    found = _setup_with_weights(spec, data, weights, params, seed, device, "eval")
    trained, sidecar, setup, seed = found.trained, found.sidecar, found.setup, found.seed
    params_model, torch_device, model = found.params, found.device, found.setup.model
    if setup.val_data is None:
        raise TrainError(f"task '{spec.id}' made no validation split of {data}")
    samples = dataset_len(setup.val_data, "validation data")
    precision = str((sidecar.get("config") or {}).get("precision", "auto"))
    loader = val_loader(setup, World(), batch=batch_size, num_workers=num_workers,
                        pin=torch_device.type == "cuda", seed=seed)  # fmt: skip
    assert loader is not None
    metrics = validate(
        model,
        setup,
        loader,
        device=torch_device,
        dtype=amp_dtype(precision, torch_device),
        world=World(),
        task=spec.id,
        seed=seed,
    )
    familiarity = _familiarity_on(trained, setup, model, torch_device, batch_size, seed)
    recorded = sidecar.get("metrics")
    recorded_vals = (
        {k: float(v) for k, v in recorded.items() if k.startswith("val_") and v is not None}
        if isinstance(recorded, dict)
        else None
    )
    if recorded_vals is not None:
        recorded_vals = {k: v for k, v in recorded_vals.items() if math.isfinite(v)}
    fingerprint = data_fingerprint(data)
    trained_on = (sidecar.get("data") or {}).get("sha256")
    setting = EvalSetting(data=fingerprint, seed=seed, samples=samples, device=str(torch_device),
                          params=params_model.model_dump(mode="json"))  # fmt: skip
    return EvalResult(
        task=spec.id,
        metrics=metrics,
        weights=str(trained.path) if trained else None,
        weights_sha256=trained.sha256 if trained else None,
        recorded=recorded_vals,
        step=int(sidecar["step"]) if "step" in sidecar else None,
        samples=samples,
        same_data=fingerprint["sha256"] == trained_on if trained_on else None,
        setting=setting,
        training=EvalSetting.recorded(sidecar) if recorded_vals else None,
        familiarity=familiarity,
    )


def _existing(data: Path) -> Path:
    data = Path(data).expanduser()
    if not data.exists():
        raise InputError(f"no such file or folder: {data}")
    return data


def recorded_params(
    spec: TaskSpec, weights: str | None, params: Mapping[str, Any] | None
) -> tuple[str, Any, dict[str, Any], TaskParams]:
    """``(reference, trained weights, sidecar, training parameters)`` of ``weights`` (None: the
    bundled ones): the parameters they were trained with under those given."""
    from vlm_core.weights.trained import load_trained

    ref = weights or bundled_weights(spec)
    trained = load_trained(ref, plugin=spec.plugin, task=spec.id)
    sidecar = dict(trained.sidecar) if trained else {}
    known = spec.training_params.model_fields
    base = {k: v for k, v in dict(sidecar.get("params") or {}).items() if k in known}
    params_model = validate_params(spec, {**base, **dict(params or {})}, spec.training_params)
    return ref, trained, sidecar, params_model


@dataclass
class _WeightsSetup:
    """A task's training setup with trained weights in its model, on its device."""

    ref: str  # the weights reference used (the bundled weights when none was given)
    trained: Any  # the TrainedWeights (None for a reference that is no trained file)
    sidecar: dict[str, Any]
    params: TaskParams  # the recorded training parameters under those given
    seed: int  # the recorded seed unless one was given
    device: Any  # torch.device
    setup: TrainSetup


def _setup_with_weights(
    spec: TaskSpec,
    data: Path,
    weights: str | None,
    params: Mapping[str, Any] | None,
    seed: int | None,
    device: str,
    purpose: Literal["eval", "fit"],
    out: Path | None = None,
) -> _WeightsSetup:
    """What `vlm eval` and `--fit-ood-only` share: load ``weights`` (None: the bundled ones),
    take the training parameters and seed they record unless given, build the task's setup
    as they were trained (``purpose``) and load them into its model on ``device``."""
    import torch

    from vlm_core.devices import resolve_device

    ref, trained, sidecar, params_model = recorded_params(spec, weights, params)
    seed = int(sidecar.get("seed", 0)) if seed is None else seed
    resolved = resolve_device(device)
    torch.manual_seed(seed)
    ctx = TrainContext(task=spec.id, plugin=spec.plugin, device=resolved, seed=seed,
                       purpose=purpose, weights_card=trained.card if trained else {},
                       out=out)  # fmt: skip
    setup = build_setup(spec, data, params_model, ctx)
    if trained is not None:
        try:
            setup.model.load_state_dict(trained.state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise TrainError(
                f"{trained.path} does not fit task '{spec.id}' with these parameters: "
                f"{first[1].strip() if len(first) > 1 else first[0]}"
            ) from None
    torch_device = torch.device(resolved)
    setup.model.to(torch_device)
    return _WeightsSetup(ref, trained, sidecar, params_model, seed, torch_device, setup)


def _remove_fit(out: Path, made: bool) -> None:
    """Undo a failed ``--fit-ood-only``: the folder it made, or what it wrote in it."""
    import shutil

    from vlm_core.training import checkpoint as ckpt

    shutil.rmtree(out if made else out / ckpt.CHECKPOINTS, ignore_errors=True)
    if not made:
        (out / ckpt.POINTER).unlink(missing_ok=True)


def _familiarity_on(
    trained: Any, setup: TrainSetup, model: Any, device: Any, batch: int, seed: int
) -> dict[str, Any] | None:
    """How many validation items the familiarity model of ``trained`` flags (None when the
    weights carry none or the task declares no features)."""
    from vlm_core.familiarity.fitting import dataset_features
    from vlm_core.weights.model import familiarity_of

    if trained is None or setup.features is None or setup.val_data is None:
        return None
    found = familiarity_of(trained.path, trained.sidecar)
    if found is None:
        return None
    features = dataset_features(model, setup, setup.val_data, device=device, batch=batch,
                                seed=seed, limit=len(setup.val_data))  # type: ignore[arg-type]  # fmt: skip
    flagged = int((found.scores(features) > found.threshold).sum())
    return {"flagged": flagged, "samples": len(features), "rate": flagged / max(len(features), 1),
            "threshold": found.threshold, "method": found.method}  # fmt: skip


def fit_familiarity_only(
    task: str,
    data: Path,
    out: Path,
    *,
    weights: str | None = None,
    params: Mapping[str, Any] | None = None,
    seed: int | None = None,
    device: str = "auto",
    batch_size: int = 16,
    command: Sequence[str] | None = None,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """``vlm train --fit-ood-only``: fit the familiarity model of ``weights`` (a training
    folder, checkpoint or file, a hub checkpoint included; None: the weights the task ships)
    on the user's in-domain ``data``, without training.

    ``out`` becomes a training folder holding one checkpoint: the same tensors, a
    ``model.json`` (the weights' own, or the task, parameters and card for a file that has
    none) and the fitted ``familiarity.safetensors``; give it as ``--param weights=OUT``.
    Returns the familiarity summary with ``out``.
    """
    from vlm_core.familiarity.fitting import fit_checkpoint
    from vlm_core.familiarity.model import FamiliarityError
    from vlm_core.training import checkpoint as ckpt
    from vlm_core.training.data_hash import data_fingerprint

    registry = registry or get_registry()
    spec = trainable_spec(task, registry, purpose="fit a familiarity model")
    data = _existing(data)
    out = Path(out).expanduser()
    if (out / ckpt.POINTER).exists():
        raise UsageError(f"--out {out} already holds trained weights; give a new folder")
    found = _setup_with_weights(spec, data, weights, params, seed, device, "fit", out=out)
    trained, sidecar, setup, seed = found.trained, found.sidecar, found.setup, found.seed
    if setup.features is None:
        raise UsageError(f"task '{spec.id}' declares no features to fit a familiarity model on")
    model = setup.model
    state = trained.state_dict if trained else {k: v.cpu() for k, v in model.state_dict().items()}
    keep = {k: v for k, v in sidecar.items() if k not in ("files", "format", "step", "best")}
    record = registry.plugins.get(spec.plugin)
    card = {**dict(setup.card), **dict(sidecar.get("card") or {})}
    new_sidecar = {
        "task": spec.id,
        "plugin": spec.plugin,
        "plugin_version": record.version if record else None,
        "params": found.params.model_dump(mode="json"),
        "seed": seed,
        **keep,
        "card": card,
        "familiarity_data": data_fingerprint(data),
        "weights_from": str(trained.path) if trained else str(found.ref),
    }
    made = not out.exists()
    try:
        saved = ckpt.write_checkpoint(out, int(sidecar.get("step", 0)), state, new_sidecar, None,
                                      best=True, keep_last=1)  # fmt: skip
        said = command if command is not None else sys.argv
        familiarity = fit_checkpoint(saved.path, model, setup, device=found.device,
                                     batch=batch_size, seed=seed, command=said)  # fmt: skip
    except FamiliarityError as exc:  # too few items, features of the wrong shape: the data's
        _remove_fit(out, made)
        raise InputError(f"cannot fit a familiarity model on {data}: {exc}") from None
    except BaseException:  # nothing half-written: the folder goes, or its checkpoint does
        _remove_fit(out, made)
        raise
    assert familiarity is not None
    return {"task": spec.id, "out": str(out), "checkpoint": str(saved.path),
            "familiarity": familiarity.summary()}  # fmt: skip


__all__ = [
    "EvalResult",
    "TrainRequest",
    "build_setup",
    "default_out",
    "evaluate_task",
    "fit_familiarity_only",
    "make_config",
    "train_task",
    "trainable_spec",
]
