"""Backbone inference: the engine (create_backbone + runtime policy) against raw timm."""

from __future__ import annotations

import logging
from typing import Any

import torch

from vlm_core.bench.timing import forward_flops, interleave, peak_device_mb, peak_host_rss_mb

log = logging.getLogger("vlm.bench")


def raw_timm(name: str, device: torch.device, dtype: torch.dtype, batch: torch.Tensor) -> Any:
    """What a timm user writes by hand: eval, device, channels-last for convnets, autocast."""
    import timm

    from vlm_core.runtime.policy import has_conv2d

    model = timm.create_model(name, pretrained=False).eval().to(device)
    conv = has_conv2d(model)
    if conv:
        model = model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)

    def run() -> Any:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                    enabled=dtype != torch.float32):  # fmt: skip
            return model(batch)

    return model, run


def engine_runner(name: str, policy: Any, batch: torch.Tensor) -> Any:
    from vlm_core.backbones import create_backbone
    from vlm_core.runtime.policy import prepare_model, run_context, to_input

    backbone = create_backbone(name, num_classes=None)
    model = prepare_model(backbone.model, policy)
    x = to_input(batch, policy, backbone.model)

    def run() -> Any:
        with run_context(policy):
            return model(x)

    return backbone.model, run


def bench_backbone(
    name: str,
    *,
    device: str = "auto",
    batch_size: int = 32,
    dtype: str | None = None,
    rounds: int = 10,
    warmup: int = 3,
    compile_mode: str | None = None,
    cast_weights: bool = False,
    matmul_flops: float | None = None,
) -> dict[str, Any]:
    """Images per second of the engine and of raw eager timm on the same batch and precision.

    With ``compile_mode``/``cast_weights`` the engine runs its fast path (torch.compile, CUDA
    graphs under ``reduce-overhead``, weights in bf16) against the same raw eager baseline.
    """
    from vlm_core.runtime.policy import policy_for

    policy = policy_for(device, dtype, compile=compile_mode, cast_weights=cast_weights)  # type: ignore[arg-type]
    torch.manual_seed(0)
    import timm

    probe = timm.create_model(name, pretrained=False)
    c, h, w = timm.data.resolve_model_data_config(probe)["input_size"]
    batch = torch.randn(batch_size, c, h, w, device=policy.device)
    flops = forward_flops(probe.eval().to(policy.device), batch[:1])
    del probe
    raw_model, raw = raw_timm(name, policy.device, policy.dtype, batch)
    engine_model, engine = engine_runner(name, policy, batch)
    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    timing = interleave({"raw": raw, "engine": engine}, policy.device, warmup=warmup, rounds=rounds)
    engine_ips = batch_size / timing.median("engine")
    raw_ips = batch_size / timing.median("raw")
    row: dict[str, Any] = {
        "bench": "backbone" if compile_mode is None and not cast_weights else "backbone_fast_path",
        "model": name,
        "device": str(policy.device),
        "dtype": policy.dtype_name,
        "batch": batch_size,
        "compile": compile_mode,
        "cast_weights": cast_weights,
        "engine_img_s": round(engine_ips, 1),
        "raw_img_s": round(raw_ips, 1),
        "ratio": round(engine_ips / raw_ips, 4),
        "gflops_per_img": round(flops / 1e9, 3),
        "engine_tflop_s": round(engine_ips * flops / 1e12, 2),
        "raw_tflop_s": round(raw_ips * flops / 1e12, 2),
        "peak_device_mb": peak_device_mb(policy.device),
        "peak_host_mb": round(peak_host_rss_mb(), 1),
        "rounds": rounds,
    }
    if matmul_flops:
        row["mfu"] = round(engine_ips * flops / matmul_flops, 4)
        row["raw_mfu"] = round(raw_ips * flops / matmul_flops, 4)
    del raw_model, engine_model
    return row
