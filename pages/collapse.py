"""Collapse & weights: DNC metrics per layer over training; singular values vs σ_l."""

import streamlit as st

from ui import analysis_view as av
from ui import bundle, charts, docs, figures, page_figures, shell, state

shell.ensure_shell(__file__)
st.title("Collapse & weights")
run, cfg = state.select_run_config()
rows = run.metrics()
state.show_run_header(run, rows[-1]["step"] if rows else None)
docs.caption(
    "DNC1 (1/K)tr(Σ_W Σ_B^†) → 0 when features collapse to their class means; DNC2 measures the "
    "distance of the class-mean Gram from an orthogonal frame (MSE) or simplex ETF (CE); DNC3 the "
    "fraction of ‖W_l‖² outside the span of the input class means. At the linear MSE optimum "
    "every W_l has K equal singular values σ_l² = γ(1−γ)/(Kλ_{W_l}) and the rest 0 "
    "(docs/theory.md §3.3)."
)
if not rows:
    st.info("No metrics logged yet.")
    st.stop()
if figures.has_accuracy(rows):  # a real network: accuracy and the two losses first
    st.subheader("Accuracy and loss")
    st.caption(
        "Accuracy and loss on the whole training set are measured with BatchNorm in eval mode "
        "(the network the analyses see); the batch loss is the step's batch in train mode, "
        "what the optimiser descends. Dashed: the UFM optimum at λ_H,UFM = λ_H/N "
        "(docs/real_networks.md §3)."
    )
    charts.show_in_rows(page_figures.loss_figures(run.id, rows, cfg))
    st.subheader("Collapse")
charts.show_in_rows(page_figures.collapse_figures(rows, cfg))
layer = state.select_layer(cfg.depth)  # None: the link's layer is out of range (it says so)
charts.show_in_rows(page_figures.singular_value_figures(rows, cfg, [layer] if layer else []))

st.subheader("Effective ranks over training")
st.caption(
    "Roy–Vetterli effective rank exp(−Σ p_i log p_i), p_i = s_i/Σ s_j, of each W_l (→ K at "
    "collapse) and of each layer's fit-Hessian spectrum (→ K² at the linear optimum), from "
    "the analysis of every checkpoint."
)
series = av.get_series(run)
if series:
    steps = [e["step"] for e in series["entries"]]
    names = {
        f"W_{l}": av.series_lines(series, l, "effective_rank")[1] for l in range(1, cfg.depth + 1)
    }
    c1, c2 = st.columns(2)
    charts.show(
        c1,
        figures.series_lines(
            steps, names, "Effective rank of W_l", "rank", reference=cfg.K, reference_label="K"
        ),
        "effective_rank_weights",
    )
    hess = {
        f"layer {l}": av.series_lines(series, l, "hessian_effective_rank")[1]
        for l in range(1, cfg.depth + 1)
    }
    charts.show(
        c2,
        figures.series_lines(
            steps,
            hess,
            "Effective rank of the layer fit-Hessian",
            "rank",
            reference=cfg.K**2,
            reference_label="K²",
        ),
        "effective_rank_hessian",
    )

bundle.offer_on_analysis_page(run)  # every figure of the run in one .zip
