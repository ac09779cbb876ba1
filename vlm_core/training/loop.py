"""Pieces of the training loop shared by training and evaluation: batches on the device, the
loss contract, data loaders, samplers, precision and validation."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

from vlm_core.errors import VLMError
from vlm_core.runtime.seeding import derive_seed, forked_rng
from vlm_core.training.distributed import World
from vlm_core.training.seeded_data import (
    TRAIN_STREAM,
    VAL_STREAM,
    VALIDATE_STREAM,
    SeededSamples,
)
from vlm_core.training.setup import TrainSetup


class TrainError(VLMError):
    """Training cannot start or continue; the message says why."""


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (lists, tuples and dicts walked)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_len(batch: Any) -> int:
    """Samples in ``batch``: the length of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            return batch_len(value)
    if isinstance(batch, (list, tuple)) and batch:
        return batch_len(batch[0])
    return 1


def split_loss(out: Any, task: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """The scalar loss and the extra items of what a task's ``loss`` returned."""
    if isinstance(out, torch.Tensor):
        loss, extra = out, {}
    elif isinstance(out, Mapping) and isinstance(out.get("loss"), torch.Tensor):
        loss, extra = out["loss"], {k: v for k, v in out.items() if k != "loss"}
    else:
        raise TrainError(
            f"task '{task}': loss must return a tensor or a mapping with a 'loss' tensor, "
            f"got {type(out).__name__}"
        )
    if loss.numel() != 1:
        raise TrainError(f"task '{task}': loss must be a scalar, got shape {tuple(loss.shape)}")
    return loss.reshape(()), extra


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting (None: full fp32)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if precision == "fp16" and device.type != "cuda":
        raise TrainError("precision fp16 needs a CUDA device; use bf16 or fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _Skip(Sampler[int]):
    """The indices of ``sampler`` after the first ``start`` (resuming mid-epoch)."""

    def __init__(self, sampler: Sampler[int], start: int) -> None:
        self.sampler, self.start = sampler, start

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.start:
                yield index

    def __len__(self) -> int:
        return max(len(self.sampler) - self.start, 0)  # type: ignore[arg-type]


class _Shard(Sampler[int]):
    """Every ``size``-th index from ``rank``, in order, unpadded (validation)."""

    def __init__(self, n: int, world: World) -> None:
        self.n, self.world = n, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.world.rank, self.n, self.world.size))

    def __len__(self) -> int:
        return len(range(self.world.rank, self.n, self.world.size))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def micro_batches_per_epoch(setup: TrainSetup, world: World, micro: int) -> int:
    n = len(setup.train_data)  # type: ignore[arg-type]
    return (n // world.size) // micro


def train_loader(
    setup: TrainSetup,
    world: World,
    *,
    micro: int,
    epoch: int,
    start: int,
    seed: int,
    num_workers: int,
    pin: bool,
) -> DataLoader[Any]:
    """Epoch ``epoch``'s loader from micro-batch ``start``: the same order and the same
    augmentation on every resume.

    One process and N processes see the same global batches: each global batch is the next
    ``micro * N`` indices of the epoch's permutation, split across ranks. Each sample is made
    under generators seeded from ``(seed, epoch, index)`` (:class:`SeededSamples`), so its
    augmentation does not depend on the worker, the process or the step a run resumed at.
    """
    data = SeededSamples(setup.train_data, seed=seed, stream=TRAIN_STREAM, epoch=epoch)
    sampler: DistributedSampler[Any] = DistributedSampler(
        data,
        num_replicas=world.size,
        rank=world.rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    batches = BatchSampler(_Skip(sampler, start * micro), micro, drop_last=True)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(
        data,
        batch_sampler=batches,
        collate_fn=setup.collate,
        num_workers=num_workers,
        pin_memory=pin,
        worker_init_fn=_seed_worker if num_workers else None,
        generator=generator,
    )


def val_loader(
    setup: TrainSetup, world: World, *, batch: int, num_workers: int, pin: bool, seed: int = 0
) -> DataLoader[Any] | None:
    """The validation split in order, sharded across ranks; a sample is made the same way
    at every validation (generators seeded from ``(seed, index)``)."""
    if setup.val_data is None:
        return None
    data = SeededSamples(setup.val_data, seed=seed, stream=VAL_STREAM)
    n = len(data)
    return DataLoader(
        data,
        batch_size=batch,
        sampler=_Shard(n, world),
        collate_fn=setup.collate,
        num_workers=num_workers,
        pin_memory=pin,
        worker_init_fn=_seed_worker if num_workers else None,
    )


def build_metrics(setup: TrainSetup, device: torch.device) -> Any:
    """The task's metrics as one ``MetricCollection`` on ``device`` (None without metrics)."""
    if setup.metrics is None:
        return None
    from torchmetrics import Metric, MetricCollection

    made = setup.metrics()
    if isinstance(made, MetricCollection):
        collection = made
    elif isinstance(made, Metric):
        collection = MetricCollection({type(made).__name__.lower(): made})
    elif isinstance(made, Mapping):
        collection = MetricCollection(dict(made))
    else:
        raise TrainError(f"metrics must build torchmetrics metrics, got {type(made).__name__}")
    return collection.to(device)


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[key] = float(value.float().item())
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    setup: TrainSetup,
    loader: DataLoader[Any],
    *,
    device: torch.device,
    dtype: torch.dtype | None,
    world: World,
    task: str,
    seed: int = 0,
) -> dict[str, float]:
    """``val_loss`` and ``val_<metric>`` over the whole validation split (all ranks together).

    What the task draws at random here (a GAN's latents) comes from private generators seeded
    from ``seed``: the same draws at every validation and in ``vlm eval``, and none taken
    from the training's streams, so how often a run validates does not change its training.
    """
    was_training = model.training
    model.eval()
    metrics = build_metrics(setup, device)
    loss_sum, count = 0.0, 0
    with forked_rng(derive_seed(seed, VALIDATE_STREAM, world.rank), device=device):
        try:
            for batch in loader:
                batch = to_device(batch, device)
                with autocast(device, dtype):
                    size = batch_len(batch)
                    count += size
                    extra: dict[str, Any] = {}
                    if setup.loss is not None:
                        loss, extra = split_loss(setup.loss(model, batch), task)
                        loss_sum += float(loss.float().item()) * size
                    if metrics is not None:
                        if "preds" in extra and "target" in extra:
                            preds, target = extra["preds"], extra["target"]
                        else:
                            preds, target = setup.predict(model, batch)
                        metrics.update(preds, target)
        finally:
            model.train(was_training)
        loss_sum, total = world.sum([loss_sum, float(count)])
        if total == 0:
            raise TrainError("the validation split is empty")
        result = {"val_loss": loss_sum / total} if setup.loss is not None else {}
        if metrics is not None:
            result.update({f"val_{k}": v for k, v in _scalars(metrics.compute()).items()})
    return result


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def dataset_len(data: Any, what: str) -> int:
    if not isinstance(data, Sized):
        raise TrainError(f"the {what} must be a map-style dataset with a length")
    return len(data)
