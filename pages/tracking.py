"""Eigenspace tracking: how each layer's top-K² Hessian eigenspace moves over training
(docs/design.md §8.2), and the principal angles between any two checkpoints."""

import streamlit as st

from dufm_core import kinds, reports, tracking
from ui import analysis_view as av
from ui import charts, docs, figures, shell, state

shell.ensure_shell(__file__)
st.title("Eigenspace tracking")
run, cfg = state.select_run_config()
state.show_run_header(run)
docs.caption(
    "The overlap of two eigenspaces is the mean cos² of their principal angles, "
    "‖U_aᵀU_b‖²_F / K²: 1 when they are the same space, whatever basis a solver chose inside a "
    "degenerate cluster. At collapse the K² outliers of each layer's fit Hessian span the "
    "predicted space μ_c^{(l+1)}μ_{c'}^{(l)ᵀ} (docs/theory.md §4.1); tracking shows when that "
    "space forms and that it then stays put. Where λ_{K²} = λ_{K²+1} the space is cut at the "
    "gap above (docs/design.md §8.2)."
)


def compute(full: bool) -> None:
    """Analyse every checkpoint with the overlaps (the cached reports cost a read)."""
    bar = st.progress(0.0, text="Analysing checkpoints…")
    reports.analyze_series(run, full=full,
                           progress=lambda msg, f: bar.progress(min(max(f, 0.0), 1.0), text=msg))
    bar.empty()
    st.rerun()


series = av.get_series(run)
if series is None:
    st.stop()
entries = series.get("entries") or []
if not entries or "overlap_final" not in (entries[0].get("layers") or [{}])[0]:
    st.info("This series was made before eigenspace tracking: the overlaps are not in it yet.")
    if st.button("Compute the overlaps", key=f"tracking_{run.id}"):
        compute(full=False)
    st.stop()
if not any(e.get("full") for e in entries) and st.button(
    f"Add the full Hessian ({kinds.get(cfg.model).weights_label}; slower)",
    key=f"tracking_full_{run.id}",
):
    compute(full=True)

c1, c2 = st.columns(2)
charts.show(c1, figures.overlap_over_training(series, "overlap_final"), "overlap_final")
charts.show(c2, figures.overlap_over_training(series, "overlap_prev"), "overlap_prev")
if any(e.get("full_attribution") for e in entries):
    charts.show(st, figures.attribution_over_training(series), "attribution_over_training")
    docs.caption(
        "Where the top outlier cluster of the full Hessian lives: the share of its eigenspace in "
        "each weight block (solid; the shares sum to 1) and the part of it inside that layer's "
        "predicted directions μ_c^(l+1)μ_c'^(l)ᵀ (dashed). Dashed on solid: the outliers are "
        "made of the predicted class-mean products (docs/design.md §8.3)."
    )

st.subheader("Between two checkpoints")
steps = [int(e["step"]) for e in entries]
choices = {f"layer {l}": tracking.layer_key(l) for l in range(1, cfg.depth + 1)}
if any(e.get("full") for e in entries):
    choices["full Hessian"] = tracking.FULL
c1, c2 = st.columns([1, 3])
what = c1.selectbox("Hessian", list(choices))
if len(steps) > 1:
    a, b = c2.select_slider("Checkpoints", options=steps, value=(steps[0], steps[-1]))
else:
    a = b = steps[0]
va = tracking.read_vectors(tracking.vectors_path(run.analysis_dir, a), a)
vb = tracking.read_vectors(tracking.vectors_path(run.analysis_dir, b), b)
pair = None if va is None or vb is None else tracking.compare(va, vb, choices[what])
if pair is None:
    st.info(f"The eigenvectors of {what} at steps {a} and {b} are not both kept: compute the "
            "series again to keep them.")
    if st.button("Compute the series again", key=f"tracking_again_{run.id}"):
        compute(full=choices[what] == tracking.FULL)
    st.stop()
overlap = "—" if pair["overlap"] is None else f"{pair['overlap']:.6f}"
st.markdown(f"Overlap of the top spaces ({pair['dims'][0]} and {pair['dims'][1]} dimensions): "
            f"**{overlap}**")
c1, c2 = st.columns([3, 2])
charts.show(c1, figures.cos2_heatmap(pair["cos2"], a, b, what), f"cos2_{a}_{b}")
charts.show(c2, figures.principal_cos2_bars(pair["principal"], a, b, what),
            f"principal_angles_{a}_{b}")
docs.caption(
    "Left: (u_iᵀv_j)² for the eigenvectors u_i at the first step and v_j at the second; inside a "
    "degenerate cluster how the weight spreads over its entries depends on the solver's basis, "
    "the cluster's total does not. Right: cos² of the principal angles, which are basis-free."
)
