"""Overview: what DUFM Lab is, and the closed-form optimum for a chosen setting."""

import pandas as pd
import streamlit as st

from dufm_core import theory
from ui import docs, shell

shell.ensure_shell(__file__)
st.title("DUFM Lab")
st.markdown(
    "Train **deep unconstrained feature models** and compare what they learn with the closed "
    "forms of Garrod & Keating, *Unifying Low Dimensional Observations in Deep Learning Through "
    "the Deep Linear Unconstrained Feature Model* (arXiv 2404.06106). Start a run from the "
    "command line (`python -m dufm_core train`) and find it under **Runs**."
)

st.subheader("Closed-form optimum of the deep linear MSE UFM")
docs.caption(
    "At the global optimum the output is Z* = γY, where γ is the largest root of "
    "γ^(L−1)(1−γ)^(L+1) = K^(L+1) n λ_H Π λ_W; every layer-wise fit Hessian has K² equal "
    "outliers λ_W γ/(1−γ). Defaults are the paper's linear UFM (docs/theory.md case A)."
)
c1, c2, c3, c4 = st.columns(4)
K = c1.number_input("K (classes)", min_value=2, max_value=100, value=3)
n = c2.number_input("n (samples per class)", min_value=1, max_value=100_000, value=40)
L = c3.number_input("L (weight matrices)", min_value=1, max_value=32, value=5)
lam = c4.number_input(
    "λ (all λ_W and λ_H)", min_value=1e-8, max_value=1.0, value=1e-2, format="%.6f"
)
pred = theory.predict(int(K), int(n), [float(lam)] * int(L), float(lam))
m1, m2, m3, m4 = st.columns(4)
m1.metric("γ", f"{pred.gamma:.10f}")
m2.metric("λ_crit", "—" if pred.lambda_crit is None else f"{pred.lambda_crit:.6g}")
m3.metric("loss", f"{pred.loss:.10f}")
m4.metric("layer outlier (×K²)", f"{pred.layer_outlier[0]:.10f}")
if not pred.nontrivial:
    st.warning("λ is above λ_crit: the global optimum is W = 0, H_1 = 0 (γ = 0).")
table = pd.DataFrame(
    {
        "layer": list(range(1, int(L) + 1)),
        "σ_l": pred.sigma,
        "‖μ^(l)‖": pred.mean_norms[:-1],
        "Hessian outlier (fit)": pred.layer_outlier,
        "Hessian outlier (total)": pred.layer_outlier_total,
    }
)
st.dataframe(table, hide_index=True, width="stretch")
docs.caption(
    f"Full weight fit-Hessian: K² = {int(K) ** 2} outliers, "
    + ", ".join(
        f"{v:.8f}" for v in sorted(set(round(x, 12) for x in pred.full_outliers), reverse=True)
    )
    + " (the ρ split of docs/theory.md §4.5)."
)
