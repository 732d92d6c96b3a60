"""DUFM Lab dashboard entry point: ``streamlit run app.py``.

Pages live in ``pages/`` and stay thin: every number comes from ``dufm_core``, every figure from
``ui.figures``. The selected run, checkpoint and layer live in the URL (``?run=…&step=…&
layer=…``) so a view can be shared; a link that names a run, step or layer that is not there
gets a plain "not found" line and the pickers. An unexpected exception on a page is one
``st.error`` line (``ui.shell.run_page``); its traceback goes to the server's stderr.
"""

import streamlit as st

from dufm_core.process import launcher
from dufm_core.store import default_runs_dir
from ui import shell

st.set_page_config(page_title="DUFM Lab", page_icon="◆", layout="wide")

pages = {
    "": [st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True)],
    "Runs": [
        st.Page("pages/train.py", title="Train", icon=":material/rocket_launch:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/list:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/stacked_line_chart:"),
        st.Page("pages/sweeps.py", title="Sweeps", icon=":material/tune:"),
    ],
    "Analysis": [
        st.Page("pages/spectrum.py", title="Spectrum", icon=":material/bar_chart:"),
        st.Page("pages/alignment.py", title="Alignment", icon=":material/grid_on:"),
        st.Page("pages/gradients.py", title="Gradients", icon=":material/north_east:"),
        st.Page("pages/collapse.py", title="Collapse & weights", icon=":material/trending_down:"),
        st.Page("pages/real_vs_ufm.py", title="Real network vs UFM", icon=":material/compare:"),
        st.Page("pages/tracking.py", title="Eigenspace tracking", icon=":material/timeline:"),
        st.Page("pages/inspect.py", title="Inspect checkpoint", icon=":material/upload_file:"),
        st.Page("pages/landscape.py", title="Landscape", icon=":material/landscape:"),
    ],
    "Theory": [
        st.Page("pages/theory_explorer.py", title="Theory explorer", icon=":material/functions:"),
        st.Page("pages/checklist.py", title="Reproduction checklist", icon=":material/checklist:"),
        st.Page("pages/docs.py", title="Docs", icon=":material/menu_book:"),
    ],
}

if "launcher" not in st.session_state:  # pre-start the fork server: launches take milliseconds
    launcher.ensure_launcher(default_runs_dir())
    st.session_state["launcher"] = True
nav = st.navigation(pages, expanded=True)  # every page listed (collapsed: "View N more" past 10)
goto = shell.mark_shell()
if goto is not None:  # a direct link opened before the shell existed: go there inside it
    st.switch_page(goto[0], query_params=goto[1])
shell.run_page(nav)
