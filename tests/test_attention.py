"""MultiHeadAttention against a naive float64 softmax(QKᵀ/√d)V reference."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor

from vlm_core.attention import MultiHeadAttention

TOL = 1e-5  # the acceptance bound; float64 agreement is in fact ~1e-15


def naive_attention(
    mha: MultiHeadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    blocked: Tensor | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The textbook formula, head by head with explicit loops over batch and heads.

    ``blocked`` (B, Lq, Lk) bool, True = masked; ``bias`` (B, Lq, Lk) added to the logits.
    Fully blocked rows give zero output and zero weights (the documented behaviour).
    Returns output (B, Lq, E) and weights (B, H, Lq, Lk).
    """
    q = query @ mha.q_proj.weight.T + mha.q_proj.bias
    k = key @ mha.k_proj.weight.T + mha.k_proj.bias
    v = value @ mha.v_proj.weight.T + mha.v_proj.bias
    batch, q_len, _ = q.shape
    k_len = k.shape[1]
    d = mha.head_dim
    heads_out = torch.zeros(batch, q_len, mha.embed_dim, dtype=q.dtype)
    weights = torch.zeros(batch, mha.num_heads, q_len, k_len, dtype=q.dtype)
    for b in range(batch):
        for h in range(mha.num_heads):
            cols = slice(h * d, (h + 1) * d)
            logits = q[b, :, cols] @ k[b, :, cols].T / math.sqrt(d)
            if bias is not None:
                logits = logits + bias[b]
            for i in range(q_len):
                row = logits[i]
                keep = torch.ones(k_len, dtype=torch.bool)
                if blocked is not None:
                    keep &= ~blocked[b, i]
                keep &= torch.isfinite(row)
                if not keep.any():
                    continue
                e = torch.where(keep, torch.exp(row - row[keep].max()), torch.zeros_like(row))
                p = e / e.sum()
                weights[b, h, i] = p
                heads_out[b, i, cols] = p @ v[b, :, cols]
    out = heads_out @ mha.out_proj.weight.T + mha.out_proj.bias
    return out, weights


def make(
    embed_dim: int = 16, num_heads: int = 4, scale: float = 0.3, **kw: int
) -> tuple[MultiHeadAttention, torch.Generator]:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mha = MultiHeadAttention(embed_dim, num_heads, dtype=torch.float64, **kw).eval()
    with torch.no_grad():  # non-zero biases so a missing bias term would show
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
    return mha, gen


def rand(gen: torch.Generator, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def check(mha: MultiHeadAttention, ref: tuple[Tensor, Tensor], **call: object) -> None:
    """Both the fast (SDPA) and the explicit path match the reference."""
    fast, none = mha(**call)
    slow, weights = mha(**call, need_weights=True)
    assert none is None
    assert weights is not None
    assert torch.allclose(fast, ref[0], atol=TOL, rtol=0)
    assert torch.allclose(slow, ref[0], atol=TOL, rtol=0)
    assert torch.allclose(weights, ref[1], atol=TOL, rtol=0)
    assert torch.isfinite(fast).all() and torch.isfinite(weights).all()


def test_self_attention_matches_reference():
    mha, gen = make()
    x = rand(gen, 2, 7, 16)
    check(mha, naive_attention(mha, x, x, x), query=x)


def test_cross_attention_with_other_feature_sizes():
    mha, gen = make(kdim=12, vdim=10)
    q, k, v = rand(gen, 3, 5, 16), rand(gen, 3, 9, 12), rand(gen, 3, 9, 10)
    check(mha, naive_attention(mha, q, k, v), query=q, key=k, value=v)


def test_value_defaults_to_key():
    mha, gen = make(kdim=12)
    q, k = rand(gen, 2, 5, 16), rand(gen, 2, 6, 12)
    check(mha, naive_attention(mha, q, k, k), query=q, key=k)


def test_key_padding_mask():
    mha, gen = make()
    q, kv = rand(gen, 2, 5, 16), rand(gen, 2, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 3 + [True] * 3])
    blocked = pad[:, None, :].expand(2, 5, 6)
    check(mha, naive_attention(mha, q, kv, kv, blocked), query=q, key=kv, key_padding_mask=pad)
    # padded keys really are ignored: changing them changes nothing
    kv2 = kv.clone()
    kv2[1, 3:] = 100.0
    assert torch.allclose(mha(q, kv, key_padding_mask=pad)[0], mha(q, kv2, key_padding_mask=pad)[0])


