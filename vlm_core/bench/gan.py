"""A DCGAN training step through the engine (:func:`vlm_core.gan.gan_setup` in the core
trainer) against the plain PyTorch DCGAN loop doing the same work in the same process.

Same generator and discriminator (same initial weights), same data, batch, precision, loss
(non-saturating BCE) and optimizers (Adam 2e-4, betas 0.5/0.999); one D update then one G
update per step, no EMA, no augmentation. The engine's extra work per step is its NaN/inf
guard, the metrics log and progress events. Throughput (images per second, counted from the end
of warm-up to the last step) is what the shared anchor reports for raw DCGAN at 64x64.

The two run in alternating rounds in one process and the figures are medians over all rounds
with their spread (not the best of a few runs, which favours whichever side had one lucky run).
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vlm_core.bench.timing import StepClock, synchronize


def _raw_loop(
    gan: nn.ModuleDict,
    data: TensorDataset,
    *,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    dtype: torch.dtype | None,
    latent_dim: int,
) -> float:
    """Images per second of the textbook DCGAN loop over ``steps`` steps (after ``warmup``)."""
    g, d = gan["g"].to(device).train(), gan["d"].to(device).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        pin_memory=device.type == "cuda")  # fmt: skip
    done, start = 0, 0.0
    while done < steps + warmup:
        for (real,) in loader:
            if done == warmup:
                synchronize(device)
                start = time.perf_counter()
            real = real.to(device, non_blocking=True)
            n = len(real)
            ones = torch.ones(n, device=device)
            zeros = torch.zeros(n, device=device)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                with torch.no_grad():
                    fake = g(torch.randn(n, latent_dim, device=device))
                loss_d = bce(d(real), ones) + bce(d(fake), zeros)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                loss_g = bce(d(g(torch.randn(n, latent_dim, device=device))), ones)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            done += 1
            if done == steps + warmup:
                break
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def _engine(
    gan: Any,
    data: TensorDataset,
    *,
    device: torch.device,
    batch_size: int,
    steps: int,
    warmup: int,
    precision: str,
    out: Path,
) -> float:
    from vlm_core.gan.train import gan_setup
    from vlm_core.training import TrainConfig, Trainer

    clock = StepClock(device, warmup, steps)
    config = TrainConfig.model_validate(
        {"max_steps": steps + warmup, "batch_size": batch_size, "lr": 2e-4,
         "schedule": "constant", "clip_grad_norm": None, "precision": precision,
         "device": str(device), "log_every": warmup, "tensorboard": False,
         "save_every": 10**8}
    )  # fmt: skip
    setup = gan_setup(gan, data, loss="bce", betas=(0.5, 0.999), conditional=False)
    Trainer(setup, config, out, device=str(device), callbacks=[clock]).fit()
    return clock.per_second(batch_size)


def bench_gan_step(
    *,
    device: str = "auto",
    image_size: int = 64,
    batch_size: int = 256,
    width: int = 64,
    latent_dim: int = 100,
    steps: int = 30,
    warmup: int = 5,
    rounds: int = 3,
) -> dict[str, Any]:
    """DCGAN training throughput of the engine and of the raw loop over ``rounds`` alternating
    rounds (each a fresh copy of the same initial networks trained for ``warmup + steps``
    steps; the order within a round swaps every round, so neither side always runs second).

    ``raw_img_s`` / ``engine_img_s`` are the medians of all rounds (``*_spread``: quartiles,
    extremes and n); ``ratio`` is engine median / raw median and ``paired_ratio`` the median of
    the rounds' own engine / raw ratios, which drift on a shared machine hits alike.
    """
    import statistics

    from vlm_core.bench.timing import peak_device_mb, peak_host_rss_mb, spread
    from vlm_core.devices import resolve_device
    from vlm_core.gan.models import build_gan
    from vlm_core.training.loop import amp_dtype

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    torch_device = torch.device(resolve_device(device))
    dtype = amp_dtype("auto", torch_device)
    precision = "bf16" if dtype is torch.bfloat16 else "fp32"
    n = batch_size * 8
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(n, 3, image_size, image_size, generator=generator) * 2 - 1)
    torch.manual_seed(0)
    arch = {"family": "dcgan", "image_size": image_size, "channels": 3,
            "latent_dim": latent_dim, "width": width, "ema": False}  # fmt: skip
    base = build_gan(arch)
    runs: dict[str, list[float]] = {"raw": [], "engine": []}
    order: list[str] = []
    for index in range(rounds):
        for label in ("raw", "engine") if index % 2 == 0 else ("engine", "raw"):
            order.append(label)
            gan = copy.deepcopy(base)
            if label == "raw":
                runs[label].append(_raw_loop(gan, data, device=torch_device,
                                             batch_size=batch_size, steps=steps, warmup=warmup,
                                             dtype=dtype, latent_dim=latent_dim))  # fmt: skip
            else:
                with tempfile.TemporaryDirectory(prefix="vlm-bench-gan-") as tmp:
                    runs[label].append(_engine(gan, data, device=torch_device,
                                               batch_size=batch_size, steps=steps, warmup=warmup,
                                               precision=precision, out=Path(tmp)))  # fmt: skip
    raw = statistics.median(runs["raw"])
    engine = statistics.median(runs["engine"])
    paired = [e / r for e, r in zip(runs["engine"], runs["raw"], strict=True)]
    return {
        "bench": "gan_step",
        "model": f"dcgan width {width}",
        "device": str(torch_device),
        "dtype": precision,
        "batch": batch_size,
        "image_size": image_size,
        "steps": steps,
        "rounds": rounds,
        "raw_img_s": round(raw, 2),
        "engine_img_s": round(engine, 2),
        "raw_spread": spread(runs["raw"], 2),
        "engine_spread": spread(runs["engine"], 2),
        "ratio": round(engine / raw, 3),
        "paired_ratio": round(statistics.median(paired), 3),
        "runs": {k: [round(v, 2) for v in values] for k, values in runs.items()},
        "order": order,
        "peak_host_rss_mb": round(peak_host_rss_mb(), 1),
        "peak_device_mb": peak_device_mb(torch_device),
    }
