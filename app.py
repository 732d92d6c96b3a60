"""DUFM Lab dashboard entry point: ``streamlit run app.py``.

Pages live in ``pages/`` and stay thin: every number comes from ``dufm_core``.
"""

import streamlit as st

st.set_page_config(page_title="DUFM Lab", page_icon="◆", layout="wide")

pages = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/runs.py", title="Runs", icon="📋"),
]
st.navigation(pages).run()
