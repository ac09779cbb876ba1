"""The streaming executor over a folder of JPEGs: end-to-end (files → results) against the same
model on batches already on the device, and peak host memory for small and large folders.

    python -m vlm_core.bench.executor --files 2000 --json out.json   # one measurement
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
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


def bench_executor(
    model_name: str,
    folder: Path,
    *,
    device: str = "auto",
    batch_size: int = 64,
    workers: int | None = None,
    gpu_decode: bool | None = None,
    rounds: int = 5,
) -> dict[str, Any]:
    import torch

    from vlm_core.backbones import create_backbone
    from vlm_core.bench.timing import interleave, peak_device_mb, peak_host_rss_mb
    from vlm_core.runtime import StreamingExecutor, policy_for, prepare_model, run_context, to_input

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

    def model_only() -> None:
        with run_context(policy):
            model(x)

    sample = [pipeline.read(f) for f in files[:batch_size]]

    def preprocess_only() -> None:
        pipeline.to_device(sample, policy.device)

    timing = interleave({"model": model_only, "preprocess": preprocess_only}, policy.device,
                        warmup=2, rounds=rounds)  # fmt: skip
    model_ips = batch_size / timing.median("model")
    preprocess_ips = len(sample) / timing.median("preprocess")
    t_start = time.perf_counter()
    list(executor.map(files[: batch_size * 2]))  # warm-up: worker start, cuDNN/nvJPEG init
    first_call_s = time.perf_counter() - t_start
    import psutil

    me = psutil.Process()
    rss_trace: list[float] = []  # host RSS (MiB) after every batch's worth of results
    t0 = time.perf_counter()
    count = errors = 0
    for result in executor.map(files):
        count += 1
        errors += result.error is not None
        if count % batch_size == 0:
            rss_trace.append(me.memory_info().rss / 2**20)
    seconds = time.perf_counter() - t0
    executor.close()
    quarter = max(len(rss_trace) // 4, 1)
    e2e_ips = count / seconds
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "bench": "executor",
        "model": model_name,
        "device": str(policy.device),
        "dtype": policy.dtype_name,
        "batch": batch_size,
        "files": len(files),
        "workers": executor.num_workers,
        "gpu_decode": decode_on_gpu,
        "errors": errors,
        "complete": count == len(files),
        "end_to_end_img_s": round(e2e_ips, 1),
        "model_only_img_s": round(model_ips, 1),
        "device_preprocess_img_s": round(preprocess_ips, 1),  # decode/resize/normalise alone
        "first_call_s": round(first_call_s, 3),  # two batches, including the workers' start
        "ratio": round(e2e_ips / model_ips, 4),
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
        folder = work / f"n{n}"
        folder.mkdir(exist_ok=True)
        for path in sorted((work / "all").glob("*.jpg"))[:n]:
            target = folder / path.name
            if not target.exists():
                target.symlink_to(path)
        out = work / f"n{n}.json"
        cmd = [sys.executable, "-m", "vlm_core.bench.executor", "--folder", str(folder),
               "--model", model_name, "--json", str(out)]  # fmt: skip
        for key, value in kw.items():
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
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    row = bench_executor(args.model, args.folder, device=args.device, batch_size=args.batch_size,
                         workers=args.workers)  # fmt: skip
    args.json.write_text(json.dumps(row))


if __name__ == "__main__":
    main()
