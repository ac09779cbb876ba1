"""How the dashboard shows an error to an operator: one box, no traceback unless debugging.

* :class:`~vlm_core.errors.UsageError` (bad parameter, bad input, unknown task): the operator's
  problem; the message says what to change.
* :class:`~vlm_core.errors.TaskRunError` / :class:`~vlm_core.errors.PluginError`: a plugin
  failed; the box names the plugin, and the rest of the app keeps working.
* anything else: a generic box; the traceback goes to the server log, and into the page only
  in debug mode (``VLM_DEBUG=1`` or ``vlm --debug dashboard``).
"""

from __future__ import annotations

import logging
import os

import streamlit as st

from vlm_core.errors import PluginError, TaskRunError, UsageError, VLMError

log = logging.getLogger("vlm.dashboard")

_TRUE = {"1", "true", "yes", "on"}


def debug_mode() -> bool:
    """Whether tracebacks may be shown to operators (``VLM_DEBUG``)."""
    return os.environ.get("VLM_DEBUG", "").strip().lower() in _TRUE


def show_error(exc: BaseException, *, doing: str = "") -> None:
    """Show ``exc`` in one error box; ``doing`` says what failed ("running good.invert")."""
    if isinstance(exc, TaskRunError):
        after = (
            "Its own bundled sample crashed too, so the plugin is now disabled for every user "
            "until someone enables it again on the Plugins page; everything else keeps working."
            if exc.quarantined
            else "The plugin stays enabled: a crash on one input does not disable it."
        )
        st.error(
            f"Plugin '{exc.plugin}' failed in task '{exc.task}': {exc.reason}. {after}",
            icon="🧩",
        )
    elif isinstance(exc, PluginError):
        st.error(f"Plugin '{exc.plugin}' failed: {exc.reason}", icon="🧩")
    elif isinstance(exc, (UsageError, VLMError)):
        st.error(str(exc), icon="⚠️")
    else:
        log.error("unexpected error %s", doing or "in the dashboard", exc_info=exc)
        where = f" while {doing}" if doing else ""
        st.error(
            f"Unexpected error{where} ({type(exc).__name__}). The details are in the server "
            "log; start the dashboard with `vlm --debug dashboard` (or VLM_DEBUG=1) to see "
            "them here.",
            icon="🛑",
        )
        if debug_mode():
            st.exception(exc)
