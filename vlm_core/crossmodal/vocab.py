"""A word-level vocabulary for the captioner, built from the training captions.

Text is lower-cased and split into words and punctuation marks (``"A red, square."`` ->
``a red , square .``). The first five ids are the special tokens ``<pad>`` (0), ``<bos>`` (1),
``<eos>`` (2), ``<unk>`` (3) and ``<sep>`` (4, between a question and its answer); words follow,
most frequent first. A vocabulary is plain data (:meth:`Vocab.to_dict`), so a checkpoint's
card holds it and rebuilds the model's text side exactly.

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vlm_core.errors import UsageError

PAD, BOS, EOS, UNK, SEP = "<pad>", "<bos>", "<eos>", "<unk>", "<sep>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK, SEP)
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w")
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:])")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of ``text``, each mark a token of its own."""
    return _TOKEN.findall(text.lower())


def caption_words(text: str) -> list[str]:
    """The words of ``text`` without punctuation, lower-cased: how captions are compared by the
    metrics (COCO's evaluation drops punctuation the same way)."""
    return [token for token in tokenize(text) if _WORD.match(token)]


def normalise_caption(text: str) -> str:
    """``text`` as the metrics see it: lower-cased words joined by single spaces."""
    return " ".join(caption_words(text))


class Vocab:
    """Token strings and their ids; the special tokens come first.

    Args:
        tokens: every token in id order, starting with :data:`SPECIALS`.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise UsageError(
                f"a vocabulary must start with the special tokens {', '.join(SPECIALS)}; "
                f"it starts with {', '.join(tokens[: len(SPECIALS)]) or 'nothing'}"
            )
        index: dict[str, int] = {}
        for i, token in enumerate(tokens):
            if not isinstance(token, str) or not token:
                raise UsageError(f"vocabulary entry {i} is not a non-empty string: {token!r}")
            if token in index:
                raise UsageError(
                    f"vocabulary token {token!r} appears twice (ids {index[token]}, {i})"
                )
            index[token] = i
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._index = index
        self.pad, self.bos, self.eos, self.unk, self.sep = range(len(SPECIALS))

    @classmethod
    def build(
        cls, texts: Iterable[str], *, min_count: int = 1, max_size: int | None = None
    ) -> Vocab:
        """The vocabulary of ``texts`` (captions, questions, answers).

        Args:
            texts: the training texts.
            min_count: tokens seen fewer times become ``<unk>``. Default 1 (keep all).
            max_size: at most this many tokens, specials included (the most frequent kept;
                ties broken alphabetically). Default: no limit.
        """
        if min_count < 1:
            raise UsageError(f"min_count must be at least 1, got {min_count}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise UsageError(f"max_size must exceed {len(SPECIALS)} (the special tokens)")
        counts = Counter(token for text in texts for token in tokenize(text))
        for special in SPECIALS:
            counts.pop(special, None)
        words = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        if not words:
            raise UsageError("cannot build a vocabulary: the texts hold no words")
        return cls([*SPECIALS, *words])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocab:
        """The vocabulary :meth:`to_dict` wrote (e.g. from a checkpoint's card)."""
        tokens = data.get("tokens") if isinstance(data, Mapping) else None
        if not isinstance(tokens, list):
            raise UsageError("a vocabulary needs a 'tokens' list (as Vocab.to_dict writes it)")
        return cls(tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``{"kind": "words", "tokens": [...]}``."""
        return {"kind": "words", "tokens": list(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.tokens == self.tokens

    def __hash__(self) -> int:
        return hash(self.tokens)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def id(self, token: str) -> int:
        """The id of ``token`` (``<unk>``'s when unknown)."""
        return self._index.get(token, self.unk)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without ``<bos>``/``<eos>``."""
        return [self.id(token) for token in tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at ``<eos>``, skips ``<pad>``/``<bos>``/``<sep>``, writes
        punctuation against the word before it."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i in (self.pad, self.bos, self.sep):
                continue
            words.append(self.tokens[i] if 0 <= i < len(self.tokens) else UNK)
        return _NO_SPACE_BEFORE.sub(r"\1", " ".join(words))

    def prefix(self, question: str | None, max_positions: int) -> list[int]:
        """The decoder's prefix: ``<bos>``, or ``<bos> question <sep>`` for a question (whose
        tokens are cut to half of ``max_positions`` at most, leaving room for the answer)."""
        if question is None:
            return [self.bos]
        words = self.encode(question)[: max(max_positions // 2 - 2, 0)]
        return [self.bos, *words, self.sep]

    def sequence(
        self, caption: str, question: str | None, max_positions: int
    ) -> tuple[list[int], int]:
        """``(ids, prefix_length)`` of one training sequence: the prefix, the caption (cut so
        that the whole fits ``max_positions``) and ``<eos>``."""
        prefix = self.prefix(question, max_positions)
        room = max_positions - len(prefix) - 1
        return [*prefix, *self.encode(caption)[:room], self.eos], len(prefix)
