"""Landscape: the fit term and the total loss around a checkpoint, along Hessian eigenvectors,
the theory's predicted directions, random, PCA-of-the-trajectory or interpolation directions."""

import streamlit as st

from dufm_core import kinds
from dufm_core import landscape as ls
from dufm_core.config_values import check_float
from ui import charts, figures, shell, state

shell.ensure_shell(__file__)
st.title("Loss landscape")
run, step, cfg, layer = state.select_analysis_target()
if kinds.get(cfg.model).real_network:
    st.info("Landscapes are computed for UFM runs only; this run is a real network.")
    st.stop()

KIND_LABELS = {
    "eig": "top Hessian eigenvector(s)",
    "predicted": "predicted outlier direction μ_c^(l+1) μ_c'^(l)ᵀ",
    "random": "filter-normalised random",
    "pca": "PCA of the trajectory (with the path)",
    "interp": "first checkpoint → this one",
}
c1, c2 = st.columns(2)
scope = c1.radio("Move", [f"layer {layer} (W_{layer})", "all weights", "all weights + H_1"],
                 horizontal=True, help="The layer is picked in the sidebar.")
kind = c2.selectbox("Directions", list(KIND_LABELS), format_func=KIND_LABELS.get)
full = not scope.startswith("layer")
if kind == "predicted" and full:
    st.info(f"Predicted directions belong to one layer: moving W_{layer} only.")
    full = False
c3, c4, c5, c6 = st.columns(4)
if kind == "predicted":
    c = c3.number_input("class c", 1, cfg.K, 1)
    c_in = c4.number_input("class c'", 1, cfg.K, min(2, cfg.K))
    plane = c5.checkbox("plane (second pair c'' = c', c''' = c)", value=False)
    index: tuple[int, ...] = (int(c), int(c_in)) + ((int(c_in), int(c)) if plane else ())
elif kind == "interp":
    index = (1,)
    c3.markdown("t = 0: first checkpoint, t = 1: this one")
else:
    i = c3.number_input("index i", 1, ls.MAX_EIG_INDEX, 1)
    plane = c4.checkbox("plane (second index j)", value=kind == "pca")
    j = c5.number_input("index j", 1, ls.MAX_EIG_INDEX, 2, disabled=not plane)
    index = (int(i), int(j)) if plane else (int(i),)
two_d = len(index) == (4 if kind == "predicted" else 2)
auto = "the path's extent" if kind == "pca" else "1"
radius_text = c6.text_input("radius R", "", placeholder=f"default: {auto}",
                            help="t runs over [-R, R] (interp: [0, R]).")
points = st.slider("points per axis", ls.POINTS[0], 101 if two_d else ls.POINTS[1],
                   31 if two_d else 41, step=2)

try:
    radius = None if not radius_text.strip() else check_float("radius", radius_text, *ls.RADIUS)
    args = ls.LandscapeArgs(step=step, layer=None if full else layer, full=full,
                            full_params="weights+features" if "H_1" in scope else "weights",
                            directions=kind, index=index, radius=radius, points=points,
                            seed=0).checked(cfg)
    data = ls.cached_landscape(run.path, args)
except ValueError as exc:  # a value out of range: one line naming it
    st.error(str(exc))
    st.stop()

with shell.errors_as_one_line("Landscape"):
    if data is None and st.button("Compute", type="primary"):
        bar = st.progress(0.0, text="loading checkpoints")
        try:
            _, data = ls.run_landscape(run.path, args,
                                       progress=lambda m, f: bar.progress(min(f, 1.0), text=m))
        except ValueError as exc:  # e.g. pca at the first checkpoint, above the memory cap
            st.error(str(exc))
            st.stop()
        bar.empty()
    if data is None:
        st.caption("Not computed yet for these settings; results are kept in the run's "
                   "analysis/ folder.")
        st.stop()

    names = ", ".join(
        f"{d['kind']} {d.get('index', d.get('classes', ''))} (Rayleigh quotient {lam:.4g})"
        for d, lam in zip(data["directions"], data["eigenvalues"], strict=True))
    st.markdown(f"**{data['params']}**, {data['dim']} parameters moved · directions: {names} · "
                f"origin: {data['origin']} · {data['seconds']:.2f} s")
    part = st.radio("Loss", ["fit term", "total loss (fit + regulariser)"], horizontal=True)
    key = "fit" if part == "fit term" else "total"
    label = "fit" if key == "fit" else "total loss"
    if "t" in data:
        quad = data["quadratic"] if key == "fit" else None
        charts.show(st, figures.landscape_line(
            data["t"], data[key], label, quad,
            title=f"{label} along the direction (step {data['step']})"),
            f"landscape_{key}_step{data['step']}")
        if data["quadratic"] is not None:
            st.caption("Dashed: the quadratic model fit(0) + λt²/2 with λ the eigenvalue; the "
                       f"gradient term it leaves out has slope {data['slopes'][0]:.3g}.")
    else:
        log_z = st.checkbox("log scale", value=False)
        charts.show(st, figures.landscape_plane(
            data["a"], data["b"], data[key], label, path=data.get("path"), log_z=log_z,
            title=f"{label} on the plane (step {data['step']})"),
            f"landscape_plane_{key}_step{data['step']}")
        if data.get("path"):
            shares = " and ".join(f"{d['share']:.1%}" for d in data["directions"])
            st.caption(f"The plane holds {shares} of the trajectory's squared distance to this "
                       "checkpoint; the path is the checkpoints projected on it.")
