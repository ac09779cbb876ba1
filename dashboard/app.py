"""vlm dashboard, Home page: installed plugins and tasks with their health, and the device.

Run with `vlm dashboard` (or `streamlit run dashboard/app.py` from a checkout).
"""

from __future__ import annotations

import streamlit as st
from vlm_dashboard.state import STATUS_ICON, plugin_cards

from vlm_core import __version__
from vlm_core.plugins import Registry, load_registry


@st.cache_resource(show_spinner="Loading plugins…")
def registry() -> Registry:
    """Loaded once per server process and shared by every session."""
    return load_registry()


@st.cache_data(ttl=60, show_spinner=False)
def devices() -> dict:
    from vlm_core.devices import device_report

    return device_report()


st.set_page_config(page_title="vlm", page_icon="🔭", layout="wide")
st.title("vlm")
st.caption(f"vlm-core {__version__} — visual model tasks from installed plugins")

reg = registry()
cards = plugin_cards(reg)
dev = devices()

healthy = sum(c.status == "healthy" for c in cards)
col1, col2, col3 = st.columns(3)
col1.metric("Plugins", f"{healthy} / {len(cards)} healthy")
col2.metric("Tasks", len(reg.tasks))
col3.metric("Device", dev["default"], help=f"torch {dev['torch'] or 'not installed'}")

if st.button("Reload plugins"):
    registry.clear()
    st.rerun()

if not cards:
    st.info(
        "No plugins are installed. Install one with `vlm plugins install NAME`, "
        "or create one with `vlm plugins new NAME`."
    )

for card in cards:
    with st.container(border=True):
        st.subheader(f"{STATUS_ICON.get(card.status, '')} {card.name}  ·  {card.version}")
        if card.status == "failed":
            st.error(f"Plugin '{card.name}' failed — {card.error}")
        elif card.status == "disabled":
            st.warning(
                f"Plugin '{card.name}' is disabled ({card.error}). "
                f"Enable it with `vlm plugins enable {card.name}`."
            )
        if card.tasks:
            st.dataframe(card.tasks, hide_index=True, width="stretch")
