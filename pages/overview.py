"""Overview: what DUFM Lab is for, where to start, and the newest runs with links to them."""

from pathlib import Path

import streamlit as st

from dufm_core.store import list_runs
from ui import docs, links, quickstart, shell, state

RECENT = 5  # runs listed
START = [  # (page, label, icon, what it is for): the three ways in
    ("train", "Train a model", ":material/rocket_launch:",
     "Presets for the paper's models; live loss and collapse curves; Cancel at any time."),
    ("theory_explorer", "Theory explorer", ":material/functions:",
     "γ, λ_crit and the predicted Hessian spectra for any K, n, L and λ."),
    ("runs", "All runs", ":material/list:",
     "Every run with its progress: compare, download, cancel or delete."),
]  # fmt: skip
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/play_circle:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
    "diverged": ":material/warning:",
}


shell.ensure_shell(__file__)
st.title("DUFM Lab")
st.markdown(
    "- **Train** a deep unconstrained feature model, or a ResNet-20 with a linear head on real "
    "data, and watch it converge.\n"
    "- **Analyse** any checkpoint: Hessian spectra, eigenvector alignment, gradients and "
    "collapse, each beside its closed-form prediction.\n"
    "- **Explore** those closed forms (Garrod & Keating, arXiv 2404.06106) live, with no "
    "training."
)
for col, (page, label, icon, text) in zip(st.columns(3), START, strict=True):
    with col.container(border=True):
        links.page_link(page, label, icon)
        st.caption(text)
links.page_link("checklist", "Reproduction checklist: one click trains the paper's presets and "
                "checks each of its claims", ":material/checklist:")

st.subheader("Recent runs")
rows = list_runs(state.runs_dir())  # oldest first: run names start with their creation time
if not rows:
    st.info(
        docs.linkify(
            "No runs yet. One click trains the paper's linear UFM (docs/theory.md case A, a "
            "few seconds) and shows it training; the **Train** page configures any other run."
        )
    )
    quickstart.one_click_run()
else:
    newest = rows[::-1][:RECENT]
    st.caption(
        f"The {len(newest)} newest of {len(rows)} in `{Path(state.runs_dir()).resolve()}`; "
        "a run's link opens its live view on the Train page."
    )
    widths = [5, 2, 3, 2, 2]
    head = st.columns(widths)
    for col, name in zip(head, ["run", "state", "model", "step / total", "last loss"],
                         strict=True):  # fmt: skip
        col.markdown(f"**{name}**")
    for r in newest:
        cols = st.columns(widths, vertical_alignment="center")
        with cols[0]:
            links.page_link("train", r.id, None, run=r.id)
        cols[1].markdown(f"{STATE_ICONS.get(r.state, '')} {r.state}")
        cols[2].markdown(state.describe_model(r.config))
        cols[3].markdown(f"{r.step:,} / {r.total_steps:,}")
        cols[4].markdown("—" if r.loss is None else f"{r.loss:.6g}")
st.caption(
    "Everything here also works from a terminal: `python -m dufm_core train --help` (README)."
)
