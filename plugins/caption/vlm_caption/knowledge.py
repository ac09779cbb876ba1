"""The support knowledge base of `caption.answer` (a YAML file the operator edits) and what a
customer's message says in its terms.

The file (the bundled one is ``knowledge_base.yaml``, which documents every field) has
``products`` (name → synonyms and the part it can miss), ``colours``, ``problems`` (name →
kind, synonyms, policy, reply template), ``policies`` (name → text) and ``clarify`` (the
clarifying questions). :func:`load_knowledge_base` validates it with pydantic and checks the
cross references (a problem's policy exists, templates use only known fields); a mistake is one
:class:`~vlm_core.errors.InputError` that names the file and the entry.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlm_core.errors import InputError
from vlm_core.tasks import package_file

#: the fields a reply or question template may use
TEMPLATE_FIELDS = frozenset({"product", "colour", "problem", "part", "ordered", "policy"})
CLARIFY_FIELDS = frozenset({"product", "colour", "told", "candidates"})
CLARIFY_KEYS = (
    "unknown_product",
    "unsure_product",
    "unsure_problem",
    "not_seen",
    "no_problem",
    "unfamiliar_photo",
)
#: the question for a photo the familiarity check flags, when a knowledge base has none
UNFAMILIAR_PHOTO = (
    "Thanks for the photo. It does not look like the product photos I can read, so I cannot "
    "tell what is wrong from it. Could you send a photo of the product you received, on its "
    "own and in good light, and tell me what the problem is?"
)
WRONG_ITEM = "wrong item"
MISSING_PART = "missing part"
#: words that introduce what the customer ordered ("I ordered a blue mug")
ORDER_WORDS = ("ordered", "wanted", "instead of", "bought", "asked for", "expected", "paid for")
MAX_BYTES = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Product(_Strict):
    synonyms: tuple[str, ...] = Field(min_length=1)
    part: str = Field(min_length=1)


class Problem(_Strict):
    kind: Literal["seen", "told"] = "seen"
    synonyms: tuple[str, ...] = Field(min_length=1)
    policy: str
    reply: str = Field(min_length=1)


class Clarify(_Strict):
    unknown_product: str
    unsure_product: str
    unsure_problem: str
    not_seen: str
    no_problem: str
    unfamiliar_photo: str = UNFAMILIAR_PHOTO


class KnowledgeBase(_Strict):
    products: dict[str, Product] = Field(min_length=1)
    colours: tuple[str, ...] = Field(min_length=1)
    problems: dict[str, Problem] = Field(min_length=1)
    policies: dict[str, str] = Field(min_length=1)
    clarify: Clarify

    def part(self, product: str) -> str:
        return self.products[product].part

    @property
    def seen_problems(self) -> tuple[str, ...]:
        return tuple(name for name, p in self.problems.items() if p.kind == "seen")


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _check(kb: KnowledgeBase, path: Path) -> None:
    def bad(entry: str, why: str) -> InputError:
        return InputError(f"{path}: {entry}: {why}")

    for name, problem in kb.problems.items():
        if problem.policy not in kb.policies:
            known = ", ".join(kb.policies)
            raise bad(f"problems.{name}.policy", f"unknown policy '{problem.policy}' ({known})")
        unknown = _fields(problem.reply) - TEMPLATE_FIELDS
        if unknown:
            raise bad(
                f"problems.{name}.reply",
                f"unknown field(s) {', '.join(sorted(unknown))} (templates may use "
                f"{', '.join(sorted(TEMPLATE_FIELDS))})",
            )
    if WRONG_ITEM in kb.problems and kb.problems[WRONG_ITEM].kind != "told":
        raise bad(f"problems.{WRONG_ITEM}.kind", "must be 'told' (it is read from the message)")
    for key in CLARIFY_KEYS:
        unknown = _fields(getattr(kb.clarify, key)) - CLARIFY_FIELDS
        if unknown:
            raise bad(
                f"clarify.{key}",
                f"unknown field(s) {', '.join(sorted(unknown))} (questions may use "
                f"{', '.join(sorted(CLARIFY_FIELDS))})",
            )


def default_path() -> Path:
    return package_file("vlm_caption", "knowledge_base.yaml")


def load_knowledge_base(path: str | Path = "") -> KnowledgeBase:
    """The validated knowledge base of ``path`` (empty: the bundled one)."""
    file = Path(path) if path else default_path()
    try:
        stat = file.stat()
    except OSError as exc:
        raise InputError(f"knowledge base {file}: cannot read it ({exc.strerror})") from None
    if not file.is_file():
        raise InputError(f"knowledge base {file}: not a file")
    if stat.st_size > MAX_BYTES:
        raise InputError(f"knowledge base {file}: {stat.st_size} bytes, more than the 1 MiB cap")
    return _load(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> KnowledgeBase:
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"knowledge base {file}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise InputError(f"knowledge base {file}: not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise InputError(f"knowledge base {file}: the top level must be a mapping of sections")
    try:
        kb = KnowledgeBase.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        entry = ".".join(str(p) for p in first["loc"]) or "top level"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InputError(f"knowledge base {file}: {entry}: {first['msg']}{more}") from None
    _check(kb, file)
    return kb


# --- reading a message ------------------------------------------------------------------------


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "


def _find(words: str, phrases: Mapping[str, tuple[str, ...]]) -> list[tuple[int, str]]:
    """(position, name) of each phrase found, longest phrases first, without overlaps."""
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    flat = sorted(
        ((phrase, name) for name, synonyms in phrases.items() for phrase in synonyms),
        key=lambda pn: -len(pn[0]),
    )
    for phrase, name in flat:
        needle = _words(phrase)
        start = words.find(needle)
        while start >= 0:
            end = start + len(needle)
            if not any(a < end and start < b for a, b in taken):
                taken.append((start, end))
                found.append((start, name))
            start = words.find(needle, start + 1)
    return sorted(found)


@dataclass(frozen=True)
class Message:
    """What a customer's message says, in the knowledge base's terms."""

    text: str
    products: tuple[str, ...]  # catalogue products it names, in order
    colours: tuple[str, ...]  # colours it names, in order
    problems: tuple[str, ...]  # knowledge-base problems it describes
    ordered_product: str | None  # what it says was ordered ("I ordered a blue mug")
    ordered_colour: str | None


def read_message(text: str, kb: KnowledgeBase) -> Message:
    """Find the products, colours, problems and the ordered item that ``text`` names."""
    words = _words(text)
    products = _find(words, {name: p.synonyms for name, p in kb.products.items()})
    colours = _find(words, {c: (c,) for c in kb.colours})
    problems = _find(words, {name: p.synonyms for name, p in kb.problems.items()})
    ordered_product = ordered_colour = None
    orders = _find(words, {"order": ORDER_WORDS})
    for at, _ in orders:
        window = (at, at + 40)  # the few words after "ordered"
        after_p = [name for pos, name in products if window[0] < pos <= window[1]]
        after_c = [name for pos, name in colours if window[0] < pos <= window[1]]
        ordered_product = ordered_product or (after_p[0] if after_p else None)
        ordered_colour = ordered_colour or (after_c[0] if after_c else None)
    seen = dict.fromkeys(name for _, name in problems)
    return Message(
        text=text,
        products=tuple(dict.fromkeys(name for _, name in products)),
        colours=tuple(dict.fromkeys(name for _, name in colours)),
        problems=tuple(seen),
        ordered_product=ordered_product,
        ordered_colour=ordered_colour,
    )
