"""Support cases: generated (photo, customer message) pairs with the answer a support agent
would give — the held-out data `caption.answer` is measured on (tests and
``benchmarks/evaluate.py``).

Three sets, each reproducible by seed (use a seed the captioner was not trained on):

- :func:`answerable_cases` — a damaged product and a message that names the problem (in
  varied wording, with or without the product's name) or only says something is wrong; or an
  intact product and a message saying it is the wrong item (another product or colour was
  ordered). Expected: a reply with the right problem and policy.
- :func:`unknown_cases` — an object that is not in the catalogue, with a complaint. Expected:
  a clarifying question.
- :func:`unclear_cases` — the photo cannot settle it: the message names a problem the photo
  does not show (an intact product), or the photo is too dark and blurred to see the damage.
  Expected: a clarifying question, or the right reply — never a wrong reply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlm_caption.products import COLOURS, PRODUCTS, UNKNOWN_OBJECTS, Photo, render_photo

MESSAGES: dict[str, tuple[str, ...]] = {
    "crack": (
        "my {p} arrived cracked",
        "hi, there is a crack in the {p} i received",
        "the {p} came broken, can you help?",
        "it arrived with a crack in it",
        "hello, my new {p} has a crack down the side",
    ),
    "stain": (
        "the {p} has a stain on it",
        "my {p} arrived dirty with marks on it",
        "there is a stain on this, not happy",
        "hi, it came stained",
        "why is my {p} stained?",
    ),
    "dent": (
        "the {p} is dented",
        "my {p} arrived with a dent",
        "it came bent and dented",
        "there's a dent in the side of it",
        "hi, the {p} got dented in delivery",
    ),
    "missing": (
        "my {p} came without its {part}",
        "the {part} is missing",
        "there is no {part} on my {p}",
        "it arrived incomplete, a piece is missing",
        "hello, the {part} of the {p} is missing",
    ),
    "vague": (
        "please help with my order",
        "something is wrong with this, see the photo",
        "hi, look at what arrived. what can you do?",
        "not happy with this one",
    ),
    "wrong product": (
        "i ordered a {other} but got this",
        "this is not what i ordered, i wanted a {other}",
        "wrong item! i ordered a {c2} {other}",
    ),
    "wrong colour": (
        "i ordered a {c2} {p} but this one is {c}",
        "wrong colour, i wanted a {c2} one",
        "i bought a {c2} {p} and got this {c} one instead",
    ),
}
PROBLEM_OF = {"crack": "crack", "stain": "stain", "dent": "dent", "missing": "missing part"}
POLICY_OF = {
    "crack": "replacement",
    "stain": "refund_or_cleaning",
    "dent": "partial_refund",
    "missing part": "send_part",
    "wrong item": "exchange",
}


@dataclass(frozen=True)
class Case:
    """One photo and message, and what a correct answer does."""

    photo: Photo
    message: str
    expect: str  # "reply" or "clarify"
    problem: str | None  # the knowledge-base problem a correct reply names
    policy: str | None
    kind: str  # what the case tests


def _message(kind: str, photo: Photo, rng: np.random.Generator) -> str:
    template = str(rng.choice(MESSAGES[kind]))
    other = str(rng.choice([p for p in PRODUCTS if p != photo.product]))
    c2 = str(rng.choice([c for c in COLOURS if c != photo.colour]))
    part = photo.part or ""
    return template.format(p=photo.product, part=part, other=other, c=photo.colour, c2=c2)


def answerable_cases(n: int = 50, size: int = 96, seed: int = 1) -> list[Case]:
    """``n`` cases a support agent answers from the photo and message (see the module)."""
    rng = np.random.default_rng(seed)
    cases = []
    kinds = ("crack", "stain", "dent", "missing", "wrong product", "wrong colour")
    for i in range(n):
        kind = kinds[i % len(kinds)]
        photo_seed = 900_000_000 + seed * 10_000 + i
        if kind.startswith("wrong"):
            photo = render_photo(size, photo_seed, product=str(rng.choice(PRODUCTS)), defect="none")
            problem = "wrong item"
            message = _message(kind, photo, rng)
        else:
            photo = render_photo(size, photo_seed, product=str(rng.choice(PRODUCTS)), defect=kind)
            problem = PROBLEM_OF[kind]
            message = _message("vague" if rng.random() < 0.2 else kind, photo, rng)
        cases.append(Case(photo, message, "reply", problem, POLICY_OF[problem], kind))
    return cases


def unknown_cases(n: int = 20, size: int = 96, seed: int = 1) -> list[Case]:
    """``n`` photos of objects outside the catalogue, with a complaint."""
    rng = np.random.default_rng(seed + 7)
    cases = []
    for i in range(n):
        photo = render_photo(size, 910_000_000 + seed * 10_000 + i,
                             product=UNKNOWN_OBJECTS[i % len(UNKNOWN_OBJECTS)])  # fmt: skip
        kind = str(rng.choice(["crack", "dent", "vague"]))
        message = str(rng.choice(MESSAGES[kind])).format(p="item", part="part")
        cases.append(Case(photo, message, "clarify", None, None, "unknown product"))
    return cases


def _degrade(photo: Photo, rng: np.random.Generator) -> Photo:
    """The photo too dark and blurred to see small damage."""
    from PIL import Image, ImageFilter

    img = Image.fromarray(photo.pixels).filter(ImageFilter.GaussianBlur(photo.pixels.shape[0] / 24))
    dark = np.asarray(img, np.float32) * rng.uniform(0.25, 0.35)
    pixels = np.clip(dark + rng.normal(0, 6, dark.shape), 0, 255).astype(np.uint8)
    return Photo(pixels, photo.product, photo.colour, photo.defect, photo.seed)


def unclear_cases(n: int = 20, size: int = 96, seed: int = 1) -> list[Case]:
    """``n`` cases the photo cannot settle: half name a problem an intact product does not
    show; half are dark, blurred photos of damage with a vague message."""
    rng = np.random.default_rng(seed + 13)
    cases = []
    for i in range(n):
        photo_seed = 920_000_000 + seed * 10_000 + i
        product = str(rng.choice(PRODUCTS))
        if i % 2 == 0:
            photo = render_photo(size, photo_seed, product=product, defect="none")
            kind = str(rng.choice(["crack", "stain", "dent"]))
            message = _message(kind, photo, rng)
            cases.append(Case(photo, message, "clarify", None, None, "problem not in photo"))
        else:
            defect = str(rng.choice(["crack", "stain", "dent"]))
            photo = _degrade(render_photo(size, photo_seed, product=product, defect=defect), rng)
            message = _message("vague", photo, rng)
            problem = PROBLEM_OF[defect]
            cases.append(
                Case(photo, message, "clarify", problem, POLICY_OF[problem], "dark blurred photo")
            )
    return cases
