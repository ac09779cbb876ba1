"""`caption.answer`: a reply to a customer's photo and message.

The photo gives the product, its colour and the problem it shows, each with a confidence
(:func:`vlm_caption.model.recognise`); the message gives the products, colours and problems
the customer names and what they ordered (:func:`vlm_caption.knowledge.read_message`).
:func:`decide` puts the two together, in this order:

0. **an unfamiliar photo** — the familiarity check (taken during the recognition's pass of the
   image tower) flags the photo as unlike the captioner's training photos: ask for a photo of
   the product (whatever the captioner would have read in it, it is not trusted);
1. **the product** — an unknown object, or a product below ``min_confidence``: ask which
   product it is (never guess a product);
2. **a wrong item** — the message names an ordered product or colour that the photo
   confidently contradicts, or says it is the wrong item: the wrong-item policy;
3. **the problem** — the message's problems raise their prior (``MESSAGE_WEIGHT`` times the
   photo's probability, renormalised); the most likely problem above ``min_confidence`` is
   answered with its knowledge-base policy and template — unless the photo shows nothing
   wrong while the message names a problem, or shows another problem than the one named: then
   it asks for a closer photo; below ``min_confidence``, it asks what is wrong.

Every reply names what it saw (colour and product) and carries the evidence: the recognised
values with their probabilities and what the message said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlm_caption.knowledge import (
    MISSING_PART,
    WRONG_ITEM,
    KnowledgeBase,
    Message,
    load_knowledge_base,
    read_message,
)
from vlm_caption.model import (
    NOTHING,
    Loaded,
    Recognition,
    encode_judged,
    load_captioner,
    recognise,
    unsure_caption,
)
from vlm_caption.params import AnswerParams
from vlm_caption.products import UNKNOWN
from vlm_core.crossmodal import Memory
from vlm_core.errors import InputError
from vlm_core.familiarity import Ood
from vlm_core.tasks import RunContext
from vlm_core.types import Caption, Image, Reply

#: how much more likely a problem the customer names is, before the photo is looked at
MESSAGE_WEIGHT = 3.0


@dataclass(frozen=True)
class Decision:
    """What to tell the customer, and why."""

    action: str  # "reply" or "clarify"
    reason: str  # the problem answered, or which clarifying question
    text: str
    confidence: float
    problem: str | None = None  # the knowledge-base problem answered
    policy: str | None = None  # its policy


def _a(words: str) -> str:
    return f"an {words}" if words[:1] in "aeiou" else f"a {words}"


def _fill(template: str, **values: str) -> str:
    return " ".join(template.format(**values).split())


def _problem_probabilities(seen: Recognition, message: Message) -> dict[str, float]:
    probs = dict(seen.problem.candidates)
    named = [p for p in message.problems if p in probs]
    for name in named:
        probs[name] *= MESSAGE_WEIGHT
    total = sum(probs.values())
    return {k: v / total for k, v in probs.items()}


def decide(
    seen: Recognition, message: Message, kb: KnowledgeBase, min_confidence: float,
    unfamiliar: bool = False,
) -> Decision:  # fmt: skip
    """The reply or the clarifying question for one photo and its message (``unfamiliar``:
    the familiarity check flagged the photo)."""
    clarify = kb.clarify
    product, colour = seen.product, seen.colour
    # 0. a photo unlike the training photos: what was read in it is not trusted
    if unfamiliar:
        return Decision("clarify", "unfamiliar_photo", _fill(clarify.unfamiliar_photo), 0.0)
    # 1. the product
    if product.value == UNKNOWN and product.confidence >= min_confidence:
        return Decision("clarify", "unknown_product", _fill(clarify.unknown_product),
                        product.confidence)  # fmt: skip
    if product.value == UNKNOWN or product.confidence < min_confidence:
        ranked = sorted(product.candidates.items(), key=lambda kv: -kv[1])
        names = [name for name, _ in ranked if name != UNKNOWN][:2]
        text = _fill(clarify.unsure_product, candidates=" or ".join(names))
        return Decision("clarify", "unsure_product", text, product.confidence)
    name = product.value
    colour_name = colour.value if colour.confidence >= min_confidence else ""
    values = {"product": name, "colour": colour_name, "part": kb.part(name)}
    # 2. a wrong item
    ordered_product = message.ordered_product
    ordered_colour = message.ordered_colour
    other_product = ordered_product is not None and ordered_product != name
    other_colour = (
        ordered_colour is not None and colour_name != "" and ordered_colour != colour_name
    )
    if WRONG_ITEM in kb.problems and (
        other_product or other_colour or WRONG_ITEM in message.problems
    ):
        if other_product or other_colour:
            ordered = " ".join(w for w in (ordered_colour or "", ordered_product or name) if w)
            ordered = f"the {ordered} you ordered"
        else:
            ordered = "the item you ordered"
        return _reply(kb, WRONG_ITEM, values | {"ordered": ordered}, product.confidence)
    # 3. the problem
    probs = _problem_probabilities(seen, message)
    best = max(probs, key=lambda k: probs[k])
    confidence = min(product.confidence, probs[best])
    told = [p for p in message.problems if p in kb.problems and p != WRONG_ITEM]
    if probs[best] < min_confidence:
        text = _fill(clarify.unsure_problem, product=name, colour=colour_name)
        return Decision("clarify", "unsure_problem", text, probs[best])
    if best == NOTHING:
        if told:
            text = _fill(clarify.not_seen, product=name, colour=colour_name,
                         told=_told(told[0], kb, name))  # fmt: skip
            return Decision("clarify", "not_seen", text, probs[best])
        text = _fill(clarify.no_problem, product=name, colour=colour_name)
        return Decision("clarify", "no_problem", text, probs[best])
    if told and best not in told:
        text = _fill(clarify.not_seen, product=name, colour=colour_name,
                     told=_told(told[0], kb, name))  # fmt: skip
        return Decision("clarify", "not_seen", text, probs[best])
    if best == MISSING_PART and seen.part:
        values["part"] = seen.part if seen.part == kb.part(name) else kb.part(name)
    return _reply(kb, best, values | {"ordered": ""}, confidence)


def _told(problem: str, kb: KnowledgeBase, product: str) -> str:
    if problem == MISSING_PART:
        return f"a missing {kb.part(product)}"
    return _a(problem)


def _reply(kb: KnowledgeBase, problem: str, values: dict[str, str], confidence: float) -> Decision:
    entry = kb.problems[problem]
    policy = kb.policies[entry.policy]
    text = _fill(entry.reply, problem=problem, policy=policy, **values)
    return Decision("reply", problem, text, confidence, problem=problem, policy=entry.policy)


@dataclass(frozen=True)
class Answered:
    """One photo's decision, what was recognised in it, what its message said and its
    familiarity verdict (None: weights without a familiarity model)."""

    decision: Decision
    seen: Recognition
    message: Message
    verdict: Ood | None


def evidence(
    seen: Recognition, message: Message, decision: Decision, verdict: Ood | None = None
) -> dict[str, str]:
    """What the reply rests on, for the operator (the Reply's ``evidence``)."""

    def attr(a: Any) -> str:
        return f"{a.value} ({a.confidence:.2f})"

    out = {
        "product": attr(seen.product),
        "colour": attr(seen.colour),
        "problem": attr(seen.problem) + (f": {seen.part}" if seen.part else ""),
        "message names": ", ".join([*message.products, *message.colours, *message.problems])
        or "nothing the knowledge base knows",
        "decision": f"{decision.action}: {decision.reason}",
    }
    if verdict is not None:
        relation = "unlike" if verdict["flagged"] else "like"
        sign = ">" if verdict["flagged"] else "<="
        out["photo"] = (f"{relation} the captioner's training photos (familiarity score "
                        f"{verdict['score']:.3g} {sign} {verdict['threshold']:.3g})")  # fmt: skip
    if decision.policy:
        out["policy"] = decision.policy
    if message.ordered_product or message.ordered_colour:
        out["ordered"] = " ".join(w for w in (message.ordered_colour, message.ordered_product) if w)
    return out


def answer(
    loaded: Loaded,
    images: Sequence[Image],
    messages: Sequence[str],
    *,
    kb: KnowledgeBase,
    min_confidence: float = 0.6,
    judged: tuple[Memory, list[Ood | None]] | None = None,
) -> list[Answered]:
    """Decide the reply to each (photo, message) pair with the captioner ``loaded``; the
    photos' familiarity is judged during the one pass of the image tower that the recognition
    reads (give that pass, :func:`~vlm_caption.model.encode_judged`, as ``judged`` when the
    caller has it)."""
    if len(images) != len(messages):
        raise InputError(f"give one message per photo: {len(images)} photos, {len(messages)}")
    memory, verdicts = judged or encode_judged(loaded, images)
    seen = recognise(loaded, images, kb, memory)
    out = []
    for recognition, text, verdict in zip(seen, messages, verdicts, strict=True):
        message = read_message(text, kb)
        unfamiliar = verdict is not None and verdict["flagged"]
        decision = decide(recognition, message, kb, min_confidence, unfamiliar)
        out.append(Answered(decision, recognition, message, verdict))
    return out


def run(inputs: Sequence[Image], params: AnswerParams, ctx: RunContext) -> list[dict[str, Any]]:
    kb = load_knowledge_base(params.knowledge_base)
    loaded = load_captioner(params.weights, ctx=ctx)
    judged = encode_judged(loaded, inputs)  # one pass of the image tower for all of it
    decided = answer(
        loaded, inputs, [params.message] * len(inputs), kb=kb,
        min_confidence=params.min_confidence, judged=judged,
    )  # fmt: skip
    captions = loaded.captioner.beam_search(None, beam=3, memory=judged[0])
    out = []
    for i, (done, caption) in enumerate(zip(decided, captions.texts, strict=True)):
        ctx.record_ood(i, done.verdict)
        decision, seen = done.decision, done.seen
        reply = Reply(
            text=decision.text,
            confidence=round(decision.confidence, 4),
            clarifying_question=decision.action == "clarify",
            evidence=evidence(seen, done.message, decision, done.verdict),
        )
        tags = {
            seen.product.value: round(seen.product.confidence, 4),
            seen.colour.value: round(seen.colour.confidence, 4),
            seen.problem.value: round(seen.problem.confidence, 4),
        }
        out.append({"reply": reply, "caption": Caption(unsure_caption(caption, done.verdict),
                                                       tags=tags)})  # fmt: skip
    return out
