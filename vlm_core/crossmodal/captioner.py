"""The image-to-text model: a timm image tower, a Transformer text decoder with cross-attention,
greedy and beam-search decoding.

Architecture (:class:`CaptionerArch`, plain data stored in a checkpoint's card):

- **image tower** — any timm model through :func:`vlm_core.backbones.create_backbone` with
  ``features_only``; one feature map (``feature_level``, the last by default) of shape
  (B, C, h, w) becomes h*w *memory tokens*: a linear projection to the decoder width plus a
  learned 2D position (a row and a column embedding), then a layer norm;
- **text decoder** — token and learned position embeddings, ``depth`` pre-norm blocks of causal
  self-attention, cross-attention to the memory tokens (both :class:`vlm_core.attention.
  MultiHeadAttention`) and an MLP, a final layer norm, and the output projection tied to the
  input embedding (plus a bias).

A sequence is ``<bos> caption <eos>``, or ``<bos> question <sep> answer <eos>`` for visual QA:
the question is a prefix the decoder reads but is not trained to produce, so one model
captions and answers. Decoding continues a prefix; it keeps a **KV cache** — each step feeds
the new token only, appends its keys and values to per-layer buffers, and reads the memory
tokens' keys and values projected once — so a step costs one token's work plus attention over
the tokens so far. The cached step uses the same ``MultiHeadAttention`` modules' projections
with ``scaled_dot_product_attention``; its log-probabilities equal the full forward pass's
(tested).

Inference reads an image's memory through :class:`Memory`: the memory tokens with every
block's cross-attention keys and values, projected once per image and shared by all the rows
that read that image — a beam search's beams, a scoring's candidates, and any number of
decodings and scorings of the same images (the caption tasks caption and tag one encoding).
Cross-attention treats each token on its own, so the rows of one image attend as one longer
query (:func:`_cross`) instead of each row carrying a copy of the image's keys and values
(projecting an image's 256 memory tokens costs about as much as 36 text tokens' pass through
a block). Scoring candidates runs the shared prefix (the question) once per image and the
candidates from the KV cache.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlm_core.attention import MultiHeadAttention
from vlm_core.backbones import Preprocessing, create_backbone
from vlm_core.crossmodal.pixels import preprocess_batch
from vlm_core.crossmodal.vocab import Vocab
from vlm_core.errors import UsageError, check_fields
from vlm_core.types import Image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["Captioner", "CaptionerArch", "Decoded", "Memory"]


@dataclass(frozen=True)
class CaptionerArch:
    """A captioner's architecture as data: what a checkpoint's card stores to rebuild it."""

    backbone: str = "resnet10t"  # timm architecture of the image tower
    backbone_options: Mapping[str, Any] = field(default_factory=dict)  # more timm kwargs
    image_size: int = 224  # side of the square input images, pixels
    feature_level: int = -1  # the tower's feature map that becomes memory tokens (timm index)
    width: int = 256  # decoder width: token and memory-token features
    depth: int = 3  # decoder blocks
    heads: int = 4  # attention heads; must divide width
    mlp_ratio: float = 4.0  # MLP hidden width / width
    dropout: float = 0.1  # dropout on embeddings, residual branches and attention
    max_positions: int = 48  # longest decoder sequence: prefix + caption + <eos>
    max_grid: int = 32  # largest side (in tokens) of the image-token grid

    @classmethod
    def from_dict(cls, arch: Mapping[str, Any]) -> CaptionerArch:
        check_fields(arch, (f.name for f in fields(cls)), "captioner architecture")
        made = cls(**dict(arch))
        made.check()
        return made

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["backbone_options"] = dict(self.backbone_options)
        return out

    def check(self) -> None:
        sizes = (self.image_size, self.width, self.depth, self.heads, self.max_grid)
        if min(sizes) < 1 or self.mlp_ratio <= 0:
            raise UsageError(f"captioner architecture has a non-positive size: {self.to_dict()}")
        if self.width % self.heads:
            raise UsageError(f"width {self.width} must be a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_positions < 8:
            raise UsageError(f"max_positions must be at least 8, got {self.max_positions}")


@dataclass(frozen=True)
class Decoded:
    """Decoded captions or answers, one per image."""

    ids: list[list[int]]  # generated token ids, without the prefix and the <eos>
    texts: list[str]  # the ids as text (Vocab.decode)
    log_probs: list[float]  # the model's log-probability of each sequence (with <eos> if ended)
    finished: list[bool]  # whether the sequence ended with <eos> within the length limit


@dataclass(frozen=True)
class Memory:
    """Images through the image tower, ready to decode and score any number of times
    (:meth:`Captioner.memory`): the memory tokens (N, T, width) and each decoder block's
    cross-attention keys and values of them, (N, H, T, head width) each."""

    tokens: Tensor
    kv: list[tuple[Tensor, Tensor]]

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class _Cache:
    """Per-layer key/value buffers of the decoded tokens, and the memory tokens' keys/values
    (one row per image; the decoded rows are image-major, a group of rows per image)."""

    def __init__(self, memory_kv: list[tuple[Tensor, Tensor]], length: int) -> None:
        self.memory_kv = memory_kv
        self.length = length  # buffer positions: prefix + generated tokens
        self.kv: list[tuple[Tensor, Tensor] | None] = [None] * len(memory_kv)

    def write(self, layer: int, at: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k``/``v`` (R, H, T, d) at positions ``at...`` and return the keys and values
        of every position so far."""
        buffers = self.kv[layer]
        if buffers is None:
            rows, heads, _, dim = k.shape
            shape = (rows, heads, self.length, dim)
            buffers = (k.new_empty(shape), v.new_empty(shape))
            self.kv[layer] = buffers
        end = at + k.shape[2]
        buffers[0][:, :, at:end] = k
        buffers[1][:, :, at:end] = v
        return buffers[0][:, :, :end], buffers[1][:, :, :end]

    def reorder(self, rows: Tensor) -> None:
        """Keep rows ``rows`` (beam search: each beam continues one of its sample's beams)."""
        self.kv = [None if b is None else (b[0][rows], b[1][rows]) for b in self.kv]


