"""The streaming executor over a folder of JPEGs: end-to-end (files → results) against the same
model on batches already on the device, timed in alternating rounds in one process, with the
time per stage taken from the end-to-end runs themselves; and peak host memory for small and
large folders.

    python -m vlm_core.bench.executor --folder DIR --json out.json [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def make_jpegs(
    folder: Path, count: int, size: tuple[int, int] = (375, 500), seed: int = 0
) -> list[Path]:
    """``count`` JPEGs of ``size`` (height, width), cut with random offsets, flips and colour
    shifts from scikit-image's photographs (ImageNet-like sizes, real image statistics)."""
    from PIL import Image as PILImage
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.retina()]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    height, width = size
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = max(height / photo.shape[0], width / photo.shape[1]) * rng.uniform(1.0, 1.4)
        big = np.asarray(PILImage.fromarray(photo).resize(
            (int(photo.shape[1] * scale) + 1, int(photo.shape[0] * scale) + 1)))  # fmt: skip
        y = rng.integers(0, big.shape[0] - height + 1)
        x = rng.integers(0, big.shape[1] - width + 1)
        crop = big[y : y + height, x : x + width].astype(np.int16)
        crop = np.clip(crop + rng.integers(-30, 30, 3), 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = folder / f"img{i:05d}.jpg"
        PILImage.fromarray(np.ascontiguousarray(crop)).save(path, quality=90)
        paths.append(path)
    return paths


class StageClock:
    """Wall seconds the main thread spends in each stage of :meth:`StreamingExecutor.map`,
    taken from the run being measured by wrapping the executor's own steps on the instance (its
    behaviour is unchanged):

    - ``wait``: waiting for the next batch of read and decoded files (with no worker processes,
      the reading and decoding themselves; with workers, the time the model side stalls);
    - ``prepare``: device-side preprocessing (decode on the GPU, resize, crop, normalise, to
      the model's dtype and memory format); on CUDA the time to launch it on the side stream,
      where it overlaps the model's previous batch;
    - ``model``: the model's forward pass and the copy of its outputs to the host.

    Whatever is left of the end-to-end time (splitting outputs per item, bookkeeping) is the
    caller's ``other``.
    """

    STAGES = ("wait", "prepare", "model")

    def __init__(self, executor: Any) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        executor._prepare = self._timed("prepare", executor._prepare)
        executor._forward = self._timed("model", executor._forward)
        executor._batches = self._timed_batches(executor._batches)

    def reset(self) -> dict[str, float]:
        """The seconds so far by stage, and start again from zero."""
        taken = dict(self.seconds)
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        return taken

    def _timed(self, stage: str, fn: Any) -> Any:
        def timed(*args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds[stage] += time.perf_counter() - t0

        return timed

    def _timed_batches(self, batches: Any) -> Any:
        def timed(items: Any) -> Iterator[Any]:
            source = batches(items)
            try:
                while True:
                    t0 = time.perf_counter()
                    try:
                        batch = next(source)
                    except StopIteration:
                        return
                    finally:
                        self.seconds["wait"] += time.perf_counter() - t0
                    yield batch
            finally:
                source.close()

        return timed


def bench_executor(
    model_name: str,
    folder: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    gpu_decode: bool | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """End to end (files → results) against model only, in ``rounds`` alternating rounds.

    Each round is one timed region over the whole folder through
    :meth:`StreamingExecutor.map` (reading, decoding, preprocessing, the model and the outputs
    back on the host, per-stage seconds taken from that same run by :class:`StageClock`),
    then the prepared model alone on a batch already on the device, called as many times as
    the folder has batches. Rates are medians over the rounds with their spread; ``ratio`` is
    end-to-end median / model-only median, ``paired_ratio`` the median of each round's own
    ratio. Host RSS is traced after every batch of the first round.
    """
    import statistics

    import psutil
    import torch

    from vlm_core.backbones import create_backbone
    from vlm_core.bench.timing import peak_device_mb, peak_host_rss_mb, spread, synchronize
    from vlm_core.runtime import StreamingExecutor, policy_for, prepare_model, run_context, to_input

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    files = sorted(folder.glob("*.jpg"))
    policy = policy_for(device)
    on_cuda = policy.device.type == "cuda"
    decode_on_gpu = on_cuda if gpu_decode is None else gpu_decode
    backbone = create_backbone(model_name, num_classes=None)
    model = prepare_model(backbone.model, policy)
    pipeline = backbone.preprocessing.pipeline(gpu_decode=decode_on_gpu)
    executor = StreamingExecutor(
        model, pipeline, policy, batch_size=batch_size, num_workers=workers
    )
    c, h, w = backbone.preprocessing.input_size
    x = to_input(torch.randn(batch_size, c, h, w, device=policy.device), policy, backbone.model)
    calls = -(-len(files) // batch_size)  # the folder's number of batches

    def model_only() -> float:
        synchronize(policy.device)
        t0 = time.perf_counter()
        with run_context(policy):
            for _ in range(calls):
                model(x)
        synchronize(policy.device)
        return time.perf_counter() - t0

    t_start = time.perf_counter()
    list(executor.map(files[: batch_size * 2]))  # warm-up: worker start, cuDNN/nvJPEG init
    first_call_s = time.perf_counter() - t_start
    model_only()  # warm-up of the same calls
    clock = StageClock(executor)
    clock.reset()
    me = psutil.Process()
    rss_trace: list[float] = []  # host RSS (MiB) after every batch's worth of results (round 1)
    e2e_rates, model_rates, details = [], [], []
    count = errors = 0
    for index in range(rounds):
        workers_cpu = sum(p.cpu_times().user + p.cpu_times().system for p in me.children())
        main_cpu = me.cpu_times()
        t0 = time.perf_counter()
        count = errors = 0
        for result in executor.map(files):
            count += 1
            errors += result.error is not None
            if index == 0 and count % batch_size == 0:
                rss_trace.append(me.memory_info().rss / 2**20)
        seconds = time.perf_counter() - t0
        cpu = me.cpu_times()
        stages = clock.reset()
        stages["other"] = max(seconds - sum(stages.values()), 0.0)
        details.append(
            {
                "end_to_end_s": round(seconds, 4),
                "stages_s": {k: round(v, 4) for k, v in stages.items()},
                "main_cpu_s": round(cpu.user + cpu.system - main_cpu.user - main_cpu.system, 3),
                "workers_cpu_s": round(
                    sum(p.cpu_times().user + p.cpu_times().system for p in me.children())
                    - workers_cpu,
                    3,
                ),
            }
        )
        e2e_rates.append(count / seconds)
        model_rates.append(calls * batch_size / model_only())
    executor.close()
    quarter = max(len(rss_trace) // 4, 1)
    e2e_ips, model_ips = statistics.median(e2e_rates), statistics.median(model_rates)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    per_image = {
        stage: round(1000 * statistics.median(d["stages_s"][stage] for d in details) / count, 3)
        for stage in (*StageClock.STAGES, "other")
    } if count else {}  # fmt: skip
    return {
        "bench": "executor",
        "model": model_name,
        "device": str(policy.device),
        "dtype": policy.dtype_name,
        "batch": batch_size,
        "files": len(files),
        "workers": executor.num_workers,
        "gpu_decode": decode_on_gpu,
        "rounds": rounds,
        "errors": errors,
        "complete": count == len(files),
        "end_to_end_img_s": round(e2e_ips, 1),
        "model_only_img_s": round(model_ips, 1),
        "end_to_end_spread": spread(e2e_rates, 1),
        "model_only_spread": spread(model_rates, 1),
        "ratio": round(e2e_ips / model_ips, 4),
        "paired_ratio": round(
            statistics.median(e / m for e, m in zip(e2e_rates, model_rates, strict=True)), 4
        ),
        # milliseconds per image in each stage of the end-to-end runs (median over the rounds)
        "stages_ms_per_img": per_image,
        "round_details": details,
        "first_call_s": round(first_call_s, 3),  # two batches, including the workers' start
        "peak_host_mb": round(peak_host_rss_mb(), 1),
        "peak_worker_mb": round(children, 1),
        # RSS after the first quarter and at the end of the folder: flat when memory is bounded
        "rss_mb_first_quarter": round(rss_trace[quarter - 1], 1) if rss_trace else None,
        "rss_mb_end": round(rss_trace[-1], 1) if rss_trace else None,
        "peak_device_mb": peak_device_mb(policy.device),
    }


def rss_growth(
    model_name: str, work: Path, sizes: tuple[int, ...] = (500, 2000), **kw: Any
) -> dict[str, Any]:
    """Run :func:`bench_executor` on folders of each size in fresh processes and compare the
    peak host memory (the executor's, and its workers')."""
    make_jpegs(work / "all", max(sizes))
    rows = []
    for n in sizes:
        # the smaller folders are there for memory only: one round; the largest gives the ratio
        rounds = kw.get("rounds") if n == max(sizes) else 1
        folder = work / f"n{n}"
        folder.mkdir(exist_ok=True)
        for path in sorted((work / "all").glob("*.jpg"))[:n]:
            target = folder / path.name
            if not target.exists():
                target.symlink_to(path)
        out = work / f"n{n}.json"
        cmd = [sys.executable, "-m", "vlm_core.bench.executor", "--folder", str(folder),
               "--model", model_name, "--json", str(out)]  # fmt: skip
        for key, value in {**kw, "rounds": rounds}.items():
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        subprocess.run(cmd, check=True)
        rows.append(json.loads(out.read_text()))
    small, large = rows[0], rows[-1]
    return {
        "bench": "executor_memory",
        "model": model_name,
        "sizes": list(sizes),
        "peak_host_mb": [r["peak_host_mb"] for r in rows],
        "peak_worker_mb": [r["peak_worker_mb"] for r in rows],
        "host_growth_mb": round(large["peak_host_mb"] - small["peak_host_mb"], 1),
        "worker_growth_mb": round(large["peak_worker_mb"] - small["peak_worker_mb"], 1),
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="streaming executor benchmark (one process)")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    row = bench_executor(args.model, args.folder, device=args.device, batch_size=args.batch_size,
                         workers=args.workers, rounds=args.rounds)  # fmt: skip
    args.json.write_text(json.dumps(row))


if __name__ == "__main__":
    main()
