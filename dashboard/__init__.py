"""The vlm Streamlit dashboard (installed as the package ``vlm_dashboard``).

Start it with `vlm dashboard`; `app.py` is the Streamlit script.
"""