def test_causal():
    mha, gen = make()
    x = rand(gen, 2, 6, 16)
    blocked = torch.ones(6, 6, dtype=torch.bool).triu(1).expand(2, 6, 6)
    check(mha, naive_attention(mha, x, x, x, blocked), query=x, is_causal=True)
    # output at position i does not depend on later positions
    y = x.clone()
    y[:, 4:] = 0.0
    assert torch.allclose(mha(x, is_causal=True)[0][:, :4], mha(y, is_causal=True)[0][:, :4])


def test_causal_cross_attention_is_top_left_aligned():
    mha, gen = make()
    q, kv = rand(gen, 1, 3, 16), rand(gen, 1, 5, 16)
    blocked = torch.ones(3, 5, dtype=torch.bool).triu(1).expand(1, 3, 5)
    check(mha, naive_attention(mha, q, kv, kv, blocked), query=q, key=kv, is_causal=True)


def test_causal_and_padding_combine():
    mha, gen = make()
    x = rand(gen, 2, 6, 16)
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    blocked = torch.ones(6, 6, dtype=torch.bool).triu(1)[None] | pad[:, None, :]
    check(
        mha,
        naive_attention(mha, x, x, x, blocked),
        query=x,
        key_padding_mask=pad,
        is_causal=True,
    )


def test_boolean_attn_mask_blocks_true():
    mha, gen = make()
    x = rand(gen, 2, 5, 16)
    mask = torch.rand(5, 5, generator=gen) < 0.4
    mask.fill_diagonal_(False)
    check(mha, naive_attention(mha, x, x, x, mask.expand(2, 5, 5)), query=x, attn_mask=mask)


def test_per_sample_boolean_attn_mask():
    mha, gen = make()
    x = rand(gen, 2, 5, 16)
    mask = torch.rand(2, 1, 5, 5, generator=gen) < 0.4
    mask[..., 0] = False
    check(mha, naive_attention(mha, x, x, x, mask[:, 0]), query=x, attn_mask=mask)


def test_additive_float_mask_with_padding():
    mha, gen = make()
    q, kv = rand(gen, 2, 4, 16), rand(gen, 2, 6, 16)
    bias = rand(gen, 4, 6)
    bias[0, 2] = float("-inf")
    pad = torch.tensor([[False] * 6, [False] * 5 + [True]])
    ref = naive_attention(mha, q, kv, kv, pad[:, None, :].expand(2, 4, 6), bias.expand(2, 4, 6))
    check(mha, ref, query=q, key=kv, attn_mask=bias, key_padding_mask=pad)


def test_fully_masked_rows_give_zeros_not_nan():
    mha, gen = make()
    x = rand(gen, 2, 4, 16)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[2] = True  # query 2 may attend to nothing
    ref = naive_attention(mha, x, x, x, mask.expand(2, 4, 4))
    check(mha, ref, query=x, attn_mask=mask)
    out, weights = mha(x, attn_mask=mask, need_weights=True)
    assert weights is not None
    assert torch.equal(weights[:, :, 2], torch.zeros_like(weights[:, :, 2]))
    # zero before the output projection, so the projection's bias after it
    assert torch.allclose(out[:, 2], mha.out_proj.bias.expand(2, 16))
    # same for a float mask whose row is all -inf, and for an all-padding sample
    bias = torch.zeros(4, 4, dtype=torch.float64)
    bias[2] = float("-inf")
    check(mha, ref, query=x, attn_mask=bias)
    pad = torch.tensor([[False] * 4, [True] * 4])
    all_pad = naive_attention(mha, x, x, x, pad[:, None, :].expand(2, 4, 4))
    check(mha, all_pad, query=x, key_padding_mask=pad)


def test_gradients_flow_and_stay_finite_with_empty_rows():
    mha, gen = make()
    x = rand(gen, 2, 5, 16).requires_grad_(True)
    pad = torch.tensor([[False] * 5, [True] * 5])  # sample 1 is all padding
    for need_weights in (False, True):
        mha.zero_grad()
        x.grad = None
        out, _ = mha(x, key_padding_mask=pad, is_causal=True, need_weights=need_weights)
        out.square().sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad[0].abs().sum() > 0
        for name, p in mha.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_gradients_match_the_reference():
    mha, gen = make()
    x = rand(gen, 1, 4, 16).requires_grad_(True)
    (g_fast,) = torch.autograd.grad(mha(x, is_causal=True)[0].sum(), x)
    blocked = torch.ones(4, 4, dtype=torch.bool).triu(1)[None]
    (g_ref,) = torch.autograd.grad(naive_attention(mha, x, x, x, blocked)[0].sum(), x)
    assert torch.allclose(g_fast, g_ref, atol=TOL, rtol=0)


