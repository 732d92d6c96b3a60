"""Spectrum: layer-wise and full Hessian spectra against the predicted K² outliers."""

import streamlit as st

from dufm_core import kinds
from ui import analysis_view as av
from ui import bundle, charts, page_figures, shell, state

shell.ensure_shell(__file__)
st.title("Hessian spectrum")
run, step, cfg, layer = state.select_analysis_target()
c1, c2 = st.columns(2)
kind = kinds.get(cfg.model)
full_label = f"full ({kind.weights_label})"
scope = c1.radio("Hessian", ["layer-wise", full_label], horizontal=True)
part = c2.radio("Part", ["fit", "total (fit + λ)"], horizontal=True)
report = av.get_report(run, step, full=scope.startswith("full"))
if scope.startswith("full"):
    if part.startswith("total"):
        st.info(
            "Shown: the fit Hessian. The total Hessian of all weights adds λ_{W_l} on each "
            "block's diagonal (for equal λ: every eigenvalue + λ)."
        )
    av.show_full(report)
    if kind.real_network:
        st.caption(
            "The Hessian over every network parameter (backbone included) is one command away: "
            "`python -m dufm_core analyze RUN --full --full-params all` (products over data "
            "batches; minutes on a GPU, long on a CPU). Its report then shows here."
        )
else:
    av.show_spectrum(report, layer, total=part.startswith("total"))

st.subheader("Bottom of the spectrum, traces, verdict")
av.show_bottom_trace(report)

st.subheader("Over training")
series = av.get_series(run)
if series:
    charts.show_in_rows(page_figures.spectrum_series_figures(series, report, layer), per_row=1)
    pick = st.select_slider("Histogram at step", options=series["steps"], value=step)
    if pick != step:
        av.show_spectrum(av.get_report(run, pick), layer, suffix=f"_step{pick}")

bundle.offer_on_analysis_page(run)  # every figure of the run in one .zip
