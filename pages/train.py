"""Train: configure a run (a deep UFM or a real network), see the theory's verdict, launch it
and watch it live."""

import streamlit as st

from dufm_core import ConfigError, RunConfig, kinds
from dufm_core.config import FIELDS, MODELS
from dufm_core.presets import DESCRIPTIONS, PRESETS
from dufm_core.process import jobs
from dufm_core.training.real import check_device
from ui import bundle, config_form, data_check, docs, live, shell, state

shell.ensure_shell(__file__)
title = st.empty()
# the run watched below: the one just launched, else the link's ?run= (a run of the runs folder)
watch = st.session_state.get("watch") or st.query_params.get("run")
watched = state.find(watch)
if watch and watched is None:
    st.warning(
        f"Run `{state.shown(watch)}` was not found in the runs folder; the **Runs** page lists "
        "every run.",
        icon=":material/search_off:",
    )
# the watched run's live view comes first, above the form (it is written at the end, into this
# slot): a link to a run opens on that run, not on a form for another
live_slot = st.container()
watched_cfg = config_form.settings_of(watched)[0] if watched is not None else None
# "Train again": ?from=ID starts the form at run ID's settings instead of a preset's
again_id = st.query_params.get("from")
again = state.find(again_id)
again_cfg = None
if again_id and again is None:
    st.warning(
        f"Run `{state.shown(again_id)}` to train again was not found in the runs folder; the "
        "form starts at a preset.",
        icon=":material/search_off:",
    )
elif again is not None:
    again_cfg, why = config_form.settings_of(again)
    if why:
        st.warning(f"Run `{state.shown(again.id)}` cannot be trained again: {why}")
if again_cfg is not None:
    st.subheader("Train again with these settings")
    c = st.columns([3, 1])
    c[0].caption(
        f"The form holds the settings of run **{state.shown(again.id)}** "
        f"({state.describe_model(again_cfg.to_dict())}): change any value (the seed for another "
        "draw of the same setting) and Launch."
    )
    if c[1].button("Start from a preset instead", key="again_off"):
        del st.query_params["from"]
        st.rerun()
    model = again_cfg.model
    p = again_cfg.to_dict()
    k = config_form.again_key(again.id)
else:
    if watched is not None:
        c = st.columns([3, 1])
        c[0].subheader("Start a new run")
        if watched_cfg is not None and c[1].button(
            "Train again with these settings",
            icon=":material/replay:",
            key="again_on",
            help="Fill the form below with this run's settings, to change one and launch.",
        ):
            st.query_params["from"] = watched.id
            st.rerun()
    c = st.columns([3, 1])
    # a run shown above picks the first preset of its model: a ResNet run opens on its form
    first = config_form.preset_of_model(watched_cfg.model, "") if watched_cfg else ""
    preset = c[0].selectbox(
        "Preset",
        list(PRESETS),
        list(PRESETS).index(first) if first in PRESETS else 0,
        format_func=DESCRIPTIONS.get,
        key="preset",
    )
    preset_model = PRESETS[preset].get("model", "ufm")
    model = c[1].selectbox(
        FIELDS["model"].label,
        MODELS,
        MODELS.index(preset_model),
        key=f"{preset}_model",
        help=FIELDS["model"].help,
    )
    if model != preset_model:
        c[0].caption(
            f"The fields below are model {model}'s defaults: this preset is for {preset_model}."
        )
    # The fields start at the preset's values for its own model, else at the chosen model's
    # defaults (RunConfig.from_dict fills config.MODEL_DEFAULTS: K 10, width 64, λ_W 5e-3, …).
    p = RunConfig.from_dict(
        PRESETS[preset] if model == preset_model else {"model": model}
    ).to_dict()
    # per preset and model: switching resets
    k = f"{preset}_" if not kinds.get(model).real_network else f"{preset}_{model}_"
real = kinds.get(model).real_network
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

# The form: one widget per RunConfig field, generated from config.FIELDS (ui/config_form.py)
values = {"model": model}
if real:
    st.markdown("**Data and real-network training**")
    values |= config_form.render("data", p, k, model)
    st.caption(
        "digits (8×8, 1 797 images) is the copy that scikit-learn ships (installed with "
        "requirements.txt) and needs no folder. "
        "Nothing is downloaded: for mnist, fashion-mnist and cifar10 give the folder that holds "
        "their standard files (docs/real_networks.md §1)."
    )
    st.markdown("**Head and optimisation**")
values |= config_form.render("main", p, k, model)
with st.expander("More: initialisation, precision, device, logging"):
    values |= config_form.render("more", p, k, model)
counts: list[int] | None = None
try:
    cfg = RunConfig.from_dict(values)
    warnings = cfg.validate()
    kinds.check_memory(cfg)  # over the memory cap: refused before Launch, with the estimate
    if real:  # what the worker would refuse before making a folder: amp off a GPU, the data
        check_device(cfg)
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
    pred = kinds.predict_for(cfg).prediction()  # λ_H,UFM = λ_H/N for a real network
    if pred is not None:
        m = st.columns(4)
        m[0].metric("γ (output = γY)", f"{pred.gamma:.8f}")
        m[1].metric(
            "λ_crit (equal λ)", "—" if pred.lambda_crit is None else f"{pred.lambda_crit:.6g}"
        )
        m[2].metric(
            "layer outliers (×K²)", ", ".join(f"{v:.5g}" for v in sorted(set(pred.layer_outlier)))
        )
        m[3].metric("loss at optimum", f"{pred.loss:.8f}")
        if cfg.activation == "relu":
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
    try:
        run = jobs.launch(cfg, state.runs_dir())
    except (ConfigError, OSError) as exc:  # over the memory cap, a full disk: one line
        st.error(str(exc))
        st.stop()
    st.query_params["run"] = run.id
    st.query_params.pop("from", None)  # the new run is shown; its own "Train again" is above
    st.session_state["watch"] = run.id
    st.rerun()

if watched is not None:
    with live_slot:
        live.watch_run(watched)
        bundle.offer_if_finished(watched)  # a finished run's figures, data, config in a .zip
        st.divider()
