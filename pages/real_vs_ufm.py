"""Real network vs UFM: a ResNet-20 run's head measured beside what a deep UFM with the same
K, L and λ predicts (docs/theory.md §5.3; λ_H,UFM = λ_H/N)."""

import pandas as pd
import streamlit as st

from dufm_core import kinds
from ui import analysis_view as av
from ui import charts, figures, shell, state

shell.ensure_shell(__file__)
st.title("Real network vs UFM")
run, step, cfg, layer = state.select_analysis_target()
if not kinds.get(cfg.model).real_network:
    st.info(
        "This page compares the head of a **real network** (ResNet-20 feature map + linear "
        "layers, `model = resnet20`) with the UFM prediction. Pick a resnet20 run in the "
        "sidebar, or train one on the **Train** page (preset *ResNet-20 + 3 linear on digits*)."
    )
    st.stop()

report = av.get_report(run, step)
net = report.network
st.caption(
    f"Step {step}: features h(x) of all N = {net.N} training images ({net.dataset}), "
    f"BatchNorm in {net.bn_mode}. Layer l below is head layer W_l. UFM prediction: the "
    f"linear deep UFM optimum with K = {cfg.K}, n = {net.n}, L = {cfg.depth}, "
    f"λ_W = {cfg.lam_w} and λ_H,UFM = λ_H/N = {net.lam_h_ufm:.3g} (the run penalises the "
    f"mean squared feature norm, (λ_H/2)·mean_i‖h(x_i)‖², with λ_H = {net.lam_h_run:.3g})."
)
m = st.columns(5)
m[0].metric("train accuracy", f"{net.train_acc:.2%}")
m[1].metric("test accuracy", "—" if net.test_acc is None else f"{net.test_acc:.2%}")
m[2].metric("NC1 of h(x)", f"{net.feature_nc1:.3g}")
gp = report.theory.gamma
m[3].metric("γ measured", f"{report.gamma_measured:.4f}",
            None if gp is None else f"UFM {gp:.4f}", delta_color="off")
m[4].metric("loss (eval mode)", f"{report.loss['total']:.4g}")

charts.show(st, figures.head_spectra_vs_ufm(report), "head_spectra_vs_ufm")
K2 = cfg.K**2
rows = []
for lay in report.layers:
    top = lay.hessian_top
    C = lay.gradient_coefficients
    diag = sum(C[i][i] for i in range(len(C))) / len(C)
    off = (sum(map(sum, C)) - diag * len(C)) / max(len(C) ** 2 - len(C), 1)
    rows.append({
        "layer": f"W_{lay.layer} {lay.shape[0]}×{lay.shape[1]}",
        "λ₁ measured": top[0],
        f"λ_{K2} measured": top[K2 - 1] if len(top) >= K2 else None,
        "UFM outlier": lay.hessian_predicted,
        "outliers (gap rule)": lay.outlier_count,
        "UFM outliers": K2,
        "max/min top K²": lay.outlier_ratio,
        "mean f_cc' (1 at collapse)": lay.alignment_f_mean,
        "C diag mean (UFM 1/K)": diag,
        "C off-diag mean (UFM 0)": off,
        "NC1 of input": lay.nc1,
        "NC3": lay.nc3,
    })
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption(
    "At the UFM optimum every head layer has exactly K² equal fit-Hessian outliers (ratio 1), "
    "aligned with the class-mean outer products (f = 1), gradient coefficients C = I/K, and "
    "NC1 = 0. Departures here are measurements of the real network, not errors."
)

st.subheader("Over training")
series = av.get_series(run)
if series:
    for key, title, ylabel, ref, log_y in (
        ("outlier_count", "Outlier count (gap rule)", "count", K2, False),
        ("outlier_ratio", "max/min of the top K²", "ratio", 1.0, True),
        ("alignment_f_mean", "Mean alignment f_cc'", "f", 1.0, False),
    ):
        lines = {f"W_{l}": av.series_lines(series, l, key)[1] for l in range(1, cfg.depth + 1)}
        charts.show(
            st,
            figures.series_lines(series["steps"], lines, title, ylabel, log_y=log_y,
                               reference=ref, reference_label="UFM"),
            f"series_{key}", key=f"series_{key}",
        )