def _split_heads(attn: MultiHeadAttention, x: Tensor) -> Tensor:
    rows, length, _ = x.shape
    return x.view(rows, length, attn.num_heads, attn.head_dim).transpose(1, 2)


def _attend(
    attn: MultiHeadAttention, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None
) -> Tensor:
    """``attn`` applied to query ``x`` (R, T, E) with projected keys/values (R, H, S, d);
    ``mask`` (R, 1, T, S) bool, True = attend."""
    q = _split_heads(attn, attn.q_proj(x))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    rows, _, length, _ = q.shape
    return attn.out_proj(out.transpose(1, 2).reshape(rows, length, attn.embed_dim))


def _cross(attn: MultiHeadAttention, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Cross-attention of rows ``x`` (R, L, E) to the projected memory ``k``/``v`` of N images
    (N, H, T, d), R a multiple of N and the rows image-major (row r reads image r // (R / N)):
    each image's rows attend as one query of (R / N) * L tokens, equal to each row attending
    to its own copy (attention treats every query token on its own)."""
    images, (rows, length, width) = k.shape[0], x.shape
    if rows % images:
        raise UsageError(f"{rows} decoder rows do not divide among {images} images")
    grouped = x.reshape(images, rows // images * length, width)
    return _attend(attn, grouped, k, v, None).reshape(rows, length, width)


class DecoderBlock(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the memory tokens, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = max(int(width * mlp_ratio), 1)
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = MultiHeadAttention(width, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = MultiHeadAttention(width, heads, dropout=dropout)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """x (B, L, E) -> (B, L, E), every position attending to itself and those before."""
        x = x + self.drop(self.self_attn(self.norm1(x), is_causal=True)[0])
        x = x + self.drop(self.cross_attn(self.norm2(x), memory)[0])
        return x + self.drop(self.mlp(self.norm3(x)))

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        attn = self.cross_attn
        return _split_heads(attn, attn.k_proj(memory)), _split_heads(attn, attn.v_proj(memory))

    def step(self, x: Tensor, cache: _Cache, layer: int, at: int, mask: Tensor) -> Tensor:
        """``forward`` for new tokens x (R, T, E) at buffer positions ``at...``, reading the
        earlier ones from ``cache``; ``mask`` (R, 1, T, at+T) bool, True = attend (eval only)."""
        h = self.norm1(x)
        attn = self.self_attn
        k, v = cache.write(
            layer, at, _split_heads(attn, attn.k_proj(h)), _split_heads(attn, attn.v_proj(h))
        )
        x = x + _attend(attn, h, k, v, mask)
        x = x + _cross(self.cross_attn, self.norm2(x), *cache.memory_kv[layer])
        return x + self.mlp(self.norm3(x))


@contextlib.contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; a module in training mode goes back to it after.
    A module in eval mode already (a loaded model) is left alone: switching the mode walks
    every submodule twice (18% of caption.describe's CPU time in a profile of 64 photos, with
    its ten decodings and scorings per batch)."""
    was_training = module.training
    if was_training:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            module.train()


class Captioner(nn.Module):
    """Image tower + Transformer text decoder with cross-attention (see the module docstring).

    Args:
        arch: the architecture, a :class:`CaptionerArch` or its dict.
        vocab: the vocabulary (or its dict); its size sets the embedding's.
        backbone_weights: weights of the image tower (a :func:`vlm_core.weights.resolve`
            reference); None: random initialisation. The decoder always starts random.
        backbone_sha256: the expected sha256 of ``backbone_weights``.
        plugin: who asks (named in errors about weights).
    """

    def __init__(
        self,
        arch: CaptionerArch | Mapping[str, Any],
        vocab: Vocab | Mapping[str, Any],
        *,
        backbone_weights: str | None = None,
        backbone_sha256: str | None = None,
        plugin: str = "core",
    ) -> None:
        super().__init__()
        spec = arch if isinstance(arch, CaptionerArch) else CaptionerArch.from_dict(arch)
        spec.check()
        self.arch = spec
        self.vocab = vocab if isinstance(vocab, Vocab) else Vocab.from_dict(vocab)
        tower = create_backbone(
            spec.backbone, backbone_weights, features_only=True, out_indices=(spec.feature_level,),
            sha256=backbone_sha256, plugin=plugin, **dict(spec.backbone_options),
        )  # fmt: skip
        assert tower.feature_info is not None  # features_only always sets it
        self.image_tower = tower.model
        side = spec.image_size
        self.preprocessing = Preprocessing(
            input_size=(3, side, side), mean=tower.preprocessing.mean,
            std=tower.preprocessing.std, interpolation=tower.preprocessing.interpolation,
            crop_pct=1.0, crop_mode="squash",
        )  # fmt: skip
        self.transform = self.preprocessing.transform()
        width = spec.width
        self.memory_proj = nn.Linear(tower.feature_info.channels[0], width)
        self.memory_row = nn.Embedding(spec.max_grid, width)
        self.memory_col = nn.Embedding(spec.max_grid, width)
        self.memory_norm = nn.LayerNorm(width)
        self.token_embed = nn.Embedding(len(self.vocab), width)
        self.position_embed = nn.Embedding(spec.max_positions, width)
        self.drop = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(width, spec.heads, spec.mlp_ratio, spec.dropout) for _ in range(spec.depth)
        )
        self.norm = nn.LayerNorm(width)
        self.output_bias = nn.Parameter(torch.zeros(len(self.vocab)))
        for embedding in (self.memory_row, self.memory_col, self.token_embed, self.position_embed):
            nn.init.normal_(embedding.weight, std=0.02)

    # -- what rebuilds it ---------------------------------------------------------------------

    def card(self) -> dict[str, Any]:
        """``architecture``, ``vocab`` and ``preprocessing``: what a checkpoint's card needs."""
        return {
            "architecture": self.arch.to_dict(),
            "vocab": self.vocab.to_dict(),
            "preprocessing": asdict(self.preprocessing),
        }

    @classmethod
    def from_card(cls, card: Mapping[str, Any], **kwargs: Any) -> Captioner:
        """A randomly initialised captioner of a card's ``architecture`` and ``vocab`` (load
        the checkpoint's state dict into it)."""
        missing = [key for key in ("architecture", "vocab") if key not in card]
        if missing:
            raise UsageError(
                f"a captioner card needs {' and '.join(missing)}; it has {sorted(card)}"
            )
        return cls(card["architecture"], card["vocab"], **kwargs)

    # -- the forward pass ---------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.output_bias.device

    def pixels(self, images: Sequence[Image | PILImage]) -> Tensor:
        """The preprocessing of ``images`` (core or PIL): (N, 3, S, S) float32 on the CPU."""
        return preprocess_batch(images, self.transform, "the captioner")

    def encode_images(self, images: Tensor) -> Tensor:
        """Memory tokens of preprocessed ``images`` (B, 3, S, S): (B, h*w, width)."""
        features = self.image_tower(images)[0]
        _, _, h, w = features.shape
        if max(h, w) > self.arch.max_grid:
            raise UsageError(
                f"the image tower gives a {h}x{w} token grid, larger than max_grid "
                f"{self.arch.max_grid}; use smaller images or a larger max_grid"
            )
        rows = self.memory_row.weight[:h, None, :]
        cols = self.memory_col.weight[None, :w, :]
        position = (rows + cols).reshape(h * w, -1)
        tokens = self.memory_proj(features.flatten(2).transpose(1, 2))
        return self.memory_norm(tokens + position)

    def memory(self, tokens: Tensor) -> Memory:
        """The :class:`Memory` of memory tokens (N, T, width) from :meth:`encode_images`: each
        block's cross-attention keys and values projected once, for every decoding and scoring
        of these images (pass it as ``memory``)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.arch.width:
            raise UsageError(
                f"memory must be (N, tokens, {self.arch.width}), got {tuple(tokens.shape)}"
            )
        tokens = tokens.to(self.device, self.memory_proj.weight.dtype)
        with torch.no_grad():
            return Memory(tokens, [block.memory_kv(tokens) for block in self._decoder()])

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced next-token logits.

        Args:
            images: preprocessed (B, 3, S, S).
            tokens: (B, L) ids starting with ``<bos>``, right-padded; L <= max_positions.

        Returns:
            (B, L, vocabulary) logits; position i predicts token i + 1.
        """
        return self.decode(self.encode_images(images), tokens)

    def decode(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """Teacher-forced next-token logits from memory tokens (B, h*w, width) of
        :meth:`encode_images`: what :meth:`forward` does after the image tower."""
        length = tokens.shape[1]
        if length > self.arch.max_positions:
            raise UsageError(
                f"sequence of {length} tokens is longer than max_positions "
                f"{self.arch.max_positions}"
            )
        positions = torch.arange(length, device=tokens.device)
        x = self.drop(self.token_embed(tokens) + self.position_embed(positions))
        for block in self.blocks:
            x = block(x, memory)
        return self._logits(x)

    def _decoder(self) -> list[DecoderBlock]:
        return [cast(DecoderBlock, block) for block in self.blocks]

    def _logits(self, x: Tensor) -> Tensor:
        return F.linear(self.norm(x), self.token_embed.weight, self.output_bias)

    # -- decoding -----------------------------------------------------------------------------

    def _pixels(self, images: Tensor | Sequence[Image | PILImage]) -> Tensor:
        pixels = images if isinstance(images, Tensor) else self.pixels(images)
        if pixels.dim() != 4:
            raise UsageError(f"images must be a (B, 3, H, W) batch, got {tuple(pixels.shape)}")
        return pixels.to(self.device)

    def _prefixes(self, batch: int, questions: Sequence[str | None] | None) -> list[list[int]]:
        if questions is None:
            questions = [None] * batch
        if isinstance(questions, str) or len(questions) != batch:
            raise UsageError(f"give one question (or None) per image: {batch} images")
        return [self.vocab.prefix(q, self.arch.max_positions) for q in questions]

    def _memory(
        self, images: Tensor | Sequence[Image | PILImage] | None, memory: Tensor | Memory | None,
        what: str,
    ) -> Memory:  # fmt: skip
        """The memory of ``images`` (one pass of the image tower), or the ``memory`` given."""
        if (images is None) == (memory is None):
            raise UsageError(f"give {what} either images or their memory tokens")
        if memory is None:
            assert images is not None
            return self.memory(self.encode_images(self._pixels(images)))
        return memory if isinstance(memory, Memory) else self.memory(memory)

    def _start(
        self, memory: Memory, prefixes: list[list[int]], repeat: int, max_len: int | None
    ) -> tuple[_Cache, Tensor, Tensor, Tensor, Tensor]:
        """Run the (left-padded) prefixes through the decoder, ``repeat`` rows per image.

        Returns the cache, the last prefix position's logits (R, V) with R = B * repeat, the
        next position of each row (R,), the key padding of the buffer (R, length; True =
        padding) and each image's limit on generated tokens (B,).
        """
        if max_len is not None and max_len < 1:
            raise UsageError(f"max_len must be at least 1, got {max_len}")
        device = self.device
        longest = max(len(p) for p in prefixes)
        room = [self.arch.max_positions - len(p) for p in prefixes]
        limits = torch.tensor([min(r, max_len or r) for r in room], device=device)
        length = longest + int(limits.max())
        tokens = torch.full((len(prefixes), longest), self.vocab.pad, device=device)
        padding = torch.zeros(len(prefixes), length, dtype=torch.bool, device=device)
        for i, prefix in enumerate(prefixes):
            tokens[i, longest - len(prefix) :] = torch.tensor(prefix, device=device)
            padding[i, : longest - len(prefix)] = True
        tokens = tokens.repeat_interleave(repeat, dim=0)
        padding = padding.repeat_interleave(repeat, dim=0)
        positions = (~padding[:, :longest]).cumsum(1).sub(1).clamp(min=0)
        cache = _Cache(memory.kv, length)
        causal = torch.ones(longest, longest, dtype=torch.bool, device=device).tril()
        mask = causal & ~padding[:, None, None, :longest]
        mask |= torch.eye(longest, dtype=torch.bool, device=device)  # a pad sees itself
        logits = self._step(tokens, positions, cache, 0, mask)
        return cache, logits[:, -1], positions[:, -1] + 1, padding, limits

    def _step(
        self, tokens: Tensor, positions: Tensor, cache: _Cache, at: int, mask: Tensor
    ) -> Tensor:
        x = self.token_embed(tokens) + self.position_embed(positions)
        for layer, block in enumerate(self._decoder()):
            x = block.step(x, cache, layer, at, mask)
        return self._logits(x)

    def _next(
        self, tokens: Tensor, positions: Tensor, cache: _Cache, at: int, padding: Tensor
    ) -> Tensor:
        """Logits (R, V) after feeding one token per row at buffer position ``at`` (rows
        already complete may run past ``max_positions``: their position is clamped, their
        output unused)."""
        mask = ~padding[:, None, None, : at + 1]
        positions = positions.clamp(max=self.arch.max_positions - 1)
        return self._step(tokens[:, None], positions[:, None], cache, at, mask)[:, -1]

    def _banned(self) -> Tensor:
        """(V,) bool: the tokens decoding never emits (<pad>, <bos>, <sep>)."""
        banned = torch.zeros(len(self.vocab), dtype=torch.bool, device=self.device)
        banned[[self.vocab.pad, self.vocab.bos, self.vocab.sep]] = True
        return banned

    def greedy(
        self,
        images: Tensor | Sequence[Image | PILImage] | None,
        questions: Sequence[str | None] | None = None,
        *,
        max_len: int | None = None,
        memory: Tensor | Memory | None = None,
    ) -> Decoded:
        """The most likely token at each step, for a batch of images.

        Args:
            images: preprocessed (B, 3, S, S), or core / PIL images; None with ``memory``.
            questions: one question (or None for a caption) per image; None: caption all.
            max_len: most tokens to generate per image (the end token included); default
                and cap: what ``max_positions`` leaves after the prefix.
            memory: the images' :meth:`memory` (or memory tokens) instead of ``images``.
        """
        with _evaluating(self):
            encoded = self._memory(images, memory, "greedy")
            prefixes = self._prefixes(len(encoded), questions)
            cache, logits, positions, padding, limits = self._start(encoded, prefixes, 1, max_len)
            batch, start = len(prefixes), len(padding[0]) - int(limits.max())
            banned = self._banned()
            scores = torch.zeros(batch, dtype=torch.float64, device=self.device)
            done = torch.zeros(batch, dtype=torch.bool, device=self.device)
            ended = torch.zeros_like(done)
            lengths = torch.zeros(batch, dtype=torch.long, device=self.device)
            out = []
            for t in range(int(limits.max())):
                logp = logits.float().log_softmax(-1)
                token = logp.masked_fill(banned, -math.inf).argmax(-1)
                scores += torch.where(done, 0.0, logp.gather(1, token[:, None])[:, 0].double())
                lengths += (~done).long()
                out.append(token)
                ended |= ~done & (token == self.vocab.eos)
                done |= (token == self.vocab.eos) | (t + 1 >= limits)
                if bool(done.all()):
                    break
                logits = self._next(token, positions + t, cache, start + t, padding)
            ids = torch.stack(out, 1).tolist()
        sequences = [
            row[: n - 1] if end else row[:n]
            for row, n, end in zip(ids, lengths.tolist(), ended.tolist(), strict=True)
        ]
        return Decoded(
            ids=sequences,
            texts=[self.vocab.decode(s) for s in sequences],
            log_probs=scores.tolist(),
            finished=ended.tolist(),
        )

    def beam_search(
        self,
        images: Tensor | Sequence[Image | PILImage] | None,
        questions: Sequence[str | None] | None = None,
        *,
        beam: int = 3,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        memory: Tensor | Memory | None = None,
    ) -> Decoded:
        """Beam search over ``beam`` hypotheses per image, batched over the images.

        Each step extends every live hypothesis by every token and keeps the best extensions
        of the image's live hypotheses, as many as the image has open slots; an extension
        ending in ``<eos>`` (or reaching the length limit) is set aside as complete and takes
        its slot with it, so each image collects ``beam`` complete hypotheses and then stops
        (the "shrinking beam" of most captioning code; with ``beam=1`` it is exactly greedy
        decoding). The answer is the complete hypothesis with the best
        ``log_prob / length ** length_penalty`` (length in tokens, the end token included;
        0: the most likely; 1, the default: the best mean log-probability per token).

        Like every beam search it prunes, so a wider beam usually but not always finds a
        likelier sequence than a narrower one; a beam of at least (number of tokens) **
        (max_len - 1) is exhaustive and, with ``length_penalty=0``, returns the most likely
        sequence of at most ``max_len`` tokens.

        Args:
            images, questions, max_len, memory: as for :meth:`greedy`.
            beam: hypotheses per image.
            length_penalty: the exponent above.
        """
        if beam < 1:
            raise UsageError(f"beam must be at least 1, got {beam}")
        with _evaluating(self):
            encoded = self._memory(images, memory, "beam_search")
            prefixes = self._prefixes(len(encoded), questions)
            cache, logits, positions, padding, limits = self._start(
                encoded, prefixes, beam, max_len
            )
            batch, vocab_size, device = len(prefixes), len(self.vocab), self.device
            start = len(padding[0]) - int(limits.max())
            scores = torch.full((batch, beam), -math.inf, dtype=torch.float64, device=device)
            scores[:, 0] = 0.0  # the beams start identical: extend one of them
            live = torch.full((batch,), beam, device=device)
            history = torch.zeros(batch, beam, 0, dtype=torch.long, device=device)
            complete: list[list[tuple[float, float, list[int], bool]]] = [[] for _ in range(batch)]
            slots = torch.arange(beam, device=device)
            banned = self._banned()
            for t in range(int(limits.max())):
                logp = logits.float().log_softmax(-1).masked_fill(banned, -math.inf)
                logp = logp.double().view(batch, beam, vocab_size)
                top, index = (scores[:, :, None] + logp).view(batch, -1).topk(beam, dim=1)
                source, token = index // vocab_size, index % vocab_size
                kept = (slots[None, :] < live[:, None]) & torch.isfinite(top)
                history = torch.cat(
                    [history.gather(1, source[..., None].expand(-1, -1, t)), token[..., None]], 2
                )
                ends = kept & ((token == self.vocab.eos) | (t + 1 >= limits)[:, None])
                for b, k in ends.nonzero().tolist():
                    seq = history[b, k].tolist()
                    log_prob = float(top[b, k])
                    rank = log_prob / len(seq) ** length_penalty
                    finished = seq[-1] == self.vocab.eos
                    complete[b].append((rank, log_prob, seq[:-1] if finished else seq, finished))
                live -= ends.sum(1)
                scores = torch.where(kept & ~ends, top, -math.inf)
                if int(live.sum()) == 0 or not bool(torch.isfinite(scores).any()):
                    break
                rows = (torch.arange(batch, device=device)[:, None] * beam + source).view(-1)
                cache.reorder(rows)
                logits = self._next(token.view(-1), positions + t, cache, start + t, padding)
        best = [max(hyps, key=lambda h: h[0]) for hyps in complete]
        return Decoded(
            ids=[h[2] for h in best],
            texts=[self.vocab.decode(h[2]) for h in best],
            log_probs=[h[1] for h in best],
            finished=[h[3] for h in best],
        )

    def score_candidates(
        self,
        images: Tensor | Sequence[Image | PILImage] | None,
        candidates: Sequence[Sequence[int]],
        question: str | None = None,
        *,
        memory: Tensor | Memory | None = None,
    ) -> Tensor:
        """The log-probability of each candidate continuation for each image, after the same
        ``question`` (or none: as a caption) — a generative classifier over the candidates.
        Each image goes through the image tower once; or give its ``memory`` (:meth:`memory`,
        or the tokens of :meth:`encode_images`, kept from earlier) instead of ``images``. The
        prefix goes through the decoder once per image and the candidates continue it from
        the KV cache, reading the image's memory together (:func:`_cross`). Candidates are
        token ids (end them with ``<eos>`` to count the end).
        Returns (N images, C candidates) float64 on the CPU."""
        if not candidates or any(len(c) == 0 for c in candidates):
            raise UsageError("give at least one non-empty candidate sequence")
        with _evaluating(self):
            encoded = self._memory(images, memory, "score_candidates")
            n, c, device = len(encoded), len(candidates), self.device
            prefix = self.vocab.prefix(question, self.arch.max_positions)
            fed, longest = len(prefix), max(len(seq) for seq in candidates)
            length = fed + longest - 1  # buffer positions: the prefix and the tokens fed after
            if length > self.arch.max_positions:
                raise UsageError(
                    f"sequence of {length} tokens is longer than max_positions "
                    f"{self.arch.max_positions}"
                )
            # the prefix once per image: its last position predicts each candidate's first token
            cache = _Cache(encoded.kv, length)
            causal = torch.ones(fed, fed, dtype=torch.bool, device=device).tril()
            tokens = torch.tensor(prefix, device=device).expand(n, fed)
            positions = torch.arange(fed, device=device)
            first = self._step(tokens, positions, cache, 0, causal)[:, -1].float().log_softmax(-1)
            ids = torch.full((c, longest), self.vocab.pad, device=device)
            for i, seq in enumerate(candidates):
                ids[i, : len(seq)] = torch.tensor(seq, device=device)
            logp = first.double()[:, ids[:, 0]]  # (N, C)
            if longest > 1:  # the rest of every candidate, c rows per image reading its prefix
                cache.reorder(torch.arange(n, device=device).repeat_interleave(c))
                rows = ids.repeat(n, 1)  # image-major: row i * c + j
                steps = torch.arange(fed, length, device=device)
                mask = torch.arange(length, device=device)[None, :] <= steps[:, None]
                later = self._step(rows[:, :-1], steps, cache, fed, mask).float().log_softmax(-1)
                picked = later.gather(2, rows[:, 1:, None])[..., 0].double()
                counted = torch.zeros(c, longest - 1, dtype=torch.float64, device=device)
                for i, seq in enumerate(candidates):
                    counted[i, : len(seq) - 1] = 1.0
                logp = logp + (picked * counted.repeat(n, 1)).sum(1).reshape(n, c)
            return logp.cpu()

    def score(
        self,
        images: Tensor | Sequence[Image | PILImage],
        sequences: Sequence[Sequence[int]],
        questions: Sequence[str | None] | None = None,
    ) -> Tensor:
        """The model's log-probability of generating each of ``sequences`` (token ids after
        the prefix; end them with ``<eos>`` to count the end) — by the full teacher-forced
        forward pass, without the cache. Returns (B,) float64."""
        with _evaluating(self):
            pixels = self._pixels(images)
            prefixes = self._prefixes(pixels.shape[0], questions)
            if len(sequences) != len(prefixes):
                raise UsageError(f"give one sequence per image: {len(prefixes)} images")
            rows = [[*p, *s] for p, s in zip(prefixes, sequences, strict=True)]
            longest = max(len(r) for r in rows)
            tokens = torch.full((len(rows), longest), self.vocab.pad, device=self.device)
            for i, row in enumerate(rows):
                tokens[i, : len(row)] = torch.tensor(row, device=self.device)
            logp = self(pixels, tokens[:, :-1]).float().log_softmax(-1)
            picked = logp.gather(2, tokens[:, 1:, None])[..., 0].double()
            out = []
            for i, (prefix, seq) in enumerate(zip(prefixes, sequences, strict=True)):
                out.append(picked[i, len(prefix) - 1 : len(prefix) - 1 + len(seq)].sum())
            return torch.stack(out).cpu()
