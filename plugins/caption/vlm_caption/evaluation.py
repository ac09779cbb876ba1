"""The measurements of the caption plugin, shared by its tests and ``benchmarks/evaluate.py``.

- :func:`caption_scores` — BLEU-1..4, ROUGE-L and CIDEr-D of the captioner's captions of
  held-out generated photos against their five references, and the product, colour and defect
  accuracy of those captions (read back from their words) and of the question answering
  (:func:`vlm_caption.model.recognise`);
- :func:`support_scores` — `caption.answer`'s decisions on the support cases of
  :mod:`vlm_caption.cases`: how often the reply names the right problem and policy, how often
  unknown products and unclear cases get a clarifying question, and how many replies are
  confidently wrong; with ``shift``, on the same cases with their photos under a named shift
  of :mod:`vlm_caption.shifts` (``benchmarks/shift_support.py``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlm_caption.answer import answer
from vlm_caption.cases import Case, answerable_cases, unclear_cases, unknown_cases
from vlm_caption.knowledge import KnowledgeBase
from vlm_caption.model import Loaded, recognise
from vlm_caption.products import COLOURS, PARTS, PRODUCTS, UNKNOWN, Photo, captions, render_photo
from vlm_core.types import Image

DEFECT_WORDS = {
    "crack": ("crack", "cracked"),
    "stain": ("stain", "stained"),
    "dent": ("dent", "dented"),
    "missing": ("missing", "without", "no"),
}


def read_caption(text: str) -> dict[str, str]:
    """The product, colour and defect a caption names (``?`` where it names none)."""
    words = text.lower().split()
    product = next((w for w in words if w in PRODUCTS), None)
    if product is None:
        product = UNKNOWN if ("unknown" in words or "object" in words or "item" in words) else "?"
    colour = next((w for w in words if w in COLOURS), "?")
    defect = "none"
    for name, keys in DEFECT_WORDS.items():
        if name == "missing":
            if any(part in words for part in PARTS.values()) and any(k in words for k in keys):
                defect = name
        elif any(k in words for k in keys):
            defect = name
    return {"product": product, "colour": colour, "defect": defect}


def held_out_photos(n: int, size: int = 96, seed: int = 1) -> list[Photo]:
    """Photo ``i`` of the data set of ``seed`` (as ``write_dataset`` draws them)."""
    return [render_photo(size, seed * 1_000_003 + i) for i in range(n)]


def caption_scores(
    loaded: Loaded, kb: KnowledgeBase, *, n: int = 300, seed: int = 1, beam: int = 3,
    batch: int = 50,
) -> dict[str, Any]:  # fmt: skip
    """Caption metrics and attribute accuracies on ``n`` held-out photos (data seed ``seed``)."""
    from vlm_core.crossmodal import CaptionMetrics

    photos = held_out_photos(n, loaded.captioner.arch.image_size, seed)
    metrics = CaptionMetrics()
    texts: list[str] = []
    seen = []
    for start in range(0, n, batch):
        chunk = photos[start : start + batch]
        images = [Image(p.pixels) for p in chunk]
        decoded = (
            loaded.captioner.greedy(images)
            if beam == 1
            else loaded.captioner.beam_search(images, beam=beam)
        )
        metrics.update(decoded.texts, [captions(p) for p in chunk])
        texts.extend(decoded.texts)
        seen.extend(recognise(loaded, images, kb))
    values: dict[str, Any] = {k: round(float(v), 4) for k, v in metrics.compute().items()}
    read = [read_caption(t) for t in texts]
    truth = [{"product": p.label, "colour": p.colour, "defect": p.defect} for p in photos]
    for key in ("product", "colour", "defect"):
        values[f"caption_{key}_acc"] = round(
            float(np.mean([r[key] == t[key] for r, t in zip(read, truth, strict=True)])), 4
        )
    problem_of = {"none": "nothing", "crack": "crack", "stain": "stain", "dent": "dent",
                  "missing": "missing part"}  # fmt: skip
    qa = {
        "product": [s.product.value == t["product"] for s, t in zip(seen, truth, strict=True)],
        "colour": [s.colour.value == t["colour"] for s, t in zip(seen, truth, strict=True)],
        "defect": [
            s.problem.value == problem_of[t["defect"]] for s, t in zip(seen, truth, strict=True)
        ],
    }
    for key, hits in qa.items():
        values[f"qa_{key}_acc"] = round(float(np.mean(hits)), 4)
    values["images"] = n
    values["examples"] = [
        {"caption": text, "truth": t} for text, t in list(zip(texts, truth, strict=True))[:8]
    ]
    return values


def _judge(cases: Sequence[Case], decided: Sequence[Any]) -> dict[str, Any]:
    right = clarified = wrong = 0
    failures = []
    reasons: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    right_kinds: Counter[str] = Counter()
    for case, done in zip(cases, decided, strict=True):
        decision = done.decision
        kinds[case.kind] += 1
        if decision.action == "clarify":
            clarified += 1
            reasons[decision.reason] += 1
            ok = case.expect == "clarify"
        else:
            ok = decision.problem == case.problem and decision.policy == case.policy
            right += ok
            wrong += not ok
            right_kinds[case.kind] += ok
        if not ok:
            failures.append(
                {
                    "kind": case.kind,
                    "message": case.message,
                    "truth": case.photo.problem,
                    "product": case.photo.product,
                    "decision": f"{decision.action}: {decision.reason}",
                    "text": decision.text,
                }
            )
    n = len(cases)
    return {
        "cases": n,
        "right_reply_rate": round(right / n, 4),
        "clarify_rate": round(clarified / n, 4),
        "wrong_replies": wrong,
        # which clarifying questions were asked (``unfamiliar_photo``: the familiarity check)
        "clarify_reasons": dict(sorted(reasons.items())),
        "right_by_kind": {k: f"{right_kinds[k]}/{kinds[k]}" for k in sorted(kinds)},
        "failures": failures,
    }


def support_scores(
    loaded: Loaded, kb: KnowledgeBase, *, min_confidence: float = 0.6, seed: int = 1,
    n: int = 50, n_hard: int = 20, shift: str = "none", size: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``caption.answer`` on the three case sets of :mod:`vlm_caption.cases` (``n_hard=0``:
    the answerable ones only), their photos of ``size`` px (default: the captioner's input
    side) under ``shift`` (:data:`vlm_caption.shifts.SHIFTS`)."""
    from vlm_caption.shift_data import shifted_photo

    out = {}
    size = size or loaded.captioner.arch.image_size
    sets = [("answerable", answerable_cases(n, size, seed=seed))]
    if n_hard:
        sets += [
            ("unknown_product", unknown_cases(n_hard, size, seed=seed)),
            ("unclear", unclear_cases(n_hard, size, seed=seed)),
        ]
    for name, cases in sets:
        if shift != "none":
            cases = [dataclasses.replace(c, photo=shifted_photo(c.photo, shift)) for c in cases]
        images = [Image(c.photo.pixels) for c in cases]
        decided = answer(loaded, images, [c.message for c in cases], kb=kb,
                         min_confidence=min_confidence)  # fmt: skip
        out[name] = _judge(cases, decided)
    return out
