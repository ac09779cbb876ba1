"""History: the runs in the run store (CLI and dashboard alike); open one, run it again.

A past run's arrays are gone, so its results are drawn from the ``result.json`` summaries and
the exported images on disk, while the output folder still exists. Inputs that looked unlike
the task's training data are named at the top of the run (from the run store, so also after
its folder is gone) and warned about on their results.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st
from vlm_dashboard.downloads import offer_downloads
from vlm_dashboard.familiarity_notes import show_familiarity, show_run_familiarity
from vlm_dashboard.history_views import json_history
from vlm_dashboard.serving import registry
from vlm_dashboard.state import PREFILL_KEY, StoredResult, rerun_inputs, run_rows, stored_results

from vlm_core.runstore import RunRecord, RunStore

RUN_PAGE = "pages/run.py"
STATUS_ICON = {"ok": "🟢", "failed": "🔴", "rejected": "🟠", "running": "⏳"}


def _label(record: RunRecord) -> str:
    when = datetime.fromtimestamp(record.started_at).strftime("%Y-%m-%d %H:%M:%S")
    icon = STATUS_ICON.get(record.status, "")
    return f"{icon} {record.id[:8]} · {record.task} · {when}"


def _show_output(name: str, summary: dict[str, Any]) -> None:
    """One output from its JSON summary, with the History view of its kind (the exported
    images are shown beside); a kind no longer registered is shown as JSON."""
    kind = summary.get("kind", "?")
    st.markdown(f"**{name}** · {kind}")
    found = registry().output_kinds.get(str(kind))
    view = found.resolve_history() if found is not None else None
    (view or json_history)(name, summary)


def _show_stored(stored: StoredResult, task: str) -> None:
    with st.container(border=True):
        st.markdown(f"#### {stored.item}")
        source = stored.summary.get("input")
        name = Path(source).name if source else stored.item
        show_familiarity(name, task, stored.summary.get("ood"), has_input=bool(source))
        if stored.images:
            st.image(
                [str(p) for p in stored.images[:8]],
                caption=[p.name for p in stored.images[:8]],
                width=240,
            )
        for name, summary in stored.summary.get("outputs", {}).items():
            _show_output(name, summary)


def _rerun_button(record: RunRecord) -> None:
    reg = registry()
    available = record.task in reg.tasks
    inputs = rerun_inputs(record)
    missing = bool(record.inputs) and not inputs
    why = (
        f"task '{record.task}' is not available now"
        if not available
        else "its input files no longer exist; you can upload them again on the Run page"
        if missing
        else ""
    )
    clicked = st.button(
        "Run again with these parameters",
        disabled=not available,
        help=why or "Opens the Run page with this run's task, parameters and inputs.",
        key=f"history.rerun.{record.id}",
    )
    if why:
        st.caption(f"Note: {why}.")
    if clicked:
        st.session_state[PREFILL_KEY] = {
            "task": record.task,
            "params": dict(record.params),
            "inputs": inputs,
            "run": record.id,
        }
        st.switch_page(RUN_PAGE)


def _show_record(record: RunRecord) -> None:
    st.subheader(_label(record))
    if record.error:
        st.error(f"Run {record.status}: {record.error}")
    show_run_familiarity(record.task, record.provenance or {})
    _rerun_button(record)
    left, right = st.columns(2)
    with left:
        st.markdown("**Parameters**")
        st.json(record.params)
        st.markdown("**Inputs**")
        st.dataframe([{"input": str(p)} for p in record.inputs], hide_index=True)
    with right:
        st.markdown("**Provenance**")
        st.json(record.provenance, expanded=False)
        st.caption(f"Output folder: {record.out_dir or 'none (results were not exported)'}")
    results = stored_results(record.out_dir)
    if record.out_dir and not results and record.status == "ok":
        st.info("The output folder no longer exists (dashboard outputs last one session).")
    for stored in results:
        _show_stored(stored, record.task)
    if results and record.out_dir:
        out_dir = Path(record.out_dir)
        offer_downloads(
            out_dir,
            [Path(p) for p in record.outputs],
            name=f"vlm-{record.task}-{record.id[:8]}",
            key=f"history.download.{record.id}",
        )


def main() -> None:
    """Draw the page."""
    st.title("History")
    store = RunStore.default()
    left, right = st.columns(2)
    limit = left.selectbox("Show the last", [20, 50, 200], key="history.limit")
    tasks = ["all tasks", *sorted(registry().tasks)]
    task = right.selectbox("Task", tasks, key="history.task")
    records = store.list(limit=limit, task=None if task == "all tasks" else task)
    if not records:
        st.info("No runs yet. Run a task on the Run page, or with `vlm run`.")
        return
    st.dataframe(run_rows(records), hide_index=True, width="stretch")
    ids = [r.id for r in records]
    by_id = {r.id: r for r in records}
    chosen = st.selectbox(
        "Open a run", ids, format_func=lambda i: _label(by_id[i]), key="history.run"
    )
    _show_record(by_id[chosen])


main()
