"""The dashboard's pages, one Streamlit script each, navigated by ``app.py``."""
