"""vlm dashboard: the Streamlit entry script. It sets the page config and navigates the pages.

Run with `vlm dashboard` (or `streamlit run dashboard/app.py` from a checkout). Each page is a
script in ``pages/``; what they share (the plugin registry, the device queue) lives in
:mod:`vlm_dashboard.serving`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from vlm_dashboard.errors import show_error

from vlm_core import __version__

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="vlm", page_icon="🔭", layout="wide")

navigation = st.navigation(
    [
        st.Page(PAGES / "home.py", title="Home", icon="🏠", default=True),
        st.Page(PAGES / "run.py", title="Run", icon="▶️"),
        st.Page(PAGES / "history.py", title="History", icon="🕘"),
        st.Page(PAGES / "train.py", title="Train", icon="📈"),
        st.Page(PAGES / "plugins.py", title="Plugins", icon="🧩"),
        st.Page(PAGES / "system.py", title="System", icon="🖥️"),
    ]
)
st.sidebar.caption(f"vlm-core {__version__}")

try:
    navigation.run()
except Exception as exc:  # a page failed: one box, the app stays usable
    show_error(exc, doing=f"showing the {navigation.title} page")
