"""Training the captioner with the core trainer: :func:`captioner_setup` builds the
:class:`~vlm_core.training.TrainSetup`.

- **loss** — teacher-forced cross-entropy of every caption token and the ``<eos>`` (optionally
  label-smoothed), mean over tokens; a visual-QA question (the prefix) is read, not trained on;
- **validation** — ``val_loss`` on each validation image's first reference, and the caption
  metrics (:class:`~vlm_core.crossmodal.caption_metrics.CaptionMetrics`: ``val_bleu1`` ...
  ``val_bleu4``, ``val_rougeL``, ``val_cider``) of the greedily decoded captions (or beam
  search, ``val_beam``) against every reference;
- **best checkpoint** — the highest ``val_cider``;
- **card** — the model's architecture, vocabulary and preprocessing
  (:meth:`Captioner.from_card` rebuilds it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from vlm_core.crossmodal.caption_data import CaptionDataset, CaptionItem, collate_captions
from vlm_core.crossmodal.caption_metrics import CaptionMetrics
from vlm_core.crossmodal.captioner import Captioner
from vlm_core.errors import UsageError
from vlm_core.training.setup import TrainSetup

__all__ = ["caption_loss", "captioner_setup"]

IGNORE = -100


def caption_loss(
    logits: torch.Tensor, tokens: torch.Tensor, prefix_len: torch.Tensor, *, pad: int,
    label_smoothing: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy of the tokens after each prefix.

    Args:
        logits: (B, L-1, V), the model's output for ``tokens[:, :-1]``.
        tokens: (B, L) sequences (prefix, caption, ``<eos>``), right-padded with ``pad``.
        prefix_len: (B,) leading tokens of each row that are not predicted.
        pad: the padding id.
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy`.
    """
    target = tokens[:, 1:].clone()
    position = torch.arange(target.shape[1], device=target.device)
    target[position[None, :] < prefix_len[:, None] - 1] = IGNORE
    target[target == pad] = IGNORE
    return F.cross_entropy(
        logits.float().flatten(0, 1),
        target.flatten(),
        ignore_index=IGNORE,
        label_smoothing=label_smoothing,
    )


def captioner_setup(
    model: Captioner,
    train_items: Sequence[CaptionItem],
    val_items: Sequence[CaptionItem] | None = None,
    *,
    label_smoothing: float = 0.0,
    val_beam: int = 1,
    val_max_len: int | None = None,
    card: Mapping[str, Any] | None = None,
) -> TrainSetup:
    """A :class:`TrainSetup` that trains ``model`` on image-caption / image-question-answer
    items (see the module docstring).

    Args:
        model: the captioner (its vocabulary encodes the texts; build it from the training
            texts with ``Vocab.build``).
        train_items: one training sample per (item, reference).
        val_items: one validation sample per item; None: no validation.
        label_smoothing: in [0, 1). Default 0.
        val_beam: 1 (default): validate greedy decoding; more: beam search of that width.
        val_max_len: the decoding limit in validation (default: what ``max_positions``
            allows).
        card: more entries for the checkpoint's card (the model's own always go in).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise UsageError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if val_beam < 1:
        raise UsageError(f"val_beam must be at least 1, got {val_beam}")
    if not train_items:
        raise UsageError("captioner_setup needs training items")
    vocab, max_positions = model.vocab, model.arch.max_positions
    pad = vocab.pad

    def loss(net: Any, batch: Mapping[str, Any]) -> torch.Tensor:
        tokens = batch["tokens"]
        logits = net(batch["images"], tokens[:, :-1])
        return caption_loss(
            logits, tokens, batch["prefix_len"], pad=pad, label_smoothing=label_smoothing
        )

    def predict(net: Any, batch: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
        images, questions = batch["images"], batch["questions"]
        if val_beam == 1:
            decoded = net.greedy(images, questions, max_len=val_max_len)
        else:
            decoded = net.beam_search(images, questions, beam=val_beam, max_len=val_max_len)
        return decoded.texts, batch["references"]

    def dataset(items: Sequence[CaptionItem], per_caption: bool) -> CaptionDataset:
        return CaptionDataset(
            items, vocab, model.transform, max_positions=max_positions, per_caption=per_caption
        )

    return TrainSetup(
        model=model,
        train_data=dataset(train_items, True),
        val_data=dataset(val_items, False) if val_items else None,
        loss=loss,
        metrics=CaptionMetrics,
        predict=predict,
        monitor="val_cider" if val_items else "val_loss",
        mode="max" if val_items else "min",
        collate=collate_captions,
        card={**model.card(), **dict(card or {})},
    )
