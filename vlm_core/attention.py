"""Multi-head self- and cross-attention on ``torch.nn.functional.scaled_dot_product_attention``.

One class, :class:`MultiHeadAttention`, covers both kinds: call it with ``key=None`` for
self-attention, or pass ``key`` (and ``value``) from another sequence for cross-attention
(``kdim`` / ``vdim`` give that sequence's feature sizes when they differ from ``embed_dim``).

Masks follow :class:`torch.nn.MultiheadAttention`: in a boolean mask ``True`` means *blocked*
(the opposite of ``scaled_dot_product_attention``'s own boolean ``attn_mask``), a float mask is
added to the attention logits. A query row whose every key is blocked outputs zeros (before the
output projection) and has all-zero weights, instead of NaN.

The default path calls ``scaled_dot_product_attention``, which picks the flash or
memory-efficient kernel on a GPU. ``need_weights=True`` computes the same math explicitly so
the attention probabilities can be returned; it materialises the (B, H, Lq, Lk) matrix and is
slower and heavier — use it for inspection, not for training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query, key, value and output projections.

    Args:
        embed_dim: Feature size of the query and of the output (E); split evenly over the heads.
        num_heads: Number of heads (H); ``embed_dim`` must be divisible by it.
        kdim: Feature size of ``key`` for cross-attention; default ``embed_dim``.
        vdim: Feature size of ``value`` for cross-attention; default ``kdim`` when ``kdim`` is
            given, else ``embed_dim``.
        bias: Whether the four projections have a bias. Default True.
        dropout: Dropout probability on the attention probabilities, applied in training mode
            only. Default 0.
        device: Device of the parameters; default torch's current default.
        dtype: Dtype of the parameters; default torch's current default.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        kdim = kdim or embed_dim
        vdim = vdim or kdim
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim
        self.vdim = vdim
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(kdim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, "
            f"vdim={self.vdim}, dropout={self.dropout}"
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` to ``key`` / ``value``.

        Args:
            query: (B, Lq, E).
            key: (B, Lk, kdim); None for self-attention (key = value = query).
            value: (B, Lk, vdim); None to use ``key``.
            key_padding_mask: (B, Lk) bool, True where the key is padding (never attended to).
            attn_mask: Bool (True = blocked) or float (added to the logits, ``-inf`` blocks),
                broadcastable to (B, H, Lq, Lk) with the usual right-aligned rules: (Lq, Lk)
                applies to every sample and head, (B, 1, Lq, Lk) to every head of each sample.
            is_causal: Block key j for query i when j > i (top-left aligned, as in
                ``scaled_dot_product_attention``). Combines with the other masks.
            need_weights: Also return the attention probabilities (explicit, slower path).

        Returns:
            ``(output, weights)``: output (B, Lq, E); weights (B, H, Lq, Lk) per head, the
            probabilities before dropout, or None unless ``need_weights``.
        """
        if key is None:
            if value is not None:
                raise ValueError("value was given without key; pass key too for cross-attention")
            key = value = query
        elif value is None:
            value = key
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError(
                "query, key and value must be (batch, length, features), got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        batch, q_len, _ = query.shape
        k_len = key.shape[1]
        if key.shape[0] != batch or value.shape[:2] != key.shape[:2]:
            raise ValueError(
                f"key {tuple(key.shape)} and value {tuple(value.shape)} must share batch and "
                f"length, and match the query's batch {batch}"
            )
        heads, head_dim = self.num_heads, self.head_dim
        q = self.q_proj(query).view(batch, q_len, heads, head_dim).transpose(1, 2)
        k = self.k_proj(key).view(batch, k_len, heads, head_dim).transpose(1, 2)
        v = self.v_proj(value).view(batch, k_len, heads, head_dim).transpose(1, 2)

        shape = (batch, heads, q_len, k_len)
        mask, empty_rows = _combine_masks(
            shape, key_padding_mask, attn_mask, is_causal, q.dtype, q.device
        )
        causal_only = is_causal and mask is None
        dropout_p = self.dropout if self.training else 0.0
        weights: Tensor | None = None
        if need_weights:
            out, weights = _explicit_attention(q, k, v, mask, causal_only, empty_rows, dropout_p)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=causal_only
            )
        if empty_rows is not None:
            out = out.masked_fill(empty_rows, 0.0)
        out = out.transpose(1, 2).reshape(batch, q_len, self.embed_dim)
        return self.out_proj(out), weights


def _combine_masks(
    shape: tuple[int, int, int, int],
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    is_causal: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor | None, Tensor | None]:
    """Fold padding, causal and user masks into one mask for ``scaled_dot_product_attention``.

    Returns ``(mask, empty_rows)``. ``mask`` is None when only ``is_causal`` (or nothing) is
    asked — the caller then passes ``is_causal`` to the kernel, which keeps the flash path —
    else a bool mask with True = *attend* (the kernel's convention) or an additive float mask,
    broadcastable to ``shape`` (B, H, Lq, Lk). ``empty_rows`` (broadcastable to (B, H, Lq, 1))
    marks query rows with every key blocked; those rows are unblocked in ``mask`` (so the
    softmax stays finite) and must be zeroed by the caller.
    """
    batch, _, q_len, k_len = shape
    if key_padding_mask is None and attn_mask is None:
        return None, None
    blocked: Tensor | None = None
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (
            batch,
            k_len,
        ):
            raise ValueError(
                f"key_padding_mask must be bool of shape ({batch}, {k_len}) with True = padding,"
                f" got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        blocked = key_padding_mask.to(device).view(batch, 1, 1, k_len)
    if is_causal:
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(1)
        blocked = causal if blocked is None else blocked | causal
    additive: Tensor | None = None
    if attn_mask is not None:
        try:
            full = torch.broadcast_shapes(tuple(attn_mask.shape), shape)
        except RuntimeError:
            full = None
        if full != shape:
            raise ValueError(
                f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to "
                f"(batch, heads, query length, key length) = {shape}"
            )
        attn_mask = attn_mask.to(device)
        if attn_mask.dtype == torch.bool:
            blocked = attn_mask if blocked is None else blocked | attn_mask
        elif attn_mask.is_floating_point():
            additive = attn_mask.to(dtype)
        else:
            raise ValueError(f"attn_mask must be bool or floating point, got {attn_mask.dtype}")
    if additive is None:
        if blocked is None:  # unreachable: a padding or boolean mask was given
            return None, None
        empty = blocked.all(dim=-1, keepdim=True)
        return ~blocked | empty, empty
    if blocked is not None:
        additive = additive.masked_fill(blocked, float("-inf"))
    empty = torch.isneginf(additive).all(dim=-1, keepdim=True)
    return additive.masked_fill(empty, 0.0), empty


def _explicit_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    empty_rows: Tensor | None,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    """softmax(QKᵀ/√d + mask) V with the probabilities kept; q (B, H, Lq, d), k/v (B, H, Lk, d)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if is_causal:
        q_len, k_len = scores.shape[-2:]
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
    elif mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    weights = scores.softmax(dim=-1)
    if empty_rows is not None:
        weights = weights.masked_fill(empty_rows, 0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights
