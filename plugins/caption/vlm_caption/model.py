"""The captioner the caption tasks share, and what it recognises in a photo.

:func:`load_captioner` loads trained weights (a `vlm train caption.describe` output, a
checkpoint or a model file; by default the bundled captioner) through the core's one weights
path and model cache (:data:`CAPTIONER` says how the network is built).
:func:`recognise` asks it the three questions it was trained on — the product, the colour and
what is wrong — and scores every candidate answer with the full teacher-forced pass
(:meth:`~vlm_core.crossmodal.Captioner.score`, averaged over the questions' wordings): the
softmax over the candidates, divided by the temperature fitted for each question on held-out
photos (:mod:`vlm_caption.calibration`), is the confidence that `caption.answer` acts on.

Familiarity: :func:`feature_tap` keeps the mean and spread of the image tower's output map
while the task encodes its images anyway (:func:`image_features` is the same features for
``vlm train``'s fitting), and :meth:`Loaded.judge` says which photos look unlike the ones the
captioner was trained on (``ood`` of every result).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from vlm_caption.knowledge import MISSING_PART, KnowledgeBase
from vlm_caption.products import QUESTIONS, UNKNOWN
from vlm_core.crossmodal import Captioner, Memory
from vlm_core.errors import InputError
from vlm_core.familiarity import FeatureTap, Ood
from vlm_core.tasks import RunContext, package_file
from vlm_core.types import Image
from vlm_core.weights import LoadedModel as TrainedModel
from vlm_core.weights import ModelRecipe, load_model

TASK = "caption.describe"
NOTHING = "nothing"
#: the familiarity features: the image tower's output map (what the decoder attends to,
#: before its projection), its mean and its spread over the positions; chosen by measurement
#: (README, "Knowing its limits")
FEATURE_LAYER = "image_tower"
FEATURE_STATS = ("mean", "std")
#: the card entry with the temperature of each recognition question (vlm_caption.calibration)
CALIBRATION_KEY = "recognition_calibration"


def default_weights() -> str:
    return str(package_file("vlm_caption", "weights", "captioner", "model.safetensors"))


@dataclass
class Loaded:
    """A captioner with the sha256 of its weights, and the loaded weights themselves (their
    card, familiarity model and lock)."""

    captioner: Captioner
    sha256: str
    path: str
    trained: TrainedModel | None = None

    def temperature(self, kind: str) -> float:
        """The temperature of recognition question ``kind`` (1.0: not calibrated)."""
        card = self.trained.card if self.trained is not None else {}
        entry = dict(card.get(CALIBRATION_KEY) or {}).get(kind) or {}
        return float(entry.get("temperature", 1.0))

    def judge(self, features: torch.Tensor) -> list[Ood | None]:
        """Whether each row of :func:`feature_tap` features looks unlike the training photos
        (None for each when the weights have no familiarity model)."""
        if self.trained is None:
            return [None] * len(features)
        return self.trained.judge(features)

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
    return Loaded(cast(Captioner, loaded.module), loaded.sha256, str(loaded.path), loaded)


def load_captioner(weights: str = "", device: str = "cpu", ctx: RunContext | None = None) -> Loaded:
    """The captioner of ``weights`` (empty: bundled) on ``device`` through the core's model
    cache; with ``ctx``, on the run's device and recorded in its provenance."""
    return _loaded(load_model(weights, CAPTIONER, device=device, ctx=ctx))


def feature_tap(captioner: Captioner) -> FeatureTap:
    """The tap that keeps each image's familiarity features while the captioner encodes it
    (hold the loaded model's lock around it: the cached module is shared)."""
    return FeatureTap(captioner, FEATURE_LAYER, stats=FEATURE_STATS)


def image_features(model: Captioner, batch: Mapping[str, Any]) -> torch.Tensor:
    """(B, D) familiarity features of a training batch's images: ``TrainSetup.features``,
    the same tap around the same image encoding as a run's."""
    with feature_tap(model) as tap:
        model.encode_images(batch["images"])
    return tap.features()


