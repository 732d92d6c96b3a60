"""Live view of a run: progress, loss and NC curves, cancel; polls the run folder."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dufm_core import kinds, sharpness
from dufm_core.config import ConfigError, RunConfig
from dufm_core.process import jobs
from dufm_core.store import Run
from ui import charts, figures, links, page_figures, shell
from ui.page_figures import ufm_loss_reference as ufm_loss_reference  # re-exported

ACTIVE = ("queued", "running")
RATE_ROWS = 20  # the last logged rows that the steps/s is measured over


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
    speed = pace_text(rows, status, total, active=state in ACTIVE)
    if speed:
        st.caption(speed)
    if status.get("error"):
        (st.error if state in ("failed", "diverged") else st.info)(status["error"])
    if state in ACTIVE and st.button("Cancel run", key=f"cancel_{run.id}"):
        st.toast(jobs.cancel(run))
    if state not in ACTIVE and run.checkpoints():
        links.analysis_links(run.id, real_network=kinds.get(cfg.model).real_network)
    if rows:
        _curves(run.id, rows, cfg)
    elif state in ACTIVE:
        st.caption("Waiting for the first logged step…")
    if rows and any(r.get("sharpness") is not None for r in rows):
        _sharpness_block(run.id, rows, cfg)
    if state not in ACTIVE and st.session_state.get(f"was_active_{run.id}"):
        st.session_state[f"was_active_{run.id}"] = False
        st.rerun(scope="app")  # stop polling
    st.session_state[f"was_active_{run.id}"] = state in ACTIVE


def steps_per_second(rows: list[dict[str, Any]], status: dict[str, Any]) -> float | None:
    """The training speed: over the last RATE_ROWS logged rows (their ``time``, seconds since
    the worker started training), else the status's step over ``updated_at − started_at``;
    None when neither says (no rows with times, no start time, no time elapsed)."""
    timed: list[dict[str, Any]] = []
    for r in reversed(rows[-RATE_ROWS:]):  # the last stretch of one process (a resume restarts
        t = r.get("time")                  # the clock)
        if not isinstance(t, int | float) or (timed and t >= timed[0]["time"]):
            break
        timed.insert(0, r)
    if len(timed) >= 2:
        first, last = timed[0], timed[-1]
        dt, ds = last["time"] - first["time"], last["step"] - first["step"]
        if dt > 0 and ds > 0:
            return ds / dt
    start, now, step = status.get("started_at"), status.get("updated_at"), status.get("step")
    if isinstance(start, int | float) and isinstance(now, int | float) and step and now > start:
        return step / (now - start)
    return None


def _duration(seconds: float) -> str:
    """``12 s``, ``3 min``, ``1.5 h``: a time left, rounded as a person would say it."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def pace_text(
    rows: list[dict[str, Any]], status: dict[str, Any], total: int, active: bool
) -> str:
    """``1 234 steps/s · about 12 s left`` (time left only while the run is active); empty when
    the speed is unknown."""
    rate = steps_per_second(rows, status)
    if rate is None:
        return ""
    shown = f"{rate:,.0f}".replace(",", " ") if rate >= 10 else f"{rate:.2g}"
    text = f"{shown} steps/s"
    step = status.get("step") or 0
    if active and total and step < total:
        text += f" · about {_duration((total - step) / rate)} left"
    return text


def _accuracy_text(row: dict[str, Any]) -> str:
    """' · train acc … · test acc … · epoch …' of a real-network metrics row."""
    out = f" · train acc {row['train_acc']:.3f}" if row.get("train_acc") is not None else ""
    if row.get("test_acc") is not None:
        out += f" · test acc {row['test_acc']:.3f}"
    if row.get("epoch") is not None:
        out += f" · epoch {row['epoch']:.4g}"
    return out


def _curves(run_id: str, rows: list[dict[str, Any]], cfg: RunConfig) -> None:
    """The loss (a real network's accuracy first: :func:`ui.page_figures.loss_figures`, the
    same figures as the bundle's) and NC1 per layer, two to a row."""
    names = (["H_1 = h(x)", *[f"H_{l}" for l in range(2, cfg.depth + 1)], "Z (logits)"]
             if figures.has_accuracy(rows) else None)
    named = [*page_figures.loss_figures(run_id, rows, cfg),
             ("nc1", figures.layer_curves(rows, "nc1", title="NC1 = tr(Σ_W Σ_B^†)/K per layer",
                                          layer_names=names))]
    charts.show_in_rows(named, prefix="live_", suffix=f"_{run_id}")


def sharpness_note(rows: list[dict[str, Any]], limit_label: str) -> str:
    """One line on the edge of stability: the first logged step whose sharpness reached the
    limit and how many logged steps did; empty when none did."""
    flagged = [r for r in rows if r.get("edge_of_stability") is True
               and isinstance(r.get("sharpness"), int | float)]
    if not flagged:
        return ""
    first = flagged[0]
    limit = first.get("sharpness_limit")
    at = f" = {limit:.4g}" if isinstance(limit, int | float) else ""
    return (f"Edge of stability: the sharpness reached {limit_label}{at} at step "
            f"{first['step']} ({first['sharpness']:.4g}); {len(flagged)} of "
            f"{sum(r.get('sharpness') is not None for r in rows)} logged steps at or above it.")


def _sharpness_block(run_id: str, rows: list[dict[str, Any]], cfg: RunConfig) -> None:
    """A run with ``log_sharpness``: the sharpness against step with its stability limit, the
    edge-of-stability flag (markers and a note) and the closed form at the optimum."""
    label = "(2+2β)/η" if cfg.optimizer == "momentum" else "2/η"
    predicted = (sharpness.predicted_sharpness(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h, cfg.widths,
                                               cfg.activation, cfg.loss)
                 if cfg.model == "ufm" else None)
    note = sharpness_note(rows, label)
    if note:
        st.warning(note)
    c1, _ = st.columns(2)
    charts.show(c1, figures.sharpness_curves(rows, predicted=predicted, limit_label=label),
                "sharpness", key=f"live_sharpness_{run_id}")
    limit = sharpness.stability_limit(cfg.optimizer, cfg.lr, cfg.momentum)
    if predicted is None:
        more = " No closed form applies to this run."
    elif limit is not None and predicted >= limit:
        more = (f" The optimum's sharpness {predicted:.4g} is above {label}: gradient descent "
                "cannot settle there.")
    else:
        more = ""
    c1.caption("Top eigenvalue of the total-loss Hessian over H_1 and every W_l at each log "
               f"point; gradient descent is stable only below the dashed limit {label}." + more)


def watch_run(run: Run) -> None:
    """Show ``run`` (a run of the runs folder: :func:`ui.state.find`); while it is queued or
    running, refresh every 0.5 s."""
    active = run.status()["state"] in ACTIVE
    st.fragment(_body, run_every=0.5 if active else None)(run)
