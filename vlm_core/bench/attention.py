"""Multi-head attention: the engine (vlm_core.attention, on SDPA) against
``torch.nn.MultiheadAttention`` with the same weights, inputs and masks."""

from __future__ import annotations

from typing import Any

import torch

from vlm_core.bench.timing import interleave


def _copy_weights(ours: Any, ref: torch.nn.MultiheadAttention) -> None:
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                            ours.v_proj.weight]))  # fmt: skip
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)


def bench_attention(
    *, device: str = "auto", batch: int = 8, length: int = 1024, dim: int = 768, heads: int = 12,
    dtype: str | None = None, rounds: int = 20,
) -> list[dict[str, Any]]:  # fmt: skip
    """Self-attention without a mask, with a causal mask and with key padding (a quarter of
    the keys): milliseconds per call of each, and the engine/raw throughput ratio."""
    from vlm_core.attention import MultiHeadAttention
    from vlm_core.runtime.policy import policy_for

    policy = policy_for(device, dtype)
    dev, dt = policy.device, policy.dtype
    torch.manual_seed(0)
    ours = MultiHeadAttention(dim, heads, device=dev, dtype=dt).eval()
    ref = torch.nn.MultiheadAttention(dim, heads, batch_first=True, device=dev, dtype=dt).eval()
    _copy_weights(ours, ref)
    x = torch.randn(batch, length, dim, device=dev, dtype=dt)
    pad = torch.zeros(batch, length, dtype=torch.bool, device=dev)
    pad[:, length * 3 // 4 :] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(length, device=dev, dtype=dt)
    cases: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "none": ({}, {}),
        "causal": ({"is_causal": True}, {"attn_mask": causal, "is_causal": True}),
        "padding": ({"key_padding_mask": pad}, {"key_padding_mask": pad}),
    }
    rows = []
    for mask, (ours_kw, ref_kw) in cases.items():

        def engine(kw: dict[str, Any] = ours_kw) -> Any:
            return ours(x, **kw)

        def raw(kw: dict[str, Any] = ref_kw) -> Any:
            return ref(x, x, x, need_weights=False, **kw)

        with torch.inference_mode():
            timing = interleave({"engine": engine, "raw": raw}, dev, warmup=3, rounds=rounds)
        engine_ms, raw_ms = timing.median("engine") * 1e3, timing.median("raw") * 1e3
        rows.append({
            "bench": "attention", "model": f"B{batch} L{length} E{dim} H{heads} mask={mask}",
            "device": str(dev), "dtype": policy.dtype_name, "batch": batch,
            "engine_ms": round(engine_ms, 4), "raw_ms": round(raw_ms, 4),
            "ratio": round(raw_ms / engine_ms, 4),
        })  # fmt: skip
    return rows
