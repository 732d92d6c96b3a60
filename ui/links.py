"""Links between pages: ``st.page_link`` inside the app, a plain Markdown link where a page runs
on its own (``AppTest``, ``streamlit run pages/x.py``), since page_link only knows the pages that
app.py's navigation registered. One helper, so every page links the same way."""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

# (page, label, icon): the pages that analyse one run's checkpoints, in the sidebar's order
ANALYSIS_PAGES = [
    ("spectrum", "Spectrum", ":material/bar_chart:"),
    ("alignment", "Alignment", ":material/grid_on:"),
    ("gradients", "Gradients", ":material/north_east:"),
    ("collapse", "Collapse & weights", ":material/trending_down:"),
    ("tracking", "Eigenspace tracking", ":material/timeline:"),
]


def url(page: str, **query: str) -> str:
    """The relative URL of ``pages/<page>.py`` with ``query`` (``train?run=…``): relative, so it
    also works where the app is served under a path prefix."""
    return page + (f"?{urlencode(query)}" if query else "")


def page_link(page: str, label: str, icon: str | None = None, **query: str) -> None:
    """A link to ``pages/<page>.py`` with ``query`` as its URL query parameters."""
    try:
        st.page_link(f"pages/{page}.py", label=label, icon=icon, query_params=query or None)
    except StreamlitPageNotFoundError:
        st.markdown(f"[{label}]({url(page, **query)})")


def analysis_links(run_id: str, real_network: bool = False) -> None:
    """One row of links from a run to each page that analyses it (and, for a real network, to
    Real network vs UFM), each opening on that run."""
    pages = [*ANALYSIS_PAGES, *([("real_vs_ufm", "Real network vs UFM", ":material/compare:")]
                                if real_network else [])]
    for col, (page, label, icon) in zip(st.columns(len(pages)), pages, strict=True):
        with col:
            page_link(page, label, icon, run=run_id)
