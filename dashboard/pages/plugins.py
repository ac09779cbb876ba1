"""Plugins: every installed plugin with its status and error; enable, disable, validate.

A plugin quarantined after a crash (its task crashed, and then on its own bundled sample too)
is off for every user of this vlm home, dashboard sessions and CLI alike: its card says when,
by which run and why, and offers the Enable button.
"""

from __future__ import annotations

import streamlit as st
from vlm_dashboard.errors import show_error
from vlm_dashboard.serving import registry
from vlm_dashboard.state import STATUS_ICON

from vlm_core.config import Quarantine, edit_user_config, read_user_config, settings
from vlm_core.plugins import PluginRecord
from vlm_core.testing import ConformanceReport, check_plugin

NOTICE_KEY = "plugins.notice"
REPORT_KEY = "plugins.report.{}"


def _set_enabled(name: str, enabled: bool) -> None:
    """Button callback: write the user config (like `vlm plugins enable/disable`), reload."""
    try:
        with edit_user_config() as config:
            if enabled:
                config.disabled.discard(name)
                config.quarantined.pop(name, None)
            else:
                config.disabled.add(name)
    except Exception as exc:  # an unreadable config file: shown on the page
        st.session_state[NOTICE_KEY] = exc
        return
    registry.clear()
    st.session_state[NOTICE_KEY] = f"{'Enabled' if enabled else 'Disabled'} plugin '{name}'."


def _validate(name: str) -> None:
    """Button callback: the conformance check without running samples, kept for display."""
    try:
        report = check_plugin(name, registry=registry(), run_samples=False)
    except Exception as exc:  # shown on the card; the page stays usable
        st.session_state[REPORT_KEY.format(name)] = exc
    else:
        st.session_state[REPORT_KEY.format(name)] = report


def _show_report(name: str) -> None:
    report = st.session_state.get(REPORT_KEY.format(name))
    if report is None:
        return
    if not isinstance(report, ConformanceReport):
        show_error(report, doing=f"validating plugin '{name}'")
        return
    if report.ok:
        st.success(f"Plugin '{name}' passes all {len(report.checks)} checks.")
    else:
        st.error(
            f"Plugin '{name}' fails {len(report.problems)} check(s): " + "; ".join(report.problems)
        )
    st.dataframe(
        [{"check": c.name, "ok": c.ok, "detail": c.detail} for c in report.checks],
        hide_index=True,
        width="stretch",
    )


def quarantine_note(name: str, record: Quarantine) -> str:
    """Who quarantined plugin ``name``, when and why, and that it is off for everyone."""
    when = record.at.replace("T", " ").replace("+00:00", " UTC") if record.at else "earlier"
    by = {"dashboard": "a dashboard run", "cli": "a `vlm run`", "python": "a Python run"}
    who = by.get(record.by, f"a run ({record.by})" if record.by else "a run")
    run = f" {record.run_id[:8]}" if record.run_id else ""
    where = settings().config_file
    return (
        f"Quarantined {when} by {who}{run}: its task crashed, and then its own bundled sample "
        f"crashed too, so the plugin looks broken rather than one input odd. This is kept in "
        f"the shared config ({where}): '{name}' is off for every user and process of this vlm "
        f"home until someone enables it (here, or `vlm plugins enable {name}`)."
    )


def _card(record: PluginRecord, can_enable: bool) -> None:
    with st.container(border=True):
        version = record.version or "in-process"
        st.subheader(f"{STATUS_ICON.get(record.status, '')} {record.name}  ·  {version}")
        st.caption(f"{record.distribution or 'no distribution'} · entry point {record.module}")
        if record.status == "failed":
            st.error(f"Plugin '{record.name}' failed at {record.stage}: {record.error}")
            if record.quarantine is not None:
                st.warning(quarantine_note(record.name, record.quarantine), icon="🔒")
        elif record.status == "disabled":
            st.warning(f"Plugin '{record.name}' is disabled ({record.error}).")
        elif record.tasks:
            st.caption("Tasks: " + ", ".join(record.tasks))
        left, right, _ = st.columns([1, 1, 4])
        if record.status == "healthy":
            left.button(
                "Disable",
                key=f"plugins.disable.{record.name}",
                on_click=_set_enabled,
                args=(record.name, False),
            )
        elif can_enable:
            left.button(
                "Enable",
                key=f"plugins.enable.{record.name}",
                on_click=_set_enabled,
                args=(record.name, True),
                type="primary",
            )
        right.button(
            "Validate",
            key=f"plugins.validate.{record.name}",
            on_click=_validate,
            args=(record.name,),
            help="The conformance check of `vlm plugins validate --quick` (samples are not run).",
        )
        _show_report(record.name)


def main() -> None:
    """Draw the page."""
    st.title("Plugins")
    notice = st.session_state.pop(NOTICE_KEY, None)
    if isinstance(notice, BaseException):
        show_error(notice, doing="changing the user config")
    elif notice:
        st.success(notice)
    if st.button("Reload plugins"):
        registry.clear()
        st.rerun()
    reg = registry()
    records = sorted(reg.plugins.values(), key=lambda r: r.name)
    if not records:
        st.info(
            "No plugins are installed. Install one with `vlm plugins install NAME`, "
            "or create one with `vlm plugins new NAME`."
        )
        return
    st.dataframe(
        [
            {
                "plugin": r.name,
                "status": r.status,
                "version": r.version or "",
                "distribution": r.distribution or "",
                "tasks": len(r.tasks),
                "failed at": r.stage or "",
                "quarantined": r.quarantine.at if r.quarantine else "",
                "error": r.error or "",
            }
            for r in records
        ],
        hide_index=True,
        width="stretch",
    )
    config = read_user_config()
    switched_off = config.disabled | set(config.quarantined)
    for record in records:
        _card(record, record.name in switched_off)


main()