def test_matches_torch_multihead_attention():
    mha, gen = make(embed_dim=16, num_heads=4)
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
    q, kv = rand(gen, 2, 5, 16), rand(gen, 2, 7, 16)
    pad = torch.tensor([[False] * 7, [False] * 5 + [True] * 2])
    mask = torch.rand(5, 7, generator=gen) < 0.3
    mask[:, 0] = False
    out, weights = mha(q, kv, key_padding_mask=pad, attn_mask=mask, need_weights=True)
    expect, expect_weights = ref(
        q, kv, kv, key_padding_mask=pad, attn_mask=mask, average_attn_weights=False
    )
    assert weights is not None
    assert torch.allclose(out, expect, atol=TOL, rtol=0)
    assert torch.allclose(weights, expect_weights, atol=TOL, rtol=0)


def test_dropout_only_in_training():
    mha, gen = make(dropout=0.5)
    x = rand(gen, 2, 6, 16)
    assert torch.equal(mha(x)[0], mha(x)[0])
    mha.train()
    torch.manual_seed(1)
    a = mha(x)[0]
    b = mha(x)[0]
    assert not torch.allclose(a, b)
    _, weights = mha(x, need_weights=True)
    assert weights is not None  # probabilities before dropout: rows still sum to one
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 6, dtype=torch.float64))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"key_padding_mask": torch.zeros(2, 3, dtype=torch.bool)}, "key_padding_mask"),
        ({"key_padding_mask": torch.zeros(2, 5)}, "key_padding_mask"),
        ({"attn_mask": torch.zeros(4, 5, dtype=torch.bool)}, "does not broadcast"),
        ({"attn_mask": torch.zeros(5, 5, dtype=torch.int64)}, "bool or floating"),
        ({"value": torch.zeros(2, 5, 16)}, "value was given without key"),
    ],
)
def test_bad_arguments_are_named(call, message):
    mha, gen = make()
    with pytest.raises(ValueError, match=message):
        mha(rand(gen, 2, 5, 16), **call)


def test_bad_construction():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttention(8, 2, dropout=1.0)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "case", ["plain", "causal", "padding", "padding+causal", "additive", "empty-rows", "weights"]
)
def test_cuda_fast_kernels_match_the_float64_reference(case):
    """On CUDA the fast path runs in the flash / memory-efficient kernels (forced here, so a
    fallback to the math kernel fails) and agrees with the float64 CPU result."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mha, gen = make(embed_dim=256, num_heads=8, scale=0.05)
    x = rand(gen, 3, 300, 256)  # 300 keys: not a multiple of the kernels' tile sizes
    pad = torch.zeros(3, 300, dtype=torch.bool)
    pad[1, 200:] = True
    call: dict[str, object] = {
        "plain": {},
        "causal": {"is_causal": True},
        "padding": {"key_padding_mask": pad},
        "padding+causal": {"key_padding_mask": pad, "is_causal": True},
        "additive": {"attn_mask": rand(gen, 300, 300), "key_padding_mask": pad},
        "empty-rows": {"key_padding_mask": pad | (torch.arange(3) == 2)[:, None]},
        "weights": {"key_padding_mask": pad, "need_weights": True},
    }[case]
    backend = {
        "plain": SDPBackend.FLASH_ATTENTION,
        "causal": SDPBackend.FLASH_ATTENTION,
    }.get(case, SDPBackend.EFFICIENT_ATTENTION)
    ref, ref_weights = mha(x, **call)
    fast = copy.deepcopy(mha).to("cuda", torch.float16)
    on_gpu = {k: v.cuda() if isinstance(v, Tensor) else v for k, v in call.items()}
    with sdpa_kernel(backend):  # raises when the kernel cannot take these inputs
        out, weights = fast(x.to("cuda", torch.float16), **on_gpu)
    assert torch.isfinite(out).all()
    err = (out.double().cpu() - ref).abs().max() / ref.abs().max()
    assert err < 1e-2, err
    if ref_weights is not None:
        assert weights is not None
        assert (weights.double().cpu() - ref_weights).abs().max() < 1e-2
