"""Gradients: the K×K gradient-coefficient matrix (I/K at collapse) and the outlier fraction."""

import numpy as np
import streamlit as st

from ui import analysis_view as av
from ui import bundle, charts, figures, shell, state

shell.ensure_shell(__file__)
st.title("Gradient coefficients")
run, step, cfg, layer = state.select_analysis_target()
report = av.get_report(run, step)
av.show_gradients(report, layer)

st.subheader("Over training")
series = av.get_series(run)
if series:
    steps, Cs = av.series_lines(series, layer, "gradient_coefficients")
    diag = [float(np.trace(np.asarray(C))) if C else None for C in Cs]
    off = [float(np.sum(C) - np.trace(np.asarray(C))) if C else None for C in Cs]
    _, inside = av.series_lines(series, layer, "gradient_inside_fraction")
    charts.show(
        st,
        figures.series_lines(
            steps,
            {"Σ diagonal C_cc": diag, "Σ off-diagonal": off, "inside outlier space": inside},
            f"Gradient of W_{layer} over training",
            "fraction of ‖g‖²",
            reference=1.0,
            reference_label="1",
        ),
        "gradient_over_training",
    )

bundle.offer_on_analysis_page(run)  # every figure of the run in one .zip
