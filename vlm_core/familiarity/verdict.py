"""The familiarity verdict a result carries, and the warning line said about it."""

from __future__ import annotations

from typing import TypedDict


class Ood(TypedDict):
    """Whether one input looks unlike the training data: its ``score`` (higher is stranger)
    against the ``threshold`` calibrated so that about 2.5% of held-out in-domain inputs pass
    it; ``flagged`` when it does."""

    flagged: bool
    score: float
    threshold: float


def verdict(score: float, threshold: float) -> Ood:
    return {"flagged": bool(score > threshold), "score": round(float(score), 4),
            "threshold": round(float(threshold), 4)}  # fmt: skip


def ood_warning(name: str, task: str, ood: Ood) -> str:
    """The one line a user is told about a flagged input."""
    return (
        f"{name} looks unlike {task}'s training data (score {ood['score']:.3g} > "
        f"{ood['threshold']:.3g}): treat this answer with caution"
    )


def ood_refusal(name: str, task: str, ood: Ood) -> str:
    """The one line for an input refused under ``--strict``."""
    return (
        f"{name} looks unlike {task}'s training data (score {ood['score']:.3g} > "
        f"{ood['threshold']:.3g}): refused in strict mode"
    )
