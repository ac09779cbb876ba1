"""The trainer against a hand-written PyTorch loop doing the same work in the same process.

Both train the same timm model (same initial weights) on the same in-memory data with AdamW,
the same precision, gradient clipping and a cosine schedule; the raw loop is what one writes
by hand (no NaN guard, no metrics log). The trainer's extra work per step (a NaN/inf check
that reads the loss and gradient norm, the metrics log, progress events) is what the ratio
measures. Throughput is counted from the end of warm-up to the last step, so neither start-up
nor the final checkpoint is in it.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vlm_core.bench.timing import StepClock, synchronize


def _raw_loop(
    model: nn.Module,
    data: TensorDataset,
    *,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    dtype: torch.dtype | None,
) -> float:
    """Samples per second of a plain loop over ``steps`` steps (after ``warmup``)."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps + warmup)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    done, start = 0, 0.0
    while done < steps + warmup:
        for x, y in loader:
            if done == warmup:
                synchronize(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(
                device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            done += 1
            if done == steps + warmup:
                break
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def _engine(
    model: nn.Module,
    data: TensorDataset,
    *,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    precision: str,
    out: Path,
) -> float:
    from vlm_core.training import TrainConfig, Trainer, TrainSetup

    def loss(m: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(m(x), y)

    clock = StepClock(device, warmup, steps)
    config = TrainConfig.model_validate(
        {"max_steps": steps + warmup, "batch_size": batch_size, "lr": 1e-3,
         "weight_decay": 0.01, "schedule": "cosine", "clip_grad_norm": 1.0,
         "precision": precision, "device": str(device), "log_every": warmup,
         "tensorboard": False}
    )  # fmt: skip
    setup = TrainSetup(model=model, train_data=data, loss=loss)
    Trainer(setup, config, out, device=str(device), callbacks=[clock]).fit()
    return clock.per_second(batch_size)


def bench_training(
    name: str = "resnet18",
    *,
    device: str = "auto",
    batch_size: int = 32,
    image_size: int = 64,
    steps: int = 20,
    warmup: int = 5,
    samples: int | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Training throughput of :class:`~vlm_core.training.Trainer` and of a raw loop: the
    medians of ``rounds`` alternating runs each (the order swapping every round), with their
    spread, and the ratio of the medians."""
    import timm

    from vlm_core.bench.timing import peak_device_mb, peak_host_rss_mb, spread
    from vlm_core.devices import resolve_device
    from vlm_core.training.loop import amp_dtype

    torch_device = torch.device(resolve_device(device))
    dtype = amp_dtype("auto", torch_device)
    precision = "bf16" if dtype is torch.bfloat16 else "fp32"
    n = samples or batch_size * (steps + warmup)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(n, 3, image_size, image_size, generator=generator),
        torch.randint(0, 10, (n,), generator=generator),
    )
    torch.manual_seed(0)
    base = timm.create_model(name, pretrained=False, num_classes=10)
    runs: dict[str, list[float]] = {"raw": [], "engine": []}
    for i in range(rounds):  # alternating, the order swapping every round
        order = ("raw", "engine") if i % 2 == 0 else ("engine", "raw")
        for label in order:
            model = copy.deepcopy(base)
            if label == "raw":
                runs[label].append(_raw_loop(model, data, device=torch_device,
                                             batch_size=batch_size, steps=steps, warmup=warmup,
                                             dtype=dtype))  # fmt: skip
                continue
            with tempfile.TemporaryDirectory(prefix="vlm-bench-train-") as tmp:
                runs[label].append(_engine(model, data, device=torch_device,
                                           batch_size=batch_size, steps=steps, warmup=warmup,
                                           precision=precision, out=Path(tmp)))  # fmt: skip
    raw, engine = statistics.median(runs["raw"]), statistics.median(runs["engine"])
    return {
        "bench": "training",
        "model": name,
        "device": str(torch_device),
        "precision": precision,
        "batch_size": batch_size,
        "image_size": image_size,
        "steps": steps,
        "raw_samples_per_s": round(raw, 1),
        "engine_samples_per_s": round(engine, 1),
        "ratio": round(engine / raw, 3),
        "raw_spread": spread(runs["raw"], 3),
        "engine_spread": spread(runs["engine"], 3),
        "rounds": rounds,
        "peak_host_rss_mb": round(peak_host_rss_mb(), 1),
        "peak_device_mb": peak_device_mb(torch_device),
    }
