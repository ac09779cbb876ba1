"""What a task hands the trainer: :class:`TrainSetup` (model, data, loss, metrics)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from vlm_core.training.config import TrainConfig

#: ``loss(model, batch)``: a scalar tensor, or a mapping with a scalar ``"loss"`` and other
#: scalars to log.
LossFunction = Callable[[Any, Any], "torch.Tensor | Mapping[str, torch.Tensor]"]
#: ``predict(model, batch) -> (preds, target)`` fed to the metrics' ``update``.
PredictFunction = Callable[[Any, Any], "tuple[Any, Any]"]


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
        loss: ``loss(model, batch)`` on a batch already on the device.
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
    """

    model: nn.Module
    train_data: Dataset[Any]
    loss: LossFunction
    val_data: Dataset[Any] | None = None
    metrics: Callable[[], Any] | None = None
    predict: PredictFunction = default_predict
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    collate: Callable[[list[Any]], Any] | None = None
    optimizer: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None = None
    card: Mapping[str, Any] = field(default_factory=dict)
