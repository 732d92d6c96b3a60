"""DUFM Lab dashboard entry point: ``streamlit run app.py``.

Pages live in ``pages/`` and stay thin: every number comes from ``dufm_core``, every figure from
``dufm_core.plots``. The selected run, checkpoint and layer live in the URL (``?run=…&step=…&
layer=…``) so a view can be shared.
"""

import streamlit as st

st.set_page_config(page_title="DUFM Lab", page_icon="◆", layout="wide")

pages = {
    "": [st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True)],
    "Runs": [
        st.Page("pages/train.py", title="Train", icon=":material/rocket_launch:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/list:"),
    ],
    "Analysis": [
        st.Page("pages/collapse.py", title="Collapse & weights", icon=":material/trending_down:"),
    ],
    "Theory": [
        st.Page("pages/theory_explorer.py", title="Theory explorer", icon=":material/functions:")
    ],
}

st.navigation(pages).run()
