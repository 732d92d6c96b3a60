"""Alignment: Hessian eigenvectors against the class-mean outer products μ_c^(l+1) μ_c'^(l)ᵀ."""

import streamlit as st

from ui import analysis_view as av
from ui import bundle, charts, docs, figures, shell, state

shell.ensure_shell(__file__)
st.title("Eigenvector alignment")
run, step, cfg, layer = state.select_analysis_target()
report = av.get_report(run, step)
av.show_alignment(report, layer)

st.subheader("Over training")
docs.caption(
    "In the paper's linear UFM the mean f_cc' rises from ≈0.2 to 1 (docs/theory.md §5.1, Fig. 4)."
)
series = av.get_series(run)
if series:
    steps, f = av.series_lines(series, layer, "alignment_f_mean")
    _, cap = av.series_lines(series, layer, "subspace_capture_mean")
    charts.show(
        st,
        figures.series_lines(
            steps,
            {"mean f_cc'": f, "mean subspace capture": cap},
            f"Alignment of layer {layer} over training",
            "value",
            reference=1.0,
            reference_label="1 at collapse",
        ),
        "alignment_over_training",
    )

bundle.offer_on_analysis_page(run)  # every figure of the run in one .zip
