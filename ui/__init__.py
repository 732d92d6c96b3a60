"""Streamlit-side helpers shared by the pages (the engine, dufm_core, never imports these)."""