@dataclass
class Check:
    """The familiarity check of one pass of the image tower (:func:`tapped`)."""

    loaded: Loaded
    tap: FeatureTap | None  # None: the weights have no familiarity model

    def verdicts(self, count: int) -> list[Ood | None]:
        """The verdict of each of the ``count`` images the pass encoded."""
        if self.tap is None:
            return [None] * count
        return self.loaded.judge(self.tap.features())


@contextmanager
def tapped(loaded: Loaded) -> Iterator[Check]:
    """:func:`feature_tap` on the loaded captioner, holding its lock (the cached module is
    shared by concurrent runs): run the task's own image encoding inside, then
    ``check.verdicts(n)``. Weights without a familiarity model are not tapped."""
    if loaded.trained is None or loaded.trained.familiarity is None:
        yield Check(loaded, None)
        return
    with loaded.trained.lock, feature_tap(loaded.captioner) as tap:
        yield Check(loaded, tap)


def encode(loaded: Loaded, images: Sequence[Image]) -> Memory:
    """The memory of ``images``: one pass of the image tower and the decoder's projection of
    it, which the caption's decoding and every recognition question read (:func:`recognise`,
    ``memory=`` of the captioner's decoding methods)."""
    model = loaded.captioner
    pixels = model.pixels(list(images)).to(model.device)
    with torch.inference_mode():
        return model.memory(model.encode_images(pixels))


def encode_judged(loaded: Loaded, images: Sequence[Image]) -> tuple[Memory, list[Ood | None]]:
    """:func:`encode` under :func:`tapped`: the images' memory and each photo's familiarity
    verdict, taken during that one pass of the image tower."""
    with tapped(loaded) as check:
        memory = encode(loaded, images)
    return memory, check.verdicts(len(images))


#: what a caption of a photo the familiarity check flags starts with
UNSURE = "not sure, this photo looks unlike the product photos I know; my best guess: "


def unsure_caption(text: str, verdict: Ood | None) -> str:
    """``text``, marked as a guess when ``verdict`` flags the photo."""
    return f"{UNSURE}{text}" if verdict is not None and verdict["flagged"] else text


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
    loaded: Loaded, pixels: torch.Tensor | None, texts: Sequence[str], question: str | None,
    *, memory: Memory | torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """log p(text | image, question) of every text for every image (its ``pixels``, or the
    ``memory`` :func:`encode` gave): (N, T) float64."""
    model, vocab = loaded.captioner, loaded.captioner.vocab
    sequences = [[*vocab.encode(t), vocab.eos] for t in texts]
    with torch.inference_mode():
        if memory is not None:
            return model.score_candidates(None, sequences, question, memory=memory)
        assert pixels is not None
        return model.score_candidates(pixels.to(model.device), sequences, question)


def answer_logits(
    loaded: Loaded, memory: Memory, kb: KnowledgeBase
) -> dict[str, tuple[torch.Tensor, list[str], list[str]]]:
    """Per question kind: the (N, T) mean log-probability of each candidate answer text over
    the question's wordings (the logits of the recognition, before its temperature), the
    texts, and the value each stands for."""
    out = {}
    for kind, answers in candidate_answers(kb).items():
        usable = _usable(loaded, answers, kind)
        texts = list(usable)
        scores = [score_texts(loaded, None, texts, q, memory=memory) for q in QUESTIONS[kind]]
        out[kind] = (torch.stack(scores).mean(dim=0), texts, [usable[t] for t in texts])
    return out


def recognise(
    loaded: Loaded, images: Sequence[Image], kb: KnowledgeBase,
    memory: Memory | None = None,
) -> list[Recognition]:  # fmt: skip
    """The product, colour and problem of each image (see the module docstring); give the
    images' ``memory`` when :func:`encode` has it already."""
    if memory is None:
        memory = encode(loaded, images)
    per_kind: dict[str, list[dict[str, float]]] = {}
    problem_texts: list[list[tuple[str, float]]] = [[] for _ in images]
    for kind, (logits, texts, values) in answer_logits(loaded, memory, kb).items():
        mean = logits / loaded.temperature(kind)
        per_kind[kind] = [_softmax_by_value(row, values) for row in mean]
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
