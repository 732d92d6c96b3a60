"""Make every page run inside the app shell (app.py's ``st.navigation``), even on a fresh server.

Streamlit treats an app that has a ``pages/`` folder as a legacy multipage app until the main
script has called ``st.navigation`` once in the process. Until then, a direct link such as
``/alignment?run=…&step=…`` runs ``pages/alignment.py`` on its own: no sidebar sections, no wide
layout. :func:`ensure_shell` notices that case, remembers the page and its query parameters, and
switches to ``app.py``, which switches back to the page inside the shell.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

SHELL_KEY = "_dufm_shell"
GOTO_KEY = "_dufm_goto"


def mark_shell() -> tuple[str, dict[str, str]] | None:
    """Called by app.py: the shell is active; return a page (and its query) to switch to."""
    st.session_state[SHELL_KEY] = True
    return st.session_state.pop(GOTO_KEY, None)


def ensure_shell(page_file: str) -> None:
    """First call of every page: if app.py's navigation has not run, go through it."""
    if st.session_state.get(SHELL_KEY):
        return
    ctx = get_script_run_ctx()
    if ctx is None or Path(ctx.main_script_path).name != "app.py":
        return  # the page runs on its own on purpose (AppTest, `streamlit run pages/x.py`)
    st.session_state[GOTO_KEY] = (f"pages/{Path(page_file).name}", st.query_params.to_dict())
    st.switch_page("app.py")
