"""Inspect checkpoint: upload a .pt / .safetensors checkpoint (or pick one) and analyse it; or
bring your own classifier (state dict + architecture, ONNX graph, or features file) and data
(docs/inspect.md)."""

import streamlit as st

from dufm_core import kinds
from ui import analysis_view as av
from ui import inspect_view as iv
from ui import shell, state

shell.ensure_shell(__file__)
st.title("Inspect a checkpoint")
st.caption(
    "Upload a DUFM Lab checkpoint (`.pt`, loaded with `torch.load(weights_only=True)`, or a "
    "`.safetensors` export) or pick one from a run; every analysis is computed for it. Files that "
    "carry code, truncated files and other formats are refused with a message, never executed."
)
OWN = "your own model (any classifier)"
source = st.radio("Source", ["upload a file", "a run's checkpoint", OWN], horizontal=True)
report = None
own = source == OWN
if own:
    report = iv.own_model_form()
elif source == "upload a file":
    up = st.file_uploader("Checkpoint", type=["pt", "safetensors"])
    if up is not None:
        report = av.upload_report(up)  # streamed to a temporary file; one error line if refused
else:
    run = state.select_run(where=st)
    step = state.select_step(run, where=st) if run else None
    if run is not None and step is not None:
        report = av.get_report(run, step, full=True)

if report is None:
    st.stop()
cfg = report.config
kind = kinds.get(cfg.get("model", "ufm"))
if own:
    st.success(f"your model {report.run} · {report.get('inspection', {}).get('architecture')} "
               f"· layers = its head of {cfg['depth']} · K={cfg['K']} · "
               f"{report.get('inspection', {}).get('head_samples')} head samples")
    iv.show_collapse(report)
st.success(
    f"{report.run} · {'your model' if own else cfg.get('model', 'ufm')} ({kind.label}"
    + (", layers = its head" if report.network is not None else "")
    + f") · step {report.step} · K={cfg['K']} n={cfg['n']} L={cfg['depth']} "
    f"d={cfg['width']} {cfg['activation']}/{cfg['loss']} · loss {report.loss['total']:.10g} "
    f"(theory {report.theory.loss})"
)
layer = st.selectbox("Layer l", list(range(1, cfg["depth"] + 1)), index=min(2, cfg["depth"] - 1))
tabs = st.tabs(["Spectrum", "Full Hessian", "Alignment", "Gradients"]
               + (["Weight spectrum"] if own else []))
with tabs[0]:
    av.show_spectrum(report, layer)
with tabs[1]:
    av.show_full(report)
with tabs[2]:
    av.show_alignment(report, layer)
with tabs[3]:
    av.show_gradients(report, layer)
if own:
    with tabs[4]:
        iv.show_esd(report, layer)
