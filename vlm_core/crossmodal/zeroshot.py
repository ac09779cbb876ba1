"""Zero-shot classification: label names and prompt templates in, per-image probabilities out.

    clf = zero_shot_classifier(enc, ["cat", "dog", "car"], templates=("a photo of a {}.",))
    result = clf.classify(images)          # result.probs: (N, 3), rows sum to 1
    result.predicted(), result.top(2)

Each label's class embedding is the mean of its L2-normalised template embeddings, normalised
again (open_clip's :func:`~open_clip.build_zero_shot_classifier`, which this module calls);
probabilities are the softmax of the model's logit scale times the cosine similarities.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from vlm_core.crossmodal.encoders import ClipEncoder
from vlm_core.errors import UsageError
from vlm_core.runtime.policy import run_context
from vlm_core.types import Image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

Template = str | Callable[[str], str]

#: The default prompt: one template, as in CLIP's paper for a generic label set.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


@dataclass(frozen=True)
class ZeroShotResult:
    """Probabilities of each label for each image."""

    labels: tuple[str, ...]
    probs: torch.Tensor  # (N, C) float32 on the CPU; each row sums to 1

    def predicted(self) -> list[str]:
        """The most probable label of each image."""
        return [self.labels[i] for i in self.probs.argmax(dim=1).tolist()]

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable (label, probability) pairs of each image, best first."""
        values, indices = self.probs.topk(min(k, len(self.labels)), dim=1)
        return [
            [(self.labels[i], float(v)) for v, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
        ]


@dataclass(frozen=True)
class ZeroShotClassifier:
    """Class embeddings of ``labels`` in ``encoder``'s space."""

    encoder: ClipEncoder
    labels: tuple[str, ...]
    weights: torch.Tensor  # (C, D) float32 on the CPU, unit rows

    def probabilities(self, image_embeddings: torch.Tensor) -> ZeroShotResult:
        """Label probabilities for embeddings from ``encoder.encode_images`` ((N, D))."""
        emb = image_embeddings.detach().float().cpu()
        if emb.ndim != 2 or emb.shape[1] != self.weights.shape[1]:
            raise UsageError(
                f"image embeddings must be (N, {self.weights.shape[1]}), got {tuple(emb.shape)}"
            )
        logits = self.encoder.logit_scale * nn.functional.normalize(emb, dim=-1) @ self.weights.T
        return ZeroShotResult(self.labels, logits.softmax(dim=-1))

    def classify(
        self, images: Sequence[Image | PILImage] | torch.Tensor, batch_size: int = 64
    ) -> ZeroShotResult:
        """Label probabilities for images (or a preprocessed batch; see
        :meth:`ClipEncoder.encode_images`)."""
        return self.probabilities(self.encoder.encode_images(images, batch_size=batch_size))


def _templates(templates: Sequence[Template]) -> list[Callable[[str], str]]:
    if isinstance(templates, str) or not templates:
        raise UsageError("templates must be a non-empty sequence, e.g. ('a photo of a {}.',)")
    out: list[Callable[[str], str]] = []
    for template in templates:
        if callable(template):
            out.append(template)
            continue
        try:
            filled = template.format("\x00")
        except (IndexError, KeyError, ValueError):
            filled = ""
        if filled.count("\x00") != 1:
            raise UsageError(
                f"template {template!r} must contain '{{}}' once, where the label goes"
            )
        out.append(functools.partial(str.format, template))
    return out


def _labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str) or not labels:
        raise UsageError("labels must be a non-empty sequence of names, e.g. ('cat', 'dog')")
    names = tuple(labels)
    blank = [repr(n) for n in names if not isinstance(n, str) or not n.strip()]
    if blank:
        raise UsageError(f"labels must be non-empty strings, got {', '.join(blank[:3])}")
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise UsageError(f"label '{twice[0]}' is given twice")
    return names


def zero_shot_classifier(
    encoder: ClipEncoder,
    labels: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
) -> ZeroShotClassifier:
    """Class embeddings for ``labels`` from prompt ``templates``.

    Args:
        encoder: from :func:`~vlm_core.crossmodal.load_clip`.
        labels: class names, as they should read in a sentence ("golden retriever").
        templates: format strings with one ``{}`` for the label, or functions of the label;
            open_clip's ``OPENAI_IMAGENET_TEMPLATES`` (80 prompts) work as they are.
        batch_size: texts per forward pass (whole labels: all their templates go together).
    """
    from open_clip import build_zero_shot_classifier

    names = _labels(labels)
    prompts = _templates(templates)
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    with run_context(encoder.policy):
        weights = build_zero_shot_classifier(
            encoder.model,
            encoder.tokenizer,
            names,
            prompts,
            num_classes_per_batch=max(1, batch_size // len(prompts)),
            device=encoder.policy.device,
        )
        weights = nn.functional.normalize(weights.float().T, dim=-1).cpu()  # (C, D)
    return ZeroShotClassifier(encoder, names, weights.clone())


def zero_shot(
    encoder: ClipEncoder,
    images: Sequence[Image | PILImage] | torch.Tensor,
    labels: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 64,
) -> ZeroShotResult:
    """Classify ``images`` among ``labels`` in one call (see :func:`zero_shot_classifier`)."""
    classifier = zero_shot_classifier(encoder, labels, templates)
    return classifier.classify(images, batch_size=batch_size)
