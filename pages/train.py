"""Train: configure a run (a deep UFM or a real network), see the theory's verdict, launch it
and watch it live."""

import streamlit as st

from dufm_core import ConfigError, RunConfig, real_training, theory
from dufm_core.config import (
    ACTIVATIONS,
    DATASETS,
    DEVICES,
    DTYPES,
    INITS,
    LOSSES,
    LR_SCHEDULES,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
)
from dufm_core.presets import DESCRIPTIONS, PRESETS
from dufm_core.process import jobs
from ui import data_check, docs, live, shell, state

shell.ensure_shell(__file__)
title = st.empty()
c = st.columns([3, 1])
preset = c[0].selectbox("Preset", list(PRESETS), format_func=DESCRIPTIONS.get, key="preset")
preset_model = PRESETS[preset].get("model", "ufm")
model = c[1].selectbox(
    "model",
    MODELS,
    MODELS.index(preset_model),
    key=f"{preset}_model",
    help="ufm: free features H_1 and L weight matrices. resnet20: a ResNet-20 feature map h(x) "
    "and a head of L layers, trained on real data (docs/real_networks.md).",
)
real = model != "ufm"
if model != preset_model:
    c[0].caption(
        f"The fields below are model {model}'s defaults: this preset is for {preset_model}."
    )
# The fields start at the preset's values for its own model, else at the chosen model's
# defaults (RunConfig.from_dict fills config.MODEL_DEFAULTS: K 10, width 64, λ_W 5e-3, …).
p = RunConfig.from_dict(PRESETS[preset] if model == preset_model else {"model": model}).to_dict()
k = f"{preset}_" if not real else f"{preset}_{model}_"  # per preset and model: switching resets
if real:
    title.title("Train a real network")
    docs.caption(
        "ResNet-20 feature map h(x) ∈ R^64 followed by a head W_1..W_L (docs/theory.md §5.3), "
        "trained "
        "on the loss fit + (λ_H/2)·mean_i‖h(x_i)‖² + Σ_l (λ_W/2)‖W_l‖² + (λ_b/2)‖θ_backbone‖² "
        "(docs/real_networks.md §3). The run is a separate process: reloading this page loses "
        "nothing."
    )
else:
    title.title("Train a deep UFM")
    docs.caption(
        "Full-batch training of Z = W_L⋯W_1 H_1 (ReLU between layers if chosen) on the loss "
        "fit(Z, Y) + Σ_l (λ_W/2)‖W_l‖² + (λ_H/2)‖H_1‖² "
        "(docs/theory.md §1.3). The run is a separate process: reloading this page loses nothing."
    )

real_fields: dict = {}
if real:
    st.markdown("**Data and real-network training**")
    c = st.columns([1, 2, 1])
    dataset = c[0].selectbox("dataset", DATASETS, DATASETS.index(p["dataset"]), key=k + "ds")
    digits = dataset == "digits"
    data_dir = c[1].text_input(
        "data folder (data_dir)",
        "" if digits else p["data_dir"],
        key=k + "dir",
        disabled=digits,
        placeholder="not needed for digits" if digits else "/path/to/data",
        help="The folder with the data set's standard files (MNIST/raw/…, "
        "cifar-10-batches-py/…, or the files themselves). Nothing is ever downloaded.",
    )
    test_fraction = c[2].number_input(
        "test fraction (digits)",
        0.0,
        0.9,
        float(p["test_fraction"]),
        step=0.05,
        key=k + "tf",
        disabled=not digits,
        help="digits only: the held-out fraction of every class; the others use their "
        "official test set.",
    )
    st.caption(
        "digits (8×8, 1 797 images) is the copy that scikit-learn ships (installed with "
        "requirements.txt) and needs no folder. "
        "Nothing is downloaded: for mnist, fashion-mnist and cifar10 give the folder that holds "
        "their standard files (docs/real_networks.md §1)."
    )
    c = st.columns(4, vertical_alignment="bottom")
    batch_size = c[0].number_input(
        "batch size (0 = full batch)", 0, 100_000_000, int(p["batch_size"]), key=k + "bs"
    )
    lr_schedule = c[1].selectbox(
        "lr schedule",
        LR_SCHEDULES,
        LR_SCHEDULES.index(p["lr_schedule"]),
        key=k + "lrs",
        help="constant; cosine ½(1 + cos(π·step/steps)); step ×0.1 from 50 %, ×0.01 from 75 %",
    )
    lam_backbone = c[2].text_input(
        "backbone weight decay λ_b", str(p["lam_backbone"]), key=k + "lb"
    )
    amp = c[3].checkbox(
        "amp (bf16, CUDA only)",
        bool(p["amp"]),
        key=k + "amp",
        help="Runs the backbone under bf16 autocast on a CUDA GPU (refused on the CPU); the "
        "head and the loss stay in float32, which the run's dtype must be.",
    )
    real_fields = {
        "dataset": dataset,
        "data_dir": "" if digits else data_dir.strip(),
        "batch_size": batch_size,
        "test_fraction": test_fraction,
        "lam_backbone": lam_backbone,
        "lr_schedule": lr_schedule,
        "amp": amp,
    }
    st.markdown("**Head and optimisation**")

