"""Live view of a run: progress, loss and NC curves, cancel; polls the run folder."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dufm_core import kinds
from dufm_core.config import ConfigError, RunConfig
from dufm_core.process import jobs
from dufm_core.store import Run
from ui import figures, shell

ACTIVE = ("queued", "running")


def _body(run: Run) -> None:
    with shell.errors_as_one_line(f"the live view of {run.id}"):  # a fragment reruns alone
        _show(run)


def _show(run: Run) -> None:
    status = run.status()
    try:
        cfg = run.config()
    except ConfigError as exc:  # a damaged config.json: say so, never a traceback
        st.error(f"Run `{run.id}` cannot be shown: {exc}")
        return
    state = status["state"]
    total = status["total_steps"] or cfg.steps
    step = status["step"]
    rows = run.metrics()
    real = figures.has_accuracy(rows)
    loss = rows[-1].get("loss") if rows else None
    st.markdown(f"Run `{run.id}` — **state: {state}**")
    st.progress(
        min(max(step / total, 0.0), 1.0) if total else 0.0,
        text=f"step {step} / {total}"
        + (f" · loss {loss:.10g}" if loss is not None else "")
        + (_accuracy_text(rows[-1]) if real else ""),
    )
    if status.get("error"):
        (st.error if state in ("failed", "diverged") else st.info)(status["error"])
    if state in ACTIVE and st.button("Cancel run", key=f"cancel_{run.id}"):
        st.toast(jobs.cancel(run))
    if rows and real:
        _real_figures(run.id, rows, cfg)
    elif rows:
        ref = ufm_loss_reference(cfg)
        c1, c2 = st.columns(2)
        c1.plotly_chart(
            figures.metric_curves(
                {run.id: rows}, "loss", reference=ref, title="Loss (closed form dashed)"
            ),
            config=figures.CONFIG,
            key=f"live_loss_{run.id}",
        )
        c2.plotly_chart(
            figures.layer_curves(rows, "nc1", title="NC1 = tr(Σ_W Σ_B^†)/K per layer"),
            config=figures.CONFIG,
            key=f"live_nc1_{run.id}",
        )
    elif state in ACTIVE:
        st.caption("Waiting for the first logged step…")
    if state not in ACTIVE and st.session_state.get(f"was_active_{run.id}"):
        st.session_state[f"was_active_{run.id}"] = False
        st.rerun(scope="app")  # stop polling
    st.session_state[f"was_active_{run.id}"] = state in ACTIVE


def _accuracy_text(row: dict[str, Any]) -> str:
    """' · train acc … · test acc … · epoch …' of a real-network metrics row."""
    out = f" · train acc {row['train_acc']:.3f}" if row.get("train_acc") is not None else ""
    if row.get("test_acc") is not None:
        out += f" · test acc {row['test_acc']:.3f}"
    if row.get("epoch") is not None:
        out += f" · epoch {row['epoch']:.4g}"
    return out


def ufm_loss_reference(cfg: RunConfig) -> float | None:
    """The closed-form loss at the UFM optimum for a linear-MSE-comparable run, else None.

    A real network is compared at λ_H,UFM = λ_H/N (``cfg.ufm_lam_h``); its loss includes the
    backbone's weight decay, so with λ_b > 0 there is no UFM value to compare with."""
    if cfg.lam_backbone > 0:
        return None
    pred = kinds.predict_for(cfg).prediction()
    return None if pred is None else pred.loss


def _real_figures(run_id: str, rows: list[dict[str, Any]], cfg: RunConfig) -> None:
    """Accuracy, eval loss beside batch loss, and NC1 of a real-network run."""
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        figures.accuracy_curves(rows, "Accuracy (eval mode)"),
        config=figures.CONFIG,
        key=f"live_acc_{run_id}",
    )
    c2.plotly_chart(
        figures.batch_loss_curves(
            rows, ufm_loss_reference(cfg), reference_label="UFM optimum (λ_H/N)"
        ),
        config=figures.CONFIG,
        key=f"live_loss_{run_id}",
    )
    c1, _ = st.columns(2)
    c1.plotly_chart(
        figures.layer_curves(
            rows,
            "nc1",
            title="NC1 = tr(Σ_W Σ_B^†)/K per layer",
            layer_names=["H_1 = h(x)", *[f"H_{l}" for l in range(2, cfg.depth + 1)], "Z (logits)"],
        ),
        config=figures.CONFIG,
        key=f"live_nc1_{run_id}",
    )


def watch_run(run: Run) -> None:
    """Show ``run`` (a run of the runs folder: :func:`ui.state.find`); while it is queued or
    running, refresh every 0.5 s."""
    active = run.status()["state"] in ACTIVE
    st.fragment(_body, run_every=0.5 if active else None)(run)
