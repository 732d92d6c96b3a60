"""Inspect checkpoint: upload a .pt / .safetensors checkpoint (or pick one) and analyse it."""

import hashlib
import tempfile
from pathlib import Path

import streamlit as st

from dufm_core import analysis
from dufm_core.store import CheckpointError, load_checkpoint
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
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(up.name).name
                path.write_bytes(data)
                try:
                    ck = load_checkpoint(path)
                except CheckpointError as exc:
                    st.error(str(exc).replace(str(path), up.name))
                    st.stop()
            bar = st.progress(0.0, text="Analysing…")
            st.session_state[key] = analysis.analyze_model(
                ck.model.double(),
                ck.config,
                ck.step,
                run_id=up.name,
                full=True,
                progress=lambda msg, f: bar.progress(min(f, 1.0), text=msg),
            )
            bar.empty()
        report = st.session_state[key]
else:
    run = state.select_run(where=st)
    step = state.select_step(run, where=st) if run else None
    if run is not None and step is not None:
        report = av.get_report(run, step, full=True)

if report is None:
    st.stop()
cfg = report["config"]
st.success(
    f"{report['run']} · step {report['step']} · K={cfg['K']} n={cfg['n']} L={cfg['depth']} "
    f"d={cfg['width']} {cfg['activation']}/{cfg['loss']} · loss {report['loss']['total']:.10g} "
    f"(theory {report['theory']['loss']})"
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
