"""Inspect checkpoint: upload a .pt / .safetensors checkpoint (or pick one) and analyse it."""

import hashlib

import streamlit as st

from dufm_core import kinds
from dufm_core.checkpoints import CheckpointError
from dufm_core.config import ConfigError
from ui import analysis_view as av
from ui import shell, state

shell.ensure_shell(__file__)
st.title("Inspect a checkpoint")
st.caption(
    "Upload a DUFM Lab checkpoint (`.pt`, loaded with `torch.load(weights_only=True)`, or a "
    "`.safetensors` export) or pick one from a run; every analysis is computed for it. Files that "
    "carry code, truncated files and other formats are refused with a message, never executed."
)
source = st.radio("Source", ["upload a file", "a run's checkpoint"], horizontal=True)
report = None
if source == "upload a file":
    up = st.file_uploader("Checkpoint", type=["pt", "safetensors"])
    if up is not None:
        data = up.getvalue()
        key = "inspect_" + hashlib.sha256(data).hexdigest()
        if key not in st.session_state:
            bar = st.progress(0.0, text="Analysing…")
            try:
                st.session_state[key] = av.report_of_file(
                    up.name, data, lambda msg, f: bar.progress(min(f, 1.0), text=msg)
                )
            except (CheckpointError, ConfigError) as exc:  # refused file, or absent data set
                bar.empty()
                st.error(str(exc))
                st.stop()
            bar.empty()
        report = st.session_state[key]
else:
    run = state.select_run(where=st)
    step = state.select_step(run, where=st) if run else None
    if run is not None and step is not None:
        report = av.get_report(run, step, full=True)

if report is None:
    st.stop()
cfg = report.config
kind = kinds.get(cfg.get("model", "ufm"))
st.success(
    f"{report.run} · {cfg.get('model', 'ufm')} ({kind.label}"
    + (", layers = its head" if report.network is not None else "")
    + f") · step {report.step} · K={cfg['K']} n={cfg['n']} L={cfg['depth']} "
    f"d={cfg['width']} {cfg['activation']}/{cfg['loss']} · loss {report.loss['total']:.10g} "
    f"(theory {report.theory.loss})"
)
layer = st.selectbox("Layer l", list(range(1, cfg["depth"] + 1)), index=min(2, cfg["depth"] - 1))
tabs = st.tabs(["Spectrum", "Full Hessian", "Alignment", "Gradients"])
with tabs[0]:
    av.show_spectrum(report, layer)
with tabs[1]:
    av.show_full(report)
with tabs[2]:
    av.show_alignment(report, layer)
with tabs[3]:
    av.show_gradients(report, layer)
