"""Theory explorer: the closed forms of docs/theory.md §3–§4, live; no training needed."""

import numpy as np
import pandas as pd
import streamlit as st

from dufm_core import theory
from ui import docs, figures, shell

shell.ensure_shell(__file__)
st.title("Theory explorer")
docs.caption(
    "Deep linear MSE UFM at its global optimum (docs/theory.md §3–§4). γ is the largest root of "
    "γ^(L−1)(1−γ)^(L+1) = K^(L+1) n λ_H Π_l λ_W; above λ_crit the optimum is 0 and γ jumps "
    "from (L−1)/L to 0. Each layer's fit Hessian has K² equal outliers λ_W γ/(1−γ); the full "
    "weight Hessian's K² outliers split by ±ρ (§4.5)."
)
c = st.columns(5)
K = c[0].slider("K", 2, 20, 3)
n = c[1].slider("n", 1, 200, 40)
L = c[2].slider("L", 1, 12, 5)
log_w = c[3].slider("log10 λ_W", -6.0, 0.0, -2.0, 0.05)
log_h = c[4].slider("log10 λ_H", -6.0, 0.0, -2.0, 0.05)
lam_w, lam_h = 10**log_w, 10**log_h
pred = theory.predict(K, n, [lam_w] * L, lam_h)

m = st.columns(5)
m[0].metric("γ", f"{pred.gamma:.8f}")
m[1].metric("non-trivial", "yes" if pred.nontrivial else "no (optimum 0)")
m[2].metric("loss", f"{pred.loss:.8f}")
m[3].metric("layer outlier", f"{pred.layer_outlier[0]:.6g}")
m[4].metric("critical scale of λ", f"{pred.critical_scale:.4g}×")

lam_c = theory.lambda_crit(K, n, L)
grid = np.logspace(np.log10(lam_c) - 3, np.log10(lam_c) + 0.5, 400)
grid = np.sort(np.append(grid, [lam_c * (1 - 1e-9), lam_c * (1 + 1e-9)]))
gam = [theory.gamma(K, n, [g] * L, g) for g in grid]
st.plotly_chart(
    figures.gamma_vs_lambda(grid, gam, lam_c, current=lam_w if lam_w == lam_h else None),
    config=figures.CONFIG,
)
st.caption(f"Equal λ: λ_crit = {lam_c:.6g}; γ at λ_crit⁻ = (L−1)/L = {(L - 1) / L:.4f}.")

if pred.nontrivial:
    c1, c2 = st.columns(2)
    layer = c1.selectbox("layer", list(range(1, L + 1)), index=min(2, L - 1))
    width = c2.number_input("width d (only sets the bulk size)", K, 4096, max(K, 60))
    lay = theory.layer_hessian_spectrum(
        K, n, [lam_w] * L, lam_h, layer, width_in=width, width_out=width if layer < L else K
    )
    st.plotly_chart(
        figures.predicted_spectrum(lay, f"Layer-{layer} fit Hessian (value, multiplicity)"),
        config=figures.CONFIG,
    )
    full = theory.hessian_spectrum(K, n, [lam_w] * L, lam_h, widths=[width] * L)
    st.plotly_chart(
        figures.predicted_spectrum(full, "Full weight fit Hessian (value, multiplicity)"),
        config=figures.CONFIG,
    )
    st.dataframe(
        pd.DataFrame(
            {
                "layer": range(1, L + 1),
                "σ_l": pred.sigma,
                "‖μ^(l)‖": pred.mean_norms[:-1],
                "outlier (fit)": pred.layer_outlier,
                "outlier (total)": pred.layer_outlier_total,
                "gradient β^(l+1)": pred.gradient_beta,
            }
        ),
        hide_index=True,
        width="stretch",
    )
else:
    st.warning(
        "λ is above the threshold: the global minimiser is W = 0, H_1 = 0 and every "
        "spectral prediction is degenerate."
    )
