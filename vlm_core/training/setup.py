"""What a task hands the trainer: :class:`TrainSetup` (model, data, loss, metrics)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from vlm_core.training.config import TrainConfig


class StepOptimizers(Protocol):
    """What a ``train_step`` receives as ``opt``: the task's named optimizers behind the
    trainer's guards (the trainer's :class:`vlm_core.training.stepping.Optimizers`).

    ``autocast()`` is the run's precision context for forward passes; ``backward(loss)`` scales
    and back-propagates a scalar loss; ``step(name)`` unscales, clips and applies optimizer
    ``name``'s step, returning False when the step was skipped as non-finite; ``opt[name]`` is
    the optimizer itself.
    """

    def __getitem__(self, name: str) -> torch.optim.Optimizer: ...

    def names(self) -> list[str]: ...

    def autocast(self) -> contextlib.AbstractContextManager[Any]: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def zero_grad(self, name: str | None = None) -> None: ...

    def step(self, name: str) -> bool: ...


#: ``loss(model, batch)``: a scalar tensor, or a mapping with a scalar ``"loss"`` and other
#: scalars to log.
LossFunction = Callable[[Any, Any], "torch.Tensor | Mapping[str, torch.Tensor]"]
#: ``predict(model, batch) -> (preds, target)`` fed to the metrics' ``update``.
PredictFunction = Callable[[Any, Any], "tuple[Any, Any]"]
#: ``optimizers(model, config) -> {name: Optimizer}`` for a ``train_step``.
OptimizersFunction = Callable[[Any, "TrainConfig"], "Mapping[str, torch.optim.Optimizer]"]
#: ``features(model, batch) -> (B, D)``: each item's pooled features, as a run computes them.
FeaturesFunction = Callable[[Any, Any], "torch.Tensor"]
#: ``train_step(model, batch, opt) -> {name: scalar}``: one step with several optimizers.
TrainStepFunction = Callable[[Any, Any, StepOptimizers], "Mapping[str, Any]"]


def default_predict(model: Any, batch: Any) -> tuple[Any, Any]:
    """``model(batch[0]), batch[1]``: the (inputs, targets) convention."""
    inputs, target = batch[0], batch[1]
    return model(inputs), target


@dataclass
class TrainSetup:
    """Everything task-specific about training; the trainer owns the rest.

    Attributes:
        model: the module to train (built on the CPU; the trainer moves it).
        train_data: a map-style dataset; the trainer shuffles, shards and batches it.
        loss: ``loss(model, batch)`` on a batch already on the device: what the trainer
            minimises with its one optimizer, and ``val_loss`` in validation.
        train_step: instead of ``loss``, a step of the task's own with several optimizers
            (a GAN's): ``train_step(model, batch, opt)`` runs its forward passes in
            ``opt.autocast()``, calls ``opt.backward(loss)`` and ``opt.step(name)`` and returns
            the scalars to log (``"loss"`` first among them if it has one). The trainer keeps
            the NaN/inf guard, clipping, precision, checkpoints and resume. Its ``model``
            should be an ``nn.ModuleDict`` (``{"g": ..., "d": ...}``): under torchrun each
            part is wrapped in DistributedDataParallel on its own and ``train_step`` receives
            them under the same names.
        optimizers: with ``train_step``: ``optimizers(model, config) -> {name: Optimizer}``;
            each gets the configured learning-rate schedule.
        callbacks: called with every training event on the main process only (e.g.
            ``vlm_core.gan.SampleGrid(model, ctx.out)`` writing sample grids into the run's
            folder at each checkpoint).
        val_data: the validation split (None: no validation, the last checkpoint is the best).
        metrics: a factory of torchmetrics metrics, a ``{name: Metric}`` mapping or a
            ``MetricCollection``; values are logged as ``val_<name>``. ``val_loss`` is always
            computed when there is validation data.
        predict: turns a batch into ``(preds, target)`` for the metrics.
        monitor: the logged name that picks the best checkpoint and drives early stopping.
        mode: whether a larger (``max``) or smaller (``min``) ``monitor`` is better.
        collate: the DataLoader's ``collate_fn`` (None: PyTorch's default).
        optimizer: ``optimizer(model, config)`` replacing the configured AdamW/SGD.
        card: what a user of the weights needs, written to every checkpoint's sidecar:
            ``architecture`` (what rebuilds the model), ``preprocessing``, ``class_names``...
        features: ``features(model, batch) -> (B, D)``: the pooled features of each item of
            a batch, exactly as the task's run computes them for an input (usually through a
            :class:`~vlm_core.familiarity.FeatureTap` around the run's own forward pass). With
            it, training ends by fitting the best checkpoint's familiarity model
            (:mod:`vlm_core.familiarity`), so that every run with the weights says whether an
            input looks unlike the training data.
        fit_data: the in-domain items that familiarity model is fitted on, prepared as the run
            path prepares an input (whole images or volumes, no random crops); None: the
            training data. The validation split calibrates its threshold.
        familiarity_method: how the familiarity model scores features: ``knn`` (distance to
            the k-th nearest training item) or ``mahalanobis`` (to a Gaussian of them); pick
            the one that separates in-domain from other inputs best for the task's features.
    """

    model: nn.Module
    train_data: Dataset[Any]
    loss: LossFunction | None = None
    val_data: Dataset[Any] | None = None
    metrics: Callable[[], Any] | None = None
    predict: PredictFunction = default_predict
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    collate: Callable[[list[Any]], Any] | None = None
    optimizer: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None = None
    card: Mapping[str, Any] = field(default_factory=dict)
    train_step: TrainStepFunction | None = None
    optimizers: OptimizersFunction | None = None
    callbacks: Sequence[Callable[[Any], None]] = ()
    features: FeaturesFunction | None = None
    fit_data: Dataset[Any] | None = None
    familiarity_method: Literal["knn", "mahalanobis"] = "knn"
