"""Home: installed plugins and their tasks as cards, with their health, and the device."""

from __future__ import annotations

import streamlit as st
from vlm_dashboard.serving import devices, registry
from vlm_dashboard.state import STATUS_ICON, plugin_cards

from vlm_core import __version__


def main() -> None:
    """Draw the page."""
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
                    f"Enable it on the Plugins page or with `vlm plugins enable {card.name}`."
                )
            if card.tasks:
                st.dataframe(card.tasks, hide_index=True, width="stretch")


main()