c = st.columns(4)
K = c[0].number_input("K classes", 2, 1000, int(p["K"]), key=k + "K")
n = c[1].number_input(
    "n per class (training samples)" if real else "n per class",
    1,
    100_000,
    int(p["n"]),
    key=k + "n",
)
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

values = {
    "model": model,
    "K": K,
    "n": n,
    "depth": depth,
    "width": width,
    "activation": activation,
    "loss": loss,
    "lam_w": lam_w,
    "lam_h": lam_h,
    "optimizer": optimizer,
    "lr": lr,
    "steps": steps,
    "seed": seed,
    "init": init,
    "init_scale": init_scale,
    "init_noise": init_noise,
    "dtype": dtype,
    "device": device,
    "log_points": log_points,
    "checkpoint_points": ckpt_points,
    "name": name,
    "momentum": momentum,
    "betas": [b.strip() for b in betas.split(",")],
    "schedule": schedule,
    **real_fields,
}
counts: list[int] | None = None
try:
    cfg = RunConfig.from_dict(values)
    warnings = cfg.validate()
    if real:  # what the worker would refuse before making a folder: amp off a GPU, the data
        real_training.check_device(cfg)
        counts = data_check.check(cfg)
    error = None
except ConfigError as exc:
    warnings, error = [], str(exc)

st.subheader("Theory's verdict")
if error:
    st.error(error)
else:
    for w in warnings:
        st.warning(w)
    if real:
        st.caption(
            f"Data: {cfg.dataset}, N = 10·n = {cfg.N} training samples "
            f"(the smallest class allows n ≤ {min(counts or [0])}). The run penalises the "
            f"mean feature norm (λ_H/2)·mean_i‖h(x_i)‖², which is the UFM's (λ_H/2)‖H_1‖² "
            f"with **λ_H,UFM = λ_H/N = {cfg.lam_h:g}/{cfg.N} = {cfg.ufm_lam_h:.4g}** "
            "(docs/real_networks.md §3): the UFM prediction below uses that λ_H. The network "
            "reaches it only if its backbone can place the features at the UFM optimum"
            + (" and λ_b = 0." if cfg.lam_backbone else ".")
        )
    if loss == "mse" and min([*cfg.lam_ws, cfg.lam_h]) > 0:
        pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.ufm_lam_h)
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
            docs.caption(
                "ReLU: the linear optimum is also the best DNC point (docs/theory.md §4.6); "
                "GD need not reach it, and the K² outliers need not equalise."
            )
    else:
        docs.caption(
            "Cross-entropy has no global closed form; DNC points and their spectra are in "
            "docs/theory.md §4.7 (shown on the analysis pages)."
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
