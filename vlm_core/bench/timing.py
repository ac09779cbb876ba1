"""Timing, memory and FLOP helpers for benchmarks."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vlm_core.bench.stats import spread  # noqa: F401  (re-exported: benches import it here)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """A trainer callback noting the time at the ``log`` events of steps ``warmup`` and
    ``warmup + steps`` (after a device sync): the engine's throughput from the end of warm-up
    to the last step, leaving start-up and the final checkpoint out."""

    def __init__(self, device: torch.device, warmup: int, steps: int) -> None:
        self.device, self.warmup, self.steps = device, warmup, steps
        self.marks: dict[int, float] = {}

    def __call__(self, event: Any) -> None:
        if event.kind == "log" and event.step in (self.warmup, self.warmup + self.steps):
            synchronize(self.device)
            self.marks[event.step] = time.perf_counter()

    def per_second(self, batch_size: int) -> float:
        """Samples per second between the two marks."""
        seconds = self.marks[self.warmup + self.steps] - self.marks[self.warmup]
        return self.steps * batch_size / seconds


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls (CUDA events on GPU, perf_counter elsewhere)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


@dataclass
class Interleaved:
    """Medians of several callables timed in alternation (so drift hits them alike)."""

    seconds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def rates(self, name: str, work: float) -> list[float]:
        """``work`` (images, steps ...) per second of each of ``name``'s timed calls."""
        return [work / s for s in self.seconds[name]]


def interleave(fns: dict[str, Callable[[], Any]], device: torch.device, *, warmup: int,
               rounds: int, per_round: int = 1) -> Interleaved:  # fmt: skip
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            seconds[name] += time_call(fn, device, per_round)
    return Interleaved(seconds)


def forward_flops(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of one forward pass (2 x multiply-accumulates), by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(batch)
    return int(counter.get_total_flops())


def matmul_ceiling_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> float:
    """Measured dense-matmul FLOP/s on ``device`` (8192³ on CUDA; the reference for MFU, as in
    shared/anchors)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    time_call(lambda: a @ b, device, 3)  # warm-up, not counted
    times = time_call(lambda: a @ b, device, 10)
    return 2 * n**3 / statistics.median(times)


def peak_host_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_device_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
