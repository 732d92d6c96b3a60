"""The first click of a newcomer: one button that trains the paper's linear UFM (theory.md case A,
a few seconds) and lands on the run's live view. Shown wherever an empty runs folder would
otherwise leave nothing to look at (Overview, Runs)."""

from __future__ import annotations

import streamlit as st

from dufm_core.process import jobs
from ui import state

PRESET = "paper-linear"


def one_click_run(label: str = "Train the paper's linear UFM", key: str | None = None) -> None:
    """A primary button; a click launches the preset in the background and switches to the Train
    page's live view of the new run (``train?run=ID``). A launch that cannot start (a full disk,
    a memory cap set very low) is one error line."""
    if not st.button(label, icon=":material/rocket_launch:", type="primary", key=key):
        return
    from dufm_core import RunConfig
    from dufm_core.presets import PRESETS

    try:
        run = jobs.launch(RunConfig(**PRESETS[PRESET]), state.runs_dir())
    except (ValueError, OSError) as exc:
        st.error(str(exc))
        return
    st.session_state["watch"] = run.id
    st.switch_page("pages/train.py", query_params={"run": run.id})  # lands on its live view
