"""What the dashboard says about a result's familiarity verdict (its ``ood``,
:mod:`vlm_core.familiarity`): whether the input looks unlike what the task's network was
trained on.

* flagged: a warning box at the top of the result, before its outputs, in the CLI's words;
* familiar: a small caption with the score and the threshold it stayed under;
* no verdict for an input: a small caption saying the weights carry no familiarity model, so
  the answer could not be checked (a task without input files gets nothing).

The Run page shows them for the results it draws, the History page for the stored results and
the run's flagged inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from vlm_core.familiarity import Ood, ood_warning
from vlm_core.familiarity.verdict import ood_refusal

#: the Run page's strict switch, and what it does
STRICT_LABEL = "Refuse inputs unlike the training data"
STRICT_HELP = (
    "Leave out every input that looks unlike what the task's model was trained on, and say "
    "so, instead of answering it with a warning (the CLI's `vlm run --strict`). Inputs of "
    "weights without a familiarity model are answered."
)
UNCHECKED = (
    "Not checked for familiarity: these weights carry no familiarity model, so whether this "
    "input is like their training data is unknown."
)


def _verdict(ood: Mapping[str, Any]) -> Ood:
    return {"flagged": bool(ood["flagged"]), "score": float(ood["score"]),
            "threshold": float(ood["threshold"])}  # fmt: skip


def familiarity_note(name: str, task: str, ood: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(level, text)`` for one input's verdict: ``warning`` (flagged), ``familiar`` or
    ``unchecked``."""
    if ood is None:
        return "unchecked", UNCHECKED
    verdict = _verdict(ood)
    if verdict["flagged"]:
        return "warning", ood_warning(name, task, verdict)
    return "familiar", (
        f"Familiar input: score {verdict['score']:.3g} ≤ threshold {verdict['threshold']:.3g} "
        "of the training data."
    )


def show_familiarity(
    name: str, task: str, ood: Mapping[str, Any] | None, *, has_input: bool
) -> None:
    """The note for one result whose input is ``name``; nothing for a task without inputs."""
    if not has_input and ood is None:
        return
    level, text = familiarity_note(name, task, ood)
    if level == "warning":
        st.warning(f"**Unlike the training data.** {text}.", icon="⚠️")
    else:
        st.caption(text)


def show_refused(refused: Sequence[Any], task: str) -> None:
    """One error line per input refused in strict mode (``RunOutcome.refused``)."""
    for refusal in refused:
        name = Path(refusal.input).name
        st.error(ood_refusal(name, task, _verdict(refusal.ood)), icon="🚫")


def flagged_inputs(provenance: Mapping[str, Any]) -> list[str]:
    """The file names of a stored run's answered inputs that were flagged (its provenance's
    ``ood`` list)."""
    found = []
    for one in provenance.get("ood") or ():
        ood = one.get("ood") if isinstance(one, Mapping) else None
        if isinstance(ood, Mapping) and ood.get("flagged"):
            found.append(Path(str(one.get("input") or "?")).name)
    return found


def show_run_familiarity(task: str, provenance: Mapping[str, Any]) -> None:
    """For a stored run: one warning naming its answered inputs that were flagged (those
    refused in strict mode are in the run's error line)."""
    flagged = flagged_inputs(provenance)
    answered = len(provenance.get("ood") or ())
    if flagged:
        st.warning(
            f"**Unlike the training data:** {len(flagged)} of {answered} answered input(s) "
            f"look unlike {task}'s training data ({', '.join(flagged)}); treat their answers "
            "with caution.",
            icon="⚠️",
        )
