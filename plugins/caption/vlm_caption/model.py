"""The captioner the caption tasks share, and what it recognises in a photo.

:func:`load_captioner` loads trained weights (a `vlm train caption.describe` output, a
checkpoint or a model file; by default the bundled captioner) through the core's one weights
path and model cache (:data:`CAPTIONER` says how the network is built).
:func:`recognise` asks it the three questions it was trained on — the product, the colour and
what is wrong — and scores every candidate answer with the full teacher-forced pass
(:meth:`~vlm_core.crossmodal.Captioner.score`, averaged over the questions' wordings): the
softmax over the candidates is the confidence that `caption.answer` acts on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from vlm_caption.knowledge import MISSING_PART, KnowledgeBase
from vlm_caption.products import QUESTIONS, UNKNOWN
from vlm_core.crossmodal import Captioner
from vlm_core.errors import InputError
from vlm_core.tasks import RunContext, package_file
from vlm_core.types import Image
from vlm_core.weights import LoadedModel as TrainedModel
from vlm_core.weights import ModelRecipe, load_model

TASK = "caption.describe"
NOTHING = "nothing"


def default_weights() -> str:
    return str(package_file("vlm_caption", "weights", "captioner", "model.safetensors"))


@dataclass
class Loaded:
    """A captioner with the sha256 of its weights."""

    captioner: Captioner
    sha256: str
    path: str

    def known_words(self, text: str) -> tuple[bool, list[str]]:
        """Whether every word of ``text`` is in the vocabulary, and the ones that are not."""
        vocab = self.captioner.vocab
        missing = [w for w in text.lower().split() if vocab.id(w) == vocab.unk]
        return not missing, missing


def _captioner(card: Mapping[str, Any]) -> Captioner:
    return Captioner.from_card(card, plugin="caption")


#: The captioner of the three caption tasks: built from its card's architecture and
#: vocabulary; by default the bundled one.
CAPTIONER = ModelRecipe(
    task=TASK,
    name="captioner",
    build=_captioner,
    default=default_weights,
    needs=("architecture", "vocab"),
)


def _loaded(loaded: TrainedModel) -> Loaded:
    return Loaded(cast(Captioner, loaded.module), loaded.sha256, str(loaded.path))


def load_captioner(weights: str = "", device: str = "cpu", ctx: RunContext | None = None) -> Loaded:
    """The captioner of ``weights`` (empty: bundled) on ``device`` through the core's model
    cache; with ``ctx``, on the run's device and recorded in its provenance."""
    return _loaded(load_model(weights, CAPTIONER, device=device, ctx=ctx))


@dataclass(frozen=True)
class Attribute:
    """One recognised attribute: the most likely value, its probability, every candidate's."""

    value: str
    confidence: float
    candidates: Mapping[str, float] = field(default_factory=dict)

    def runner_up(self) -> tuple[str, float]:
        ranked = sorted(self.candidates.items(), key=lambda kv: -kv[1])
        return ranked[1] if len(ranked) > 1 else ("", 0.0)


@dataclass(frozen=True)
class Recognition:
    """What the captioner sees in one photo."""

    product: Attribute  # a catalogue product or "unknown"
    colour: Attribute
    problem: Attribute  # "nothing", a seen problem of the knowledge base ("missing part", ...)
    part: str | None  # the missing part it names, for "missing part"


def candidate_answers(kb: KnowledgeBase) -> dict[str, dict[str, str]]:
    """Per question kind: candidate answer text → the value it stands for."""
    problems: dict[str, str] = {NOTHING: NOTHING}
    for name in kb.seen_problems:
        if name == MISSING_PART:
            for part in sorted({p.part for p in kb.products.values()}):
                problems[f"missing {part}"] = MISSING_PART
        else:
            problems[name] = name
    return {
        "product": {name: name for name in [*kb.products, UNKNOWN]},
        "colour": {c: c for c in kb.colours},
        "problem": problems,
    }


def _usable(loaded: Loaded, answers: Mapping[str, str], kind: str) -> dict[str, str]:
    """The candidates the captioner can say (every word in its vocabulary)."""
    usable = {text: value for text, value in answers.items() if loaded.known_words(text)[0]}
    if not usable:
        raise InputError(
            f"the captioner ({loaded.path}) knows none of the knowledge base's {kind} answers "
            f"({', '.join(answers)}); train it on data that names them"
        )
    return usable


def _softmax_by_value(logp: torch.Tensor, values: Sequence[str]) -> dict[str, float]:
    """Probabilities of the values (candidates that stand for one value add up)."""
    probs = torch.softmax(logp.double(), dim=0).tolist()
    out: dict[str, float] = {}
    for value, p in zip(values, probs, strict=True):
        out[value] = out.get(value, 0.0) + p
    return out


def score_texts(
    loaded: Loaded, pixels: torch.Tensor, texts: Sequence[str], question: str | None
) -> torch.Tensor:
    """log p(text | image, question) of every text for every image: (N, T) float64."""
    model, vocab = loaded.captioner, loaded.captioner.vocab
    sequences = [[*vocab.encode(t), vocab.eos] for t in texts]
    with torch.inference_mode():
        return model.score_candidates(pixels.to(model.device), sequences, question)


def recognise(loaded: Loaded, images: Sequence[Image], kb: KnowledgeBase) -> list[Recognition]:
    """The product, colour and problem of each image (see the module docstring)."""
    pixels = loaded.captioner.pixels(list(images))
    per_kind: dict[str, list[dict[str, float]]] = {}
    problem_texts: list[list[tuple[str, float]]] = [[] for _ in images]
    for kind, answers in candidate_answers(kb).items():
        usable = _usable(loaded, answers, kind)
        texts = list(usable)
        scores = [score_texts(loaded, pixels, texts, q) for q in QUESTIONS[kind]]
        mean = torch.stack(scores).mean(dim=0)  # over the questions' wordings
        per_kind[kind] = [_softmax_by_value(row, [usable[t] for t in texts]) for row in mean]
        if kind == "problem":
            for i, row in enumerate(mean):
                best = torch.softmax(row, 0)
                problem_texts[i] = [(t, float(p)) for t, p in zip(texts, best, strict=True)]
    out = []
    for i in range(len(images)):
        attrs = {}
        for kind, rows in per_kind.items():
            probs = rows[i]
            value = max(probs, key=lambda v: probs[v])
            attrs[kind] = Attribute(value, probs[value], probs)
        part = None
        if attrs["problem"].value == MISSING_PART:
            product = attrs["product"].value
            part = kb.part(product) if product in kb.products else None
            if part is None:  # the part the captioner says is missing
                said = max((tp for tp in problem_texts[i] if tp[0].startswith("missing ")),
                           key=lambda tp: tp[1])  # fmt: skip
                part = said[0].removeprefix("missing ")
        out.append(Recognition(attrs["product"], attrs["colour"], attrs["problem"], part))
    return out
