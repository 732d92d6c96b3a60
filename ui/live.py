"""Live view of a run: progress, loss and NC curves, cancel; polls the run folder."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dufm_core import jobs, plots, theory
from dufm_core.store import open_run

ACTIVE = ("queued", "running")


def _body(run_dir: Path) -> None:
    run = open_run(run_dir)
    status = run.status()
    cfg = run.config()
    state = status.get("state")
    total = int(status.get("total_steps") or cfg.steps)
    step = int(status.get("step") or 0)
    rows = run.metrics()
    st.markdown(f"Run `{run.id}` — **state: {state}**")
    st.progress(
        min(step / total, 1.0) if total else 0.0,
        text=f"step {step} / {total}" + (f" · loss {rows[-1]['loss']:.10g}" if rows else ""),
    )
    if status.get("error"):
        (st.error if state in ("failed", "diverged") else st.info)(status["error"])
    if state in ACTIVE and st.button("Cancel run", key=f"cancel_{run.id}"):
        st.toast(jobs.cancel(run))
    if rows:
        ref = None
        if cfg.loss == "mse" and min([*cfg.lam_ws, cfg.lam_h]) > 0:
            ref = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h).loss
        c1, c2 = st.columns(2)
        c1.plotly_chart(
            plots.metric_curves(
                {run.id: rows}, "loss", reference=ref, title="Loss (closed form dashed)"
            ),
            config=plots.CONFIG,
            key=f"live_loss_{run.id}",
        )
        c2.plotly_chart(
            plots.layer_curves(rows, "nc1", title="NC1 = tr(Σ_W Σ_B^†)/K per layer"),
            config=plots.CONFIG,
            key=f"live_nc1_{run.id}",
        )
    elif state in ACTIVE:
        st.caption("Waiting for the first logged step…")
    if state not in ACTIVE and st.session_state.get(f"was_active_{run.id}"):
        st.session_state[f"was_active_{run.id}"] = False
        st.rerun(scope="app")  # stop polling
    st.session_state[f"was_active_{run.id}"] = state in ACTIVE


def watch_run(run_dir: Path) -> None:
    """Show the run; while it is queued or running, refresh every 0.5 s."""
    active = open_run(run_dir).status().get("state") in ACTIVE
    st.fragment(_body, run_every=0.5 if active else None)(run_dir)
