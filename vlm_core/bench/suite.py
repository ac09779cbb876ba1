"""The benchmark suites `vlm bench` runs, with CPU and GPU defaults."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("vlm.bench")

SUITES = ("backbone", "fastpath", "executor", "cache", "attention", "train", "gan", "clip")


def _cuda(device: str) -> bool:
    from vlm_core.devices import resolve_device

    return resolve_device(device).startswith("cuda")


def backbone(device: str, quick: bool) -> list[dict[str, Any]]:
    from vlm_core.bench.backbones import bench_backbone
    from vlm_core.bench.timing import matmul_ceiling_flops

    if _cuda(device):
        import torch

        ceiling = matmul_ceiling_flops(torch.device("cuda"))
        return [
            {"bench": "matmul_ceiling", "device": "cuda", "tflop_s": round(ceiling / 1e12, 1)},
            *(bench_backbone(name, device=device, batch_size=256, rounds=6 if quick else 20,
                             matmul_flops=ceiling)
              for name in ("vit_base_patch16_224", "resnet50")),
        ]  # fmt: skip
    return [bench_backbone(name, device=device, batch_size=16, rounds=3 if quick else 8)
            for name in ("resnet18", "vit_tiny_patch16_224")]  # fmt: skip


def fastpath(
    device: str, quick: bool, compile_mode: str = "reduce-overhead"
) -> list[dict[str, Any]]:
    """bf16 weights, channels-last, torch.compile on vit_base_patch16_224 at batch 256 against
    raw eager timm: ``compile_mode`` (CUDA graphs under reduce-overhead) and the "inference"
    preset (CUDA graphs + freezing). GPU only."""
    from vlm_core.bench.backbones import bench_backbone
    from vlm_core.bench.timing import matmul_ceiling_flops

    if not _cuda(device):
        return [{"bench": "backbone_fast_path", "skipped": "needs CUDA"}]
    import torch

    ceiling = matmul_ceiling_flops(torch.device("cuda"))
    rows: list[dict[str, Any]] = []
    for mode in dict.fromkeys([compile_mode, "inference"]):
        t0 = time.perf_counter()
        try:
            row = bench_backbone("vit_base_patch16_224", device=device, batch_size=256,
                                 rounds=6 if quick else 20, compile_mode=mode, cast_weights=True,
                                 matmul_flops=ceiling, warmup=5)  # fmt: skip
        except Exception as exc:
            log.exception("fast path with compile mode %s failed", mode)
            rows.append({"bench": "backbone_fast_path", "compile": mode,
                         "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
            continue
        row["wall_s_with_compile"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    return rows


def executor(device: str, quick: bool) -> list[dict[str, Any]]:
    from vlm_core.bench.executor import bench_executor, rss_growth

    gpu = _cuda(device)
    model = "resnet50" if gpu else "resnet18"
    batch = 256 if gpu else 16
    sizes = (200, 800) if quick else (500, 2000)
    with tempfile.TemporaryDirectory(prefix="vlm-bench-") as tmp:
        work = Path(tmp)
        growth = rss_growth(model, work, sizes, device=device, batch_size=batch)
        rows: list[dict[str, Any]] = [growth, growth["runs"][-1]]
        if gpu:  # the same with decoding in the workers, for comparison
            folder = work / f"n{sizes[-1]}"
            rows.append(bench_executor(model, folder, device=device, batch_size=batch,
                                       gpu_decode=False))  # fmt: skip
    return rows


def cache(device: str, quick: bool) -> list[dict[str, Any]]:
    from vlm_core.bench.cache import bench_cache

    return [bench_cache(device=device, cycles=3 if quick else 10)]


def attention(device: str, quick: bool) -> list[dict[str, Any]]:
    from vlm_core.bench.attention import bench_attention

    if _cuda(device):
        return bench_attention(device=device, rounds=5 if quick else 20)
    return bench_attention(device=device, batch=2, length=256, dim=256, heads=4,
                           rounds=3 if quick else 10)  # fmt: skip


def train(device: str, quick: bool) -> list[dict[str, Any]]:
    """The trainer against a hand-written loop: resnet50 at batch 256 in bf16 on CUDA,
    resnet18 at batch 32 on 64-pixel images on the CPU."""
    from vlm_core.bench.training import bench_training

    if _cuda(device):
        return [bench_training("resnet50", device=device, batch_size=256, image_size=224,
                               steps=10 if quick else 30, warmup=5, samples=256 * 8)]  # fmt: skip
    return [bench_training("resnet18", device=device, batch_size=32, image_size=64,
                           steps=8 if quick else 20, warmup=4)]  # fmt: skip


def gan(device: str, quick: bool) -> list[dict[str, Any]]:
    """A DCGAN training step through the GAN engine against the plain PyTorch loop: 64x64,
    batch 256, bf16 on CUDA (the shared anchor's setting); 32x32, batch 32 on the CPU."""
    from vlm_core.bench.gan import bench_gan_step

    if _cuda(device):
        return [bench_gan_step(device=device, image_size=64, batch_size=256,
                               steps=20 if quick else 60, warmup=10)]  # fmt: skip
    return [bench_gan_step(device=device, image_size=32, batch_size=32, width=32,
                           steps=5 if quick else 20, warmup=3)]  # fmt: skip


def clip(device: str, quick: bool) -> list[dict[str, Any]]:
    """open_clip ViT-B-32 image and text embedding through the cross-modal engine against raw
    ``encode_image`` / ``encode_text``: batch 1024 in bf16 on CUDA (the shared anchor's
    setting), batch 4 (8 without --quick) in fp32 on the CPU."""
    from vlm_core.bench.clip import bench_clip

    ceiling = None
    if _cuda(device):
        import torch

        from vlm_core.bench.timing import matmul_ceiling_flops

        ceiling = matmul_ceiling_flops(torch.device("cuda"))
        batch, rounds, warmup = 1024, 6 if quick else 20, 3
    else:
        batch, rounds, warmup = (4, 2, 1) if quick else (8, 6, 2)
    return [bench_clip("ViT-B-32", device=device, batch_size=batch, rounds=rounds, warmup=warmup,
                       texts=texts, matmul_flops=ceiling) for texts in (False, True)]  # fmt: skip


RUNNERS: dict[str, Callable[[str, bool], list[dict[str, Any]]]] = {
    "backbone": backbone, "fastpath": fastpath, "executor": executor, "cache": cache,
    "attention": attention, "train": train, "gan": gan, "clip": clip,
}  # fmt: skip


def run_suites(
    names: list[str], device: str = "auto", quick: bool = False, compile_mode: str | None = None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            if name == "fastpath" and compile_mode:
                produced = fastpath(device, quick, compile_mode)
            else:
                produced = RUNNERS[name](device, quick)
        except Exception as exc:  # one failing suite must not lose the others' figures
            log.exception("suite %s failed", name)
            produced = [{"bench": name, "error": f"{type(exc).__name__}: {exc}"}]
        for row in produced:
            row.setdefault("suite", name)
            row["suite_wall_s"] = round(time.perf_counter() - t0, 1)
        rows += produced
    return rows
