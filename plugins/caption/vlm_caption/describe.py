"""`caption.describe`: a caption and tags for each image.

The caption is the captioner's beam search. The tags are zero-shot labels with probabilities:

- by default, the catalogue's products, colours and problems (the knowledge base's), scored
  by the captioner as answers to its questions (:func:`vlm_caption.model.recognise`);
- with ``tags``, the given labels, scored by the captioner as whole captions of the image
  (length-normalised log-likelihood, softmax over the labels) — a generative zero-shot
  classifier that knows only its vocabulary's words;
- with ``clip_model`` and ``clip_weights``, the given labels (default: the catalogue's
  products) by open_clip's zero-shot classifier (prompt ensemble; any vocabulary).

Each batch of images goes through the image tower once: the caption's beam search and every
tagging pass read that one memory (:func:`vlm_caption.model.encode`). The familiarity check
rides on that pass: a photo unlike the captioner's training photos gets ``ood.flagged`` and
its caption is marked as a guess (:func:`vlm_caption.model.unsure_caption`). A CoCa writes
the caption itself: ``ood`` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlm_caption.knowledge import load_knowledge_base
from vlm_caption.model import (
    Loaded,
    Recognition,
    encode,
    encode_judged,
    load_captioner,
    recognise,
    score_texts,
    unsure_caption,
)
from vlm_caption.params import DescribeParams
from vlm_core.crossmodal import Memory
from vlm_core.errors import InputError
from vlm_core.familiarity import Ood
from vlm_core.tasks import RunContext
from vlm_core.types import Caption, Image
from vlm_core.weights import requested


def labels_of(text: str) -> list[str]:
    labels = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if len(labels) == 1:
        raise InputError("give at least two comma-separated tags to choose between")
    return labels


def caption_tags(
    loaded: Loaded, images: Sequence[Image], labels: Sequence[str], memory: Memory | None = None
) -> list[dict[str, float]]:
    """Each label's probability as a caption of each image (words must be in the vocabulary);
    give the images' ``memory`` when :func:`encode` has it already."""
    import torch

    for label in labels:
        known, missing = loaded.known_words(label)
        if not known:
            raise InputError(
                f"tag '{label}': the captioner does not know the word(s) {', '.join(missing)}; "
                "tag with an open_clip model (clip_model, clip_weights) for other words"
            )
    logp = score_texts(loaded, None, labels, None, memory=memory or encode(loaded, images))
    lengths = torch.tensor([len(label.split()) + 1 for label in labels], dtype=torch.float64)
    probs = torch.softmax(logp / lengths, dim=1)
    return [dict(zip(labels, row.tolist(), strict=True)) for row in probs]


def clip_outputs(
    images: Sequence[Image], labels: Sequence[str], params: DescribeParams, device: str,
    max_words: int,
) -> tuple[list[dict[str, float]], list[str] | None, str | None]:  # fmt: skip
    """open_clip zero-shot probabilities of each label; CoCa captions when the model is a
    CoCa (else None); and the weights' sha256."""
    from vlm_core.crossmodal import cached_clip, coca_captions, is_coca, zero_shot_classifier

    with requested("clip_weights", params.clip_weights):
        encoder, release = cached_clip(
            params.clip_model, params.clip_weights, device=device, plugin="caption"
        )
    try:
        result = zero_shot_classifier(encoder, labels).classify(list(images))
        probs = [dict(zip(result.labels, row.tolist(), strict=True)) for row in result.probs]
        texts = coca_captions(encoder, images, max_len=max_words + 1) if is_coca(encoder) else None
        return probs, texts, encoder.weights_sha256
    finally:
        release()


def _captions(
    loaded: Loaded, memory: Memory, params: DescribeParams
) -> tuple[list[str], list[float | None]]:
    """The captioner's captions of the images of ``memory`` and their mean log-probability
    per token."""
    model, max_len = loaded.captioner, params.max_words + 1
    if params.beam == 1:
        decoded = model.greedy(None, max_len=max_len, memory=memory)
    else:
        decoded = model.beam_search(None, beam=params.beam, max_len=max_len, memory=memory)
    scores: list[float | None] = [
        round(float(logp) / (len(ids) + 1), 4)
        for logp, ids in zip(decoded.log_probs, decoded.ids, strict=True)
    ]
    return decoded.texts, scores


def _captioned(loaded: Loaded, images: Sequence[Image], params: DescribeParams
               ) -> tuple[list[str], list[float | None], list[Ood | None]]:  # fmt: skip
    """The captioner's captions, their scores and the photos' familiarity verdicts."""
    memory, verdicts = encode_judged(loaded, images)
    texts, scores = _captions(loaded, memory, params)
    return texts, scores, verdicts


def _merged(seen: Recognition) -> dict[str, float]:
    """Every candidate value of the three recognition questions with its probability."""
    merged: dict[str, float] = {}
    for attr in (seen.product, seen.colour, seen.problem):
        merged.update(attr.candidates)
    return merged


def run(inputs: Sequence[Image], params: DescribeParams, ctx: RunContext) -> list[dict[str, Any]]:
    loaded = load_captioner(params.weights, ctx=ctx)
    if loaded.trained is not None:  # the decoding the weights were evaluated with, unless given
        params = loaded.trained.run_params(params)
    images = list(inputs)
    kb = load_knowledge_base()
    texts: list[str]
    scores: list[float | None]
    verdicts: list[Ood | None]
    if params.clip_model:
        labels = labels_of(params.tags) if params.tags else list(kb.products)
        tags, coca, sha = clip_outputs(images, labels, params, ctx.device, params.max_words)
        if sha:
            ctx.record_weights("open_clip", sha)
        if coca is not None:  # a CoCa captions by itself: the captioner's familiarity says nothing
            texts, scores, verdicts = coca, [None for _ in coca], [None for _ in coca]
        else:
            texts, scores, verdicts = _captioned(loaded, images, params)
    else:
        labels = labels_of(params.tags) if params.tags else []
        memory, verdicts = encode_judged(loaded, images)
        if labels:
            tags = caption_tags(loaded, images, labels, memory)
        else:
            tags = [_merged(seen) for seen in recognise(loaded, images, kb, memory)]
        texts, scores = _captions(loaded, memory, params)
    out = []
    for i, (text, score, image_tags, verdict) in enumerate(
        zip(texts, scores, tags, verdicts, strict=True)
    ):
        ctx.record_ood(i, verdict)
        top = sorted(image_tags.items(), key=lambda kv: -kv[1])[: params.top_k]
        caption = Caption(unsure_caption(text, verdict), score=score,
                          tags={k: round(v, 4) for k, v in top})  # fmt: skip
        out.append({"caption": caption})
    return out
