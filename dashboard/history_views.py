"""How the History page shows a past run's output of each core kind, from its JSON summary in
``result.json`` (the arrays are gone; the exported images are shown beside by the page).

Each is ``history(name, summary)``, named by the kind's registration
(:mod:`vlm_core.outputs.builtin`); a plugin's kind names its own or gets :func:`json_history`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st


def json_history(name: str, summary: Mapping[str, Any]) -> None:
    """The summary as collapsed JSON (without a volume's affine)."""
    st.json({k: v for k, v in summary.items() if k != "affine"}, expanded=False)


def text_history(name: str, summary: Mapping[str, Any]) -> None:
    """Text, captions and replies: the text, then their other non-empty fields as JSON."""
    st.text(summary.get("text", ""))
    extra = {k: v for k, v in summary.items() if k not in ("kind", "text") and v}
    if extra:
        st.json(extra, expanded=False)


def metrics_history(name: str, summary: Mapping[str, Any]) -> None:
    """A metric/value table, and the per-class values as JSON."""
    rows = [{"metric": k, "value": v} for k, v in summary.get("values", {}).items()]
    st.dataframe(rows, hide_index=True)
    if summary.get("per_class"):
        st.json(summary["per_class"], expanded=False)


def boxes_history(name: str, summary: Mapping[str, Any]) -> None:
    """One row per box."""
    st.dataframe(summary.get("boxes", []), hide_index=True)


def mask_history(name: str, summary: Mapping[str, Any]) -> None:
    """The pixels (voxels) of each class."""
    counts = summary.get("counts", {})
    st.dataframe([{"class": k, "pixels": v} for k, v in counts.items()], hide_index=True)
