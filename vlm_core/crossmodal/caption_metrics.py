"""Caption metrics: BLEU-1...4, ROUGE-L and CIDEr-D as torchmetrics metrics.

:class:`CaptionMetrics` is one collection of them for the trainer's validation hook (the
class itself is the factory a ``TrainSetup`` takes). ``update(predictions, references)`` takes
the generated captions (one string per image) and each image's reference captions (a list of
strings per image); both are normalised first
(:func:`~vlm_core.crossmodal.vocab.normalise_caption`: lower-cased words, punctuation dropped,
as COCO's evaluation tokenises them). Then

- ``bleu1`` ... ``bleu4``: torchmetrics' corpus BLEU (``BLEUScore(n_gram=n)``: clipped n-gram
  precisions of orders 1..n, geometric mean, brevity penalty), in [0, 1];
- ``rougeL``: torchmetrics' ROUGE-L F-measure (``ROUGEScore(rouge_keys="rougeL")``, longest
  common subsequence, best reference per image, mean over images), in [0, 1]; it needs no
  nltk without stemming;
- ``cider``: :class:`CIDErD`, written here because torchmetrics has no CIDEr.

Every state is a tensor or a list of tensors, so under ``torchrun`` the trainer's validation
sums or gathers them over processes and the figures are those of the whole split.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.text import BLEUScore, ROUGEScore
from torchmetrics.utilities import dim_zero_cat

from vlm_core.crossmodal.vocab import normalise_caption
from vlm_core.errors import UsageError

__all__ = ["CIDErD", "CaptionMetrics", "RougeL", "cider_d"]

NGram = tuple[str, ...]


def _check_pairs(preds: Sequence[str], target: Sequence[Sequence[str]]) -> None:
    if isinstance(preds, str) or len(preds) != len(target):
        raise UsageError(
            f"caption metrics take a list of predictions and one list of references per "
            f"prediction; got {1 if isinstance(preds, str) else len(preds)} prediction(s) and "
            f"{len(target)} reference list(s)"
        )
    for i, refs in enumerate(target):
        if isinstance(refs, str) or not refs:
            raise UsageError(f"prediction {i} needs a non-empty list of reference captions")


def _ngrams(words: Sequence[str], n: int) -> Counter[NGram]:
    counts: Counter[NGram] = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def cider_d(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    n: int = 4,
    sigma: float = 6.0,
) -> list[float]:
    """CIDEr-D of each candidate against its references (Vedantam et al. 2015), as the COCO
    caption evaluation (pycocoevalcap's ``CiderScorer``) computes it.

    Captions are split on whitespace (normalise them first). For each order k = 1..n, a
    caption is a vector of TF-IDF weights of its k-grams: term frequency times
    ``log(N) - log(max(1, df))``, where N is the number of candidates evaluated together and df
    the number of them whose references contain the k-gram. The candidate's vector is compared
    with each reference's by a clipped cosine — sum of ``min(c, r) * r`` over k-grams divided by
    both norms — times the Gaussian length penalty ``exp(-(l_c - l_r)^2 / (2 sigma^2))``. The
    score is ``10 * mean over k * mean over references``. As in pycocoevalcap, the lengths
    ``l`` are the captions' bigram counts (word counts minus one), and the IDF makes the score
    of a single candidate 0 (``log(1) = 0``): the score is meaningful over a set.

    Returns:
        one score per candidate; the corpus CIDEr-D is their mean.
    """
    _check_pairs(candidates, references)
    cooked = [
        (_ngrams(c.split(), n), [_ngrams(r.split(), n) for r in refs])
        for c, refs in zip(candidates, references, strict=True)
    ]
    doc_freq: Counter[NGram] = Counter()
    for _, refs_counts in cooked:
        doc_freq.update({gram for counts in refs_counts for gram in counts})
    log_n = math.log(float(len(cooked))) if cooked else 0.0

    def vector(counts: Counter[NGram]) -> tuple[list[dict[NGram, float]], list[float], int]:
        vec: list[dict[NGram, float]] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = tf * (log_n - math.log(max(1.0, doc_freq[gram])))
            vec[k][gram] = weight
            norm[k] += weight * weight
            if k == 1:  # pycocoevalcap's length: the number of bigrams
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    scores = []
    for cand_counts, refs_counts in cooked:
        vec, norm, length = vector(cand_counts)
        total = 0.0
        for ref_counts in refs_counts:
            ref_vec, ref_norm, ref_length = vector(ref_counts)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * sigma**2))
            for k in range(n):
                dot = sum(min(w, ref_vec[k].get(g, 0.0)) * ref_vec[k].get(g, 0.0)
                          for g, w in vec[k].items())  # fmt: skip
                if norm[k] != 0 and ref_norm[k] != 0:
                    dot /= norm[k] * ref_norm[k]
                total += dot * penalty
        scores.append(10.0 * total / n / len(refs_counts))
    return scores


def _encode(text: str) -> list[int]:
    return [len(text), *(ord(ch) for ch in text)]


class CIDErD(Metric):
    """Corpus CIDEr-D (see :func:`cider_d`) as a torchmetrics metric: the mean over images.

    The document frequencies come from the references of every image evaluated together, so
    the state keeps the captions themselves (as code points in one int64 tensor per batch,
    concatenated across processes) and the score is computed once, in ``compute``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0

    records: list[torch.Tensor]

    def __init__(self, n: int = 4, sigma: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n < 1 or sigma <= 0:
            raise UsageError(f"CIDEr-D needs n >= 1 and sigma > 0, got n={n}, sigma={sigma}")
        self.n, self.sigma = n, sigma
        self.add_state("records", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[str], target: Sequence[Sequence[str]]) -> None:
        """``preds``: one (normalised) caption per image; ``target``: its references."""
        _check_pairs(preds, target)
        flat: list[int] = []
        for pred, refs in zip(preds, target, strict=True):
            flat.append(len(refs))
            flat += _encode(pred)
            for ref in refs:
                flat += _encode(ref)
        self.records.append(torch.tensor(flat, dtype=torch.int64, device=self.device))

    def _decoded(self) -> Iterator[tuple[str, list[str]]]:
        if not self.records:
            return
        stream = dim_zero_cat(self.records).tolist()
        i = 0

        def text() -> str:
            nonlocal i
            length = stream[i]
            out = "".join(map(chr, stream[i + 1 : i + 1 + length]))
            i += 1 + length
            return out

        while i < len(stream):
            count = stream[i]
            i += 1
            pred = text()
            yield pred, [text() for _ in range(count)]

    def compute(self) -> torch.Tensor:
        pairs = list(self._decoded())
        if not pairs:
            return torch.tensor(0.0)
        preds, refs = zip(*pairs, strict=True)
        scores = cider_d(preds, refs, n=self.n, sigma=self.sigma)
        return torch.tensor(sum(scores) / len(scores), dtype=torch.float32)


class RougeL(ROUGEScore):
    """torchmetrics' ROUGE-L, reduced to its F-measure (one scalar)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(rouge_keys="rougeL", **kwargs)

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        return super().compute()["rougeL_fmeasure"]


def _normalised(
    preds: Sequence[str], target: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    _check_pairs(preds, target)
    return [normalise_caption(p) for p in preds], [
        [normalise_caption(r) for r in refs] for refs in target
    ]


class CaptionMetrics(MetricCollection):
    """BLEU-1..4, ROUGE-L and CIDEr-D of generated captions against references; captions are
    normalised (lower-cased words, no punctuation) before every metric sees them."""

    def __init__(self, *, bleu_orders: Sequence[int] = (1, 2, 3, 4)) -> None:
        metrics: dict[str, Metric] = {f"bleu{n}": BLEUScore(n_gram=n) for n in bleu_orders}
        metrics["rougeL"] = RougeL()
        metrics["cider"] = CIDErD()
        super().__init__(metrics, compute_groups=False)  # type: ignore[arg-type]

    def update(self, preds: Sequence[str], target: Sequence[Sequence[str]]) -> None:  # type: ignore[override]
        super().update(*_normalised(preds, target))

    def forward(self, preds: Sequence[str], target: Sequence[Sequence[str]]) -> dict[str, Any]:
        return super().forward(*_normalised(preds, target))
