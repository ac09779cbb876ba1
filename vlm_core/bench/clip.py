"""CLIP embedding through the engine (:func:`vlm_core.crossmodal.load_clip`) against raw
open_clip ``model.encode_image`` / ``encode_text`` on the same batch, in the same process.

Both sides hold the same weights and get the same preprocessed batch (images) or token ids
(texts), already on the device, at the same precision (bf16 autocast on CUDA, fp32 on the CPU),
under inference mode. The raw side is what an open_clip user writes: ``create_model``, eval,
to the device, autocast. The engine's extra work per batch is what the ratio measures: it
normalises the embeddings in float32 and returns them on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlm_core.bench.timing import interleave, peak_device_mb, peak_host_rss_mb

_WORDS = ("cat", "dog", "red car", "bicycle", "street at night", "bowl of soup", "mountain lake",
          "person riding a horse")  # fmt: skip


def _raw_model(arch: str, encoder: Any) -> torch.nn.Module:
    """open_clip's own model of ``arch`` with the engine's weights, eval, on its device."""
    import open_clip

    from vlm_core.crossmodal.encoders import quiet_random_init

    with quiet_random_init():
        model = open_clip.create_model(arch, pretrained=None, pretrained_text=False)
    model.load_state_dict(encoder.model.state_dict())
    return model.eval().to(encoder.policy.device)


def _flops(fn: Any, x: torch.Tensor) -> int:
    """FLOPs of one item. The fused attention fast path is off while counting: the counter
    does not know its kernel, and would miss the attention projections."""
    counter = FlopCounterMode(display=False)
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.inference_mode():
            fn(x[:1])
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
    return int(counter.get_total_flops())


def bench_clip(
    arch: str = "ViT-B-32",
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 1024,
    rounds: int = 10,
    warmup: int = 3,
    texts: bool = False,
    matmul_flops: float | None = None,
) -> dict[str, Any]:
    """Images (or, with ``texts``, texts) per second embedded by the engine and by raw open_clip.

    Args:
        arch: an open_clip architecture (``vlm-test-clip`` for a quick check).
        device: where both run.
        precision: the engine's precision (``auto``: bf16 autocast on CUDA); raw open_clip
            autocasts to the same dtype.
        batch_size: images or texts per call, one forward pass each.
        rounds: timed calls of each, alternated; medians are reported.
        warmup: untimed calls of each first.
        texts: time the text tower on token ids instead of the image tower on pixels.
        matmul_flops: the device's measured matmul ceiling (FLOP/s); adds MFU to the row.
    """
    from vlm_core.crossmodal.encoders import load_clip, register_model_configs

    register_model_configs()
    encoder = load_clip(arch, device=device, precision=precision)
    policy = encoder.policy
    raw_model = _raw_model(arch, encoder)
    raw_forward: Callable[[torch.Tensor], torch.Tensor]
    encode: Callable[..., torch.Tensor]
    if texts:
        prompts = [f"a photo of a {_WORDS[i % len(_WORDS)]}, number {i}" for i in range(batch_size)]
        batch = encoder.tokenize(prompts).to(policy.device)
        raw_forward, encode = raw_model.encode_text, encoder.encode_texts  # type: ignore[assignment]
    else:
        h, w = encoder.image_size
        generator = torch.Generator().manual_seed(0)
        batch = torch.randn(batch_size, 3, h, w, generator=generator).to(policy.device)
        raw_forward, encode = raw_model.encode_image, encoder.encode_images  # type: ignore[assignment]
    flops = _flops(raw_forward, batch)
    autocast = policy.dtype != torch.float32

    def raw() -> Any:
        with (
            torch.inference_mode(),
            torch.autocast(policy.device.type, dtype=policy.dtype, enabled=autocast),
        ):
            return raw_forward(batch)

    def engine() -> Any:
        return encode(batch, batch_size=batch_size)

    if policy.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(policy.device)
    timing = interleave({"raw": raw, "engine": engine}, policy.device, warmup=warmup, rounds=rounds)
    engine_ps = batch_size / timing.median("engine")
    raw_ps = batch_size / timing.median("raw")
    unit = "texts" if texts else "img"
    row: dict[str, Any] = {
        "bench": "clip_text" if texts else "clip_image",
        "model": arch,
        "device": str(policy.device),
        "dtype": policy.dtype_name,
        "batch": batch_size,
        f"engine_{unit}_s": round(engine_ps, 1),
        f"raw_{unit}_s": round(raw_ps, 1),
        "ratio": round(engine_ps / raw_ps, 4),
        f"gflops_per_{'text' if texts else 'img'}": round(flops / 1e9, 3),
        "engine_tflop_s": round(engine_ps * flops / 1e12, 2),
        "raw_tflop_s": round(raw_ps * flops / 1e12, 2),
        "peak_device_mb": peak_device_mb(policy.device),
        "peak_host_mb": round(peak_host_rss_mb(), 1),
        "rounds": rounds,
    }
    if matmul_flops:
        row["mfu"] = round(engine_ps * flops / matmul_flops, 4)
        row["raw_mfu"] = round(raw_ps * flops / matmul_flops, 4)
    del raw_model, encoder
    return row
