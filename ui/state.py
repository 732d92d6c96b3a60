"""Shared dashboard state: the runs folder, the selected run / checkpoint / layer (kept in the
URL query parameters ``run``, ``step``, ``layer`` so a view can be shared as a link).

Everything a visitor sends is untrusted: a link's query parameters, and a picker's value too
(the browser sends the chosen option as text; Streamlit resets one that is not an option, but
nothing here relies on that). So a run id becomes a run folder only through :func:`find`
(``store.find_run``: a plain name listed in the runs folder, never a path or a symbolic link),
and a step or layer only if it is one of the choices. A link that names a run, step or layer
that is not there gets one warning line saying so and the picker with nothing chosen; the URL
keeps what the link said until the visitor picks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from dufm_core.config import REAL_NETWORK, ConfigError, RunConfig
from dufm_core.process import jobs
from dufm_core.store import Run, RunSummary, default_runs_dir, find_run, list_runs

MAX_SHOWN = 40  # characters of a visitor's value repeated in a message
MAX_NAME = 16  # characters of a run's name in its label (the sidebar picker shows about 33)
# The layer last picked, kept across pages: the sidebar's links open a page without the query
# parameters, and the layer picker (unlike the run and step pickers) would fall back to layer 3
LAST_LAYER = "_dufm_last_layer"
# a run's state in one character, so that its label fits the sidebar picker (the run header
# under each page's title says the state in words)
STATE_MARKS = {"queued": "⋯", "running": "▸", "finished": "✓", "failed": "✗", "cancelled": "⊘",
               "diverged": "⚠", "interrupted": "‖", "unknown": "?"}  # fmt: skip
# a run folder's name: <YYYYmmdd>-<HHMMSS>-<label>-<4 hex digits> (docs/design.md §3.1)
_RUN_ID = re.compile(r"^\d{8}-(\d{2})(\d{2})\d{2}-.+-([0-9a-f]{4})$")


def runs_dir() -> Path:
    return default_runs_dir()


def all_runs() -> list[RunSummary]:
    """Every run, newest first; also starts queued runs if a worker slot is free."""
    jobs.pump(runs_dir())
    return list(reversed(list_runs(runs_dir())))


def find(run_id: str | None) -> Run | None:
    """The run called ``run_id`` in the runs folder, or None: the only way a run id from a link
    or a form becomes a folder (:func:`dufm_core.store.find_run`)."""
    return find_run(run_id, runs_dir()) if run_id else None


def shown(value: str) -> str:
    """A visitor's value, safe to repeat inside a Markdown code span: one line, no backticks,
    at most MAX_SHOWN characters."""
    text = " ".join(str(value).split()).replace("`", "'")
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def describe_model(config: Mapping[str, Any]) -> str:
    """The model of a run in a few words: a UFM's activation/loss, K and L; a real network's
    name, data set and head depth (``config``: a run's config.json as a dict)."""
    c = config
    real = REAL_NETWORK.get(c.get("model", "ufm"))
    if real is None:
        return str(c.get("model", "?"))
    if real:
        return f"{c.get('model')} + {c.get('depth')} linear, {c.get('dataset')}"
    return f"UFM {c.get('activation')}/{c.get('loss')}, K={c.get('K')}, L={c.get('depth')}"


def _short_name(config: Mapping[str, Any]) -> str:
    """The run's ``name`` if it has one, else its model in a few characters
    (``linear/mse K3 L3``, ``resnet20 digits``); at most MAX_NAME characters."""
    c = config
    name = " ".join(str(c.get("name") or "").split())
    if not name:
        real = REAL_NETWORK.get(c.get("model", "ufm"), True)
        name = (f"{c.get('model')} {c.get('dataset')}" if real
                else f"{c.get('activation')}/{c.get('loss')} K{c.get('K')} L{c.get('depth')}")
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def label(run_id: str, config: Mapping[str, Any], state: str) -> str:
    """A run in one short line: name, short id (the time of day it was made and its 4-hex tag),
    state mark (:data:`STATE_MARKS`): ``linear/mse K3 L3 · 12:51 d4e3 ✓``. Runs made in the
    same second differ in their tag; an id not in the usual form is shown whole."""
    m = _RUN_ID.match(run_id)
    short = f"{m[1]}:{m[2]} {m[3]}" if m else run_id
    return f"{_short_name(config)} · {short} {STATE_MARKS.get(state, '?')}"


def run_label(summary: RunSummary) -> str:
    """:func:`label` of a row of the runs table (what the run pickers show)."""
    return label(summary.id, summary.config, summary.state)


def show_run_header(run: Run, step: int | None = None) -> None:
    """One line under a page's title naming the run it shows: label, model, state, the step
    shown (of the run's total) and its full id."""
    status = run.status()
    try:
        config: dict[str, Any] = run.config().to_dict()
    except ConfigError:  # the page says why it cannot go on; the header still names the run
        config = {}
    total = status["total_steps"]
    at = f"step {step:,} of {total:,}" if step is not None and total else (
        f"step {step:,}" if step is not None else "")
    parts = [f"**{label(run.id, config, status['state'])}**", status["state"],
             describe_model(config) if config else "", at, f"`{run.id}`"]
    # markdown, not a caption: the page's own captions stay first among its captions
    st.markdown(f":small[{' · '.join(p for p in parts if p)}]")


def _param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value if value else None


def _pick_hint(where) -> str:
    return "pick one in the sidebar" if where is st.sidebar else "pick one below"


def _listing(values: Sequence[int | str], most: int = 8) -> str:
    """``0, 10, 100, …, 3000``: the first values and the last of a long list."""
    items = [str(v) for v in values]
    if len(items) > most:
        items = [*items[: most - 2], "…", items[-1]]
    return ", ".join(items)


def select_run(rows: list[RunSummary] | None = None, where=st.sidebar) -> Run | None:
    """Run picker bound to the ``run`` query parameter (no parameter: the newest run). None when
    there is no run, or the link named a run that is not there (then a warning says so and the
    picker waits for a choice)."""
    rows = all_runs() if rows is None else rows
    if not rows:
        where.info("No runs yet: start one on the **Train** page.")
        return None
    ids = [r.id for r in rows]
    wanted = _param("run")
    missing = wanted is not None and wanted not in ids
    if missing:
        st.warning(
            f"Run `{shown(wanted)}` was not found in the runs folder; {_pick_hint(where)}.",
            icon=":material/search_off:",
        )
    labels = {r.id: run_label(r) for r in rows}
    choice = where.selectbox(
        "Run",
        ids,
        index=None if missing else ids.index(wanted) if wanted else 0,
        format_func=lambda i: labels.get(i, str(i)),
        placeholder="Pick a run",
        key="run_pick_missing" if missing else "run_pick",
    )
    run = find(choice) if choice in ids else None
    if run is None:
        return None
    if choice != wanted:
        st.query_params["run"] = choice
        st.query_params.pop("step", None)
        if missing:
            st.rerun()  # the page again, with the picked run as a normal link
    return run


def select_step(run: Run, where=st.sidebar) -> int | None:
    """Checkpoint picker bound to the ``step`` query parameter (no parameter: the last). None
    when the run has no checkpoint yet, or the link named a step the run does not have (a
    warning lists the steps it has)."""
    steps = run.checkpoints()
    if not steps:
        where.warning("This run has no checkpoint yet.")
        return None
    wanted = _param("step")
    missing = wanted is not None and not (wanted.isdigit() and int(wanted) in steps)
    if missing:
        st.warning(
            f"Checkpoint step `{shown(wanted)}` does not exist in run `{run.id}`: it has steps "
            f"{_listing(steps)}; {_pick_hint(where)}.",
            icon=":material/search_off:",
        )
    step = where.selectbox(
        "Checkpoint step",
        steps,
        index=None if missing else steps.index(int(wanted)) if wanted else len(steps) - 1,
        placeholder="Pick a checkpoint",
        key=f"step_pick_{run.id}" + ("_missing" if missing else ""),
    )
    if step not in steps:
        return None
    if str(step) != wanted:
        st.query_params["step"] = str(step)
        if missing:
            st.rerun()
    return int(step)


def select_layer(depth: int, where=st.sidebar) -> int | None:
    """Layer picker 1..L bound to the ``layer`` query parameter (no parameter: the layer picked
    last in this session if the run has it, else layer 3, or L if smaller). None when the link
    named a layer outside 1..L (a warning gives the range)."""
    layers = list(range(1, depth + 1))
    linked = wanted = _param("layer")
    if wanted is None and st.session_state.get(LAST_LAYER) in layers:
        wanted = str(st.session_state[LAST_LAYER])  # the layer picked on the previous page
    missing = wanted is not None and not (wanted.isdigit() and int(wanted) in layers)
    if missing:
        st.warning(
            f"Layer `{shown(wanted)}` is out of range 1–{depth}; {_pick_hint(where)}.",
            icon=":material/search_off:",
        )
    layer = where.selectbox(
        "Layer l (W_l)",
        layers,
        index=None if missing else int(wanted) - 1 if wanted else min(3, depth) - 1,
        placeholder="Pick a layer",
        key="layer_pick_missing" if missing else "layer_pick",
    )
    if layer not in layers:
        return None
    st.session_state[LAST_LAYER] = int(layer)
    if str(layer) != linked:
        st.query_params["layer"] = str(layer)
        if missing:
            st.rerun()
    return int(layer)


def select_run_config() -> tuple[Run, RunConfig]:
    """The sidebar's run picker and the picked run's config. Stops the page with a hint when
    there is no run (or the link named one that is not there), and with one line when the run's
    config.json is damaged (never a traceback)."""
    run = select_run()
    if run is None:
        st.stop()
    try:
        return run, run.config()
    except ConfigError as exc:
        st.error(f"Run `{run.id}` cannot be analysed: {exc}")
        st.stop()
        raise  # st.stop() raises; this line only tells the type checker


def select_analysis_target() -> tuple[Run, int, RunConfig, int]:
    """Sidebar pickers of the analysis pages: (run, checkpoint step, its config, layer).
    Stops the page with a hint when there is no run or no checkpoint yet, or when the link
    named a run, step or layer that is not there (until one is picked)."""
    run, cfg = select_run_config()
    step = select_step(run)
    if step is None:
        st.stop()
    show_run_header(run, step)
    layer = select_layer(cfg.depth)
    if layer is None:
        st.stop()
    return run, step, cfg, layer
