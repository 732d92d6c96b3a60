"""Train: configure a run, see the theory's verdict, launch it and watch it live."""

import streamlit as st

from dufm_core import ConfigError, RunConfig, jobs, theory
from dufm_core.config import (
    ACTIVATIONS,
    DEVICES,
    DTYPES,
    INITS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
)
from dufm_core.presets import DESCRIPTIONS, PRESETS
from ui import live, shell, state

shell.ensure_shell(__file__)
st.title("Train a deep UFM")
st.caption(
    "Full-batch training of Z = W_L⋯W_1 H_1 (ReLU between layers if chosen) on the loss "
    "fit(Z, Y) + Σ_l (λ_W/2)‖W_l‖² + (λ_H/2)‖H_1‖² "
    "(theory.md §1.3). The run is a separate process: reloading this page loses nothing."
)

preset = st.selectbox("Preset", list(PRESETS), format_func=DESCRIPTIONS.get, key="preset")
p = {**RunConfig().to_dict(), **PRESETS[preset]}
k = f"{preset}_"  # widget keys per preset so switching presets resets the fields

c = st.columns(4)
K = c[0].number_input("K classes", 2, 1000, int(p["K"]), key=k + "K")
n = c[1].number_input("n per class", 1, 100_000, int(p["n"]), key=k + "n")
depth = c[2].number_input("depth L", 1, 64, int(p["depth"]), key=k + "L")
width = c[3].text_input("width (d or d1,…,dL)", str(p["width"]), key=k + "w")
c = st.columns(4)
activation = c[0].selectbox(
    "activation", ACTIVATIONS, ACTIVATIONS.index(p["activation"]), key=k + "act"
)
loss = c[1].selectbox("loss", LOSSES, LOSSES.index(p["loss"]), key=k + "loss")
lam_w = c[2].text_input("λ_W (one or per layer)", str(p["lam_w"]), key=k + "lw")
lam_h = c[3].text_input("λ_H", str(p["lam_h"]), key=k + "lh")
c = st.columns(4)
optimizer = c[0].selectbox("optimizer", OPTIMIZERS, OPTIMIZERS.index(p["optimizer"]), key=k + "opt")
lr = c[1].text_input("learning rate", str(p["lr"]), key=k + "lr")
steps = c[2].number_input("steps", 1, 100_000_000, int(p["steps"]), key=k + "steps")
seed = c[3].number_input("seed", 0, 2**31, int(p["seed"]), key=k + "seed")
with st.expander("More: initialisation, precision, device, logging"):
    c = st.columns(4)
    init = c[0].selectbox("init", INITS, INITS.index(p["init"]), key=k + "init")
    init_scale = c[1].text_input("init scale", str(p["init_scale"]), key=k + "isc")
    init_noise = c[2].text_input("init noise (optimum)", str(p["init_noise"]), key=k + "inz")
    dtype = c[3].selectbox("dtype", DTYPES, DTYPES.index(p["dtype"]), key=k + "dt")
    c = st.columns(4)
    device = c[0].selectbox("device", DEVICES, DEVICES.index(p["device"]), key=k + "dev")
    log_points = c[1].number_input("log points", 2, 100_000, int(p["log_points"]), key=k + "lp")
    ckpt_points = c[2].number_input(
        "checkpoints", 1, 10_000, int(p["checkpoint_points"]), key=k + "cp"
    )
    name = c[3].text_input("name", "", key=k + "name")
    c = st.columns(4)
    momentum = c[0].text_input("momentum (optimizer momentum)", str(p["momentum"]), key=k + "mom")
    betas = c[1].text_input("Adam betas β1,β2", ",".join(map(str, p["betas"])), key=k + "bet")
    schedule = c[2].selectbox(
        "log/checkpoint spacing", SCHEDULES, SCHEDULES.index(p["schedule"]), key=k + "sch"
    )

cfg = RunConfig(
    K=K,
    n=n,
    depth=depth,
    width=width,
    activation=activation,
    loss=loss,
    lam_w=lam_w,
    lam_h=lam_h,
    optimizer=optimizer,
    lr=lr,
    steps=steps,
    seed=seed,
    init=init,
    init_scale=init_scale,
    init_noise=init_noise,
    dtype=dtype,
    device=device,
    log_points=log_points,
    checkpoint_points=ckpt_points,
    name=name,
    momentum=momentum,
    betas=[b.strip() for b in betas.split(",")],
    schedule=schedule,
)
try:
    warnings = cfg.validate()
    error = None
except ConfigError as exc:
    warnings, error = [], str(exc)

st.subheader("Theory's verdict")
if error:
    st.error(error)
else:
    for w in warnings:
        st.warning(w)
    if loss == "mse" and min([*cfg.lam_ws, cfg.lam_h]) > 0:
        pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
        m = st.columns(4)
        m[0].metric("γ (output = γY)", f"{pred.gamma:.8f}")
        m[1].metric(
            "λ_crit (equal λ)", "—" if pred.lambda_crit is None else f"{pred.lambda_crit:.6g}"
        )
        m[2].metric(
            "layer outliers (×K²)", ", ".join(f"{v:.5g}" for v in sorted(set(pred.layer_outlier)))
        )
        m[3].metric("loss at optimum", f"{pred.loss:.8f}")
        if activation == "relu":
            st.caption(
                "ReLU: the linear optimum is also the best DNC point (theory.md §4.6); "
                "GD need not reach it, and the K² outliers need not equalise."
            )
    else:
        st.caption(
            "Cross-entropy has no global closed form; DNC points and their spectra are in "
            "theory.md §4.7 (shown on the analysis pages)."
        )

if st.button("Launch", type="primary", disabled=error is not None):
    run = jobs.launch(cfg, state.runs_dir())
    st.query_params["run"] = run.id
    st.session_state["watch"] = run.id
    st.rerun()

watch = st.session_state.get("watch") or st.query_params.get("run")
if watch and (state.runs_dir() / watch / "config.json").is_file():
    st.divider()
    live.watch_run(state.runs_dir() / watch)
