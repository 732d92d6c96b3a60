"""Theory explorer: the closed forms of docs/theory.md §3–§4, live; no training needed.

A slider move has to be answered fast (docs/benchmarks.md §6), so: the sliders and everything
they change are one fragment (a move reruns only that, not the app's navigation); the γ curve
over its λ grid (a root solve per point) is cached per (K, n, L); the figures are built in one
call each (ui/figures/theory.py); the per-layer table is a static table.
"""

import math

import numpy as np
import pandas as pd
import streamlit as st

from dufm_core import theory
from dufm_core.theory import Prediction
from ui import charts, docs, figures, shell

shell.ensure_shell(__file__)
st.title("Theory explorer")
docs.caption(
    "Deep linear MSE UFM at its global optimum (docs/theory.md §3–§4). γ is the largest root of "
    "γ^(L−1)(1−γ)^(L+1) = K^(L+1) n λ_H Π_l λ_W; above λ_crit the optimum is 0 and γ jumps "
    "from (L−1)/L to 0. Each layer's fit Hessian has K² equal outliers λ_W γ/(1−γ); the full "
    "weight Hessian's K² outliers split by ±ρ (docs/theory.md §4.5)."
)


@st.cache_data(max_entries=64, show_spinner=False)
def gamma_curve(K: int, n: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """γ at a common λ on a log grid wide enough for every slider setting (λ from 10^-6.5 to
    past λ_crit), with two points either side of λ_crit for the jump."""
    lam_c = theory.lambda_crit(K, n, L)
    lo, hi = min(-6.5, math.log10(lam_c) - 3), max(0.5, math.log10(lam_c) + 0.5)
    grid = np.sort(np.append(np.logspace(lo, hi, 500), [lam_c * (1 - 1e-9), lam_c * (1 + 1e-9)]))
    return grid, np.array([theory.gamma(K, n, [g] * L, g) for g in grid])


def show_gamma(pred: Prediction, lam_w: float, lam_h: float) -> None:
    """Five short metrics and γ against a common λ with this setting on the curve: at the
    common λ with the same λ_H Π λ_W when λ_W ≠ λ_H, since γ depends on nothing else."""
    K, n, L = pred.K, pred.n, pred.L
    lam_c = theory.lambda_crit(K, n, L)
    lam_eq = math.exp((math.log(lam_h) + L * math.log(lam_w)) / (L + 1))
    m = st.columns(5)
    m[0].metric("γ", f"{pred.gamma:.8f}", help="optimal shrinkage: Z* = γY")
    m[1].metric("loss", f"{pred.loss:.8f}", help="(1−γ)²/2 + (L+1)γ(1−γ)/2")
    m[2].metric("optimum", "non-zero" if pred.nontrivial else "zero",
                help="zero (W = 0, H_1 = 0) above the threshold, theory.md §3.1")  # fmt: skip
    m[3].metric("common λ", f"{lam_eq:.3e}", help="the equal λ with the same λ_H Π λ_W, hence "
                "the same γ: (λ_H λ_W^L)^(1/(L+1))")  # fmt: skip
    m[4].metric("λ_crit", f"{lam_c:.4g}", help="critical common λ (docs/theory.md §3.1)")
    grid, gam = gamma_curve(K, n, L)
    equal = lam_w == lam_h
    label = f"λ = {lam_w:.3g}" if equal else f"λ_eq = (λ_H λ_W^L)^(1/(L+1)) = {lam_eq:.3g}"
    view = (min(lam_c / 1e3, lam_eq / 3), max(lam_c * 10**0.5, lam_eq * 3))
    charts.show(
        st,
        figures.gamma_vs_lambda(grid, gam, lam_c, current=lam_eq, current_gamma=pred.gamma,
                                current_label=label, x_range=view),
        "gamma_vs_lambda",
    )  # fmt: skip
    docs.caption(
        f"λ_W = {lam_w:.3g} on each of the {L} layers, λ_H = {lam_h:.3g}. "
        + ("" if equal else "γ depends on them only through λ_H Π λ_W (docs/theory.md §3.2), so "
           "the point sits on the equal-λ curve at the common λ with the same product. ")
        + f"λ_crit = {lam_c:.6g}, where γ = (L−1)/L = {(L - 1) / L:.4f} before the jump; scaling "
        f"every λ by {pred.critical_scale:.4g} reaches the threshold."
    )  # fmt: skip


def show_spectra(pred: Prediction, lam_w: float, lam_h: float) -> None:
    """The layer and full weight fit-Hessian spectra as stems on one log axis, and the
    per-layer quantities."""
    K, n, L = pred.K, pred.n, pred.L
    st.subheader("Predicted Hessian spectra")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("layer l (W_l)", list(range(1, L + 1)), index=min(2, L - 1), key="te_l")
    width = c2.number_input("width d of the hidden layers (sets only the multiplicities)", K,
                            4096, max(K, 60), key="te_d")  # fmt: skip
    lams = [lam_w] * L
    lay = theory.layer_hessian_spectrum(
        K, n, lams, lam_h, layer, width_in=width, width_out=width if layer < L else K
    )
    full = theory.hessian_spectrum(K, n, lams, lam_h, widths=[width] * L)
    nonzero = [abs(v) for v, _ in lay + full if v != 0]
    shared = (min(nonzero) / 3, max(nonzero) * 3)  # one axis for both: outliers ≈ L × layer's
    charts.show(
        st,
        figures.predicted_spectrum(
            lay, f"Layer-{layer} fit Hessian: K² outliers, the rest 0", K,
            marks=[(pred.layer_outlier[layer - 1], "λ_W γ/(1−γ)")], x_range=shared),
        f"predicted_layer{layer}_spectrum",
    )  # fmt: skip
    charts.show(
        st,
        figures.predicted_spectrum(
            full, "Full weight fit Hessian: K² outliers split by ±ρ (theory §4.5)", K,
            marks=[(pred.full_outliers[0], "GN + ρ"), (pred.full_outliers[-1], "GN − ρ")],
            x_range=shared),
        "predicted_full_spectrum",
    )  # fmt: skip
    docs.caption(
        f"GN = (γ/(1−γ)) · L λ_W = {pred.full_gn_outlier:.6g}, ρ = {pred.rho:.6g}: "
        f"K(K−1)/2 = {K * (K - 1) // 2} outliers at GN + ρ and K(K+1)/2 = {K * (K + 1) // 2} at "
        "GN − ρ (exact for equal λ_W). Hover a stem for its value to 10 digits."
    )
    table = pd.DataFrame(
        {
            "layer": range(1, L + 1),
            "σ_l": pred.sigma,
            "‖μ^(l)‖": pred.mean_norms[:-1],
            "outlier (fit)": pred.layer_outlier,
            "outlier (total)": pred.layer_outlier_total,
            "gradient β^(l+1)": pred.gradient_beta,
        }
    )
    st.table(table.style.format(precision=6), hide_index=True)


@st.fragment
def explorer() -> None:
    """The sliders and all they change: a slider move reruns only this."""
    c = st.columns(5)
    K = c[0].slider("K (classes)", 2, 20, 3, key="te_K")
    n = c[1].slider("n (samples per class)", 1, 200, 40, key="te_n")
    L = c[2].slider("L (weight matrices)", 1, 12, 5, key="te_L")
    log_w = c[3].slider("log10 λ_W (every layer)", -6.0, 0.0, -2.0, 0.05, key="te_log_w")
    log_h = c[4].slider("log10 λ_H", -6.0, 0.0, -2.0, 0.05, key="te_log_h")
    lam_w, lam_h = 10**log_w, 10**log_h
    pred = theory.predict(K, n, [lam_w] * L, lam_h)
    show_gamma(pred, lam_w, lam_h)
    if pred.nontrivial:
        show_spectra(pred, lam_w, lam_h)
    else:
        st.warning(
            "λ is above the threshold: the global minimiser is W = 0, H_1 = 0 and every "
            "spectral prediction is degenerate."
        )


explorer()
