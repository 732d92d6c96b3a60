"""Shared dashboard state: the runs folder, the selected run / checkpoint / layer (kept in the
URL query parameters ``run``, ``step``, ``layer`` so a view can be shared as a link)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dufm_core.config import RunConfig
from dufm_core.process import jobs
from dufm_core.store import Run, RunSummary, default_runs_dir, list_runs, open_run


def runs_dir() -> Path:
    return default_runs_dir()


def all_runs() -> list[RunSummary]:
    """Every run, newest first; also starts queued runs if a worker slot is free."""
    jobs.pump(runs_dir())
    return list(reversed(list_runs(runs_dir())))


def _param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value if value else None


def select_run(rows: list[RunSummary] | None = None, where=st.sidebar) -> Run | None:
    """Sidebar run picker bound to the ``run`` query parameter."""
    rows = all_runs() if rows is None else rows
    if not rows:
        where.info("No runs yet: start one on the **Train** page.")
        return None
    ids = [r.id for r in rows]
    wanted = _param("run")
    index = ids.index(wanted) if wanted in ids else 0
    labels = {r.id: f"{r.id} · {r.state}" for r in rows}
    choice = where.selectbox("Run", ids, index=index, format_func=labels.get, key="run_pick")
    if choice != wanted:
        st.query_params["run"] = choice
        st.query_params.pop("step", None)
    return open_run(runs_dir() / choice)


def select_step(run: Run, where=st.sidebar) -> int | None:
    """Checkpoint picker bound to the ``step`` query parameter (defaults to the last)."""
    steps = run.checkpoints()
    if not steps:
        where.warning("This run has no checkpoint yet.")
        return None
    wanted = _param("step")
    index = (
        steps.index(int(wanted))
        if wanted and wanted.isdigit() and int(wanted) in steps
        else len(steps) - 1
    )
    step = where.selectbox("Checkpoint step", steps, index=index, key=f"step_pick_{run.id}")
    st.query_params["step"] = str(step)
    return int(step)


def select_layer(depth: int, where=st.sidebar) -> int:
    """Layer picker 1..L bound to the ``layer`` query parameter."""
    wanted = _param("layer")
    default = (
        int(wanted) if wanted and wanted.isdigit() and 1 <= int(wanted) <= depth else min(3, depth)
    )
    layer = where.selectbox(
        "Layer l (W_l)", list(range(1, depth + 1)), index=default - 1, key="layer_pick"
    )
    st.query_params["layer"] = str(layer)
    return int(layer)


def select_analysis_target() -> tuple[Run, int, RunConfig, int]:
    """Sidebar pickers of the analysis pages: (run, checkpoint step, its config, layer).
    Stops the page with a hint when there is no run or no checkpoint yet."""
    run = select_run()
    if run is None:
        st.stop()
    step = select_step(run)
    if step is None:
        st.stop()
    cfg = run.config()
    return run, step, cfg, select_layer(cfg.depth)
