"""The Reproduction checklist page's parts (pages/checklist.py stays thin): the runs it uses with
their training progress, the one button that launches the missing ones, and the table of claims.

Every number comes from :mod:`dufm_core.checklist`: it finds the checklist runs in the runs
folder, launches the missing ones as background workers and measures each claim on its run's
analysis report (cached in the run folder after the first look).
"""

from __future__ import annotations

import streamlit as st

from dufm_core import checklist
from dufm_core.config import ConfigError
from dufm_core.process import jobs
from ui import docs, links, live, state

# Material icons, not emoji: a browser without an emoji font (headless Chromium) shows boxes
RESULT = {"pass": ":green[:material/check_circle:]", "fail": ":red[:material/cancel:]",
          "not run yet": ":gray[:material/remove:]", "training": ":blue[:material/schedule:]",
          "error": ":orange[:material/warning:]"}
WIDTHS = [4, 4, 3, 2, 1.2, 2.7]  # claim, measured, predicted, tolerance, result, shown on
REFRESH_S = 1.0  # how often the progress of training runs is redrawn


def intro() -> None:
    """What the page is for and which runs it uses."""
    docs.caption(
        "Each row is one headline claim of Garrod & Keating (arXiv 2404.06106), measured on a "
        "run of the paper's presets and set beside the closed form of docs/theory.md "
        "(prediction, tolerance, pass or fail), with a link to the page that shows it. "
        "**Run the checklist** trains the presets that have no finished run yet in the "
        "background (about 20 s on an idle CPU); finished runs are reused, never trained again."
    )
    notes = [f"`{checklist.run_config(k).name}`: {s.note}" for k, s in checklist.RUNS.items()
             if s.note]
    if notes:
        st.caption("Shortened: " + "; ".join(notes) + ".")


def launch_button(states: dict[str, checklist.RunState]) -> None:
    """"Run the checklist": queue the missing runs (background workers), then redraw."""
    todo = checklist.missing(states)
    clicked = st.button(
        "Run the checklist", type="primary", icon=":material/checklist:",
        help=("Trains " + ", ".join(todo) + " in the background" if todo
              else "Every checklist run exists: the table below is up to date"),
    )
    if not clicked:
        return
    if not todo:
        st.toast("Every checklist run has been trained already.")
        return
    try:
        launched = checklist.launch_missing(state.runs_dir(), launch=jobs.launch)
    except (ConfigError, OSError) as exc:  # the memory cap, a full disk: one line
        st.error(str(exc))
        return
    st.toast(f"Started {len(launched)} run(s): " + ", ".join(r.id for r in launched))
    st.rerun()


def _progress(states: dict[str, checklist.RunState]) -> None:
    """One progress bar per checklist run that trains now; the whole page reruns when the last
    one ends (its rows then fill in)."""
    fresh = checklist.find_runs(state.runs_dir())
    training = {k: s for k, s in fresh.items() if s.active is not None}
    for key, s in training.items():
        assert s.active is not None
        status = s.status or {}
        total, step = status.get("total_steps") or 0, status.get("step") or 0
        pace = live.pace_text(s.active.metrics(), status, total, active=True)
        st.progress(min(step / total, 1.0) if total else 0.0,
                    text=f"{key}: {status.get('state')}, step {step:,} of {total:,}"
                    + (f" · {pace}" if pace else ""))
    if not training and any(s.active is not None for s in states.values()):
        st.rerun(scope="app")  # finished: analyse and fill in the rows


def progress(states: dict[str, checklist.RunState]) -> None:
    """The training runs' progress, redrawn every :data:`REFRESH_S` while any trains."""
    active = any(s.active is not None for s in states.values())
    if active:
        st.fragment(_progress, run_every=REFRESH_S)(states)


def evaluate(states: dict[str, checklist.RunState]) -> list[checklist.Row]:
    """The rows, with a progress bar while reports are computed (cached ones are read)."""
    bar = st.empty()

    def shown(msg: str, frac: float) -> None:
        if frac < 1.0:
            bar.progress(min(max(frac, 0.0), 1.0), text=msg.capitalize() + "…")

    rows = checklist.evaluate(state.runs_dir(), states=states, progress=shown)
    bar.empty()
    return rows


def summary(rows: list[checklist.Row]) -> None:
    """One line: how many claims pass, fail or wait for their run."""
    counts = {k: sum(r.state == k for r in rows) for k in RESULT}
    parts = [f"**{counts['pass']} of {len(rows)} claims pass**"]
    parts += [f"{counts[k]} {k}" for k in ("fail", "training", "not run yet", "error") if counts[k]]
    st.markdown(" · ".join(parts))


def table(rows: list[checklist.Row]) -> None:
    """The checklist: claim (and what it means), measured, predicted, tolerance, result, link."""
    head = st.columns(WIDTHS)
    for col, name in zip(head, ["claim", "measured", "predicted", "tolerance", "result",
                                "shown on"], strict=True):
        col.markdown(f"**{name}**")
    for row in rows:
        c = st.container(border=True).columns(WIDTHS)
        c[0].markdown(f"**{row.claim.title}**")
        c[0].caption(row.claim.caption)
        if row.outcome is not None:
            c[1].markdown(row.outcome.measured_text)
            if row.outcome.detail:
                c[1].caption(row.outcome.detail)
            c[2].markdown(row.outcome.predicted_text)
        else:
            c[1].markdown(f"*{row.message}*")
        c[3].markdown(row.claim.tolerance_text)
        c[4].markdown(f"{RESULT[row.state]} {row.state}")
        with c[5]:
            if row.run_id is not None:
                links.page_link(row.claim.page, row.claim.page_label, None, **row.query())
            else:
                st.markdown("—")


def show() -> None:
    """The whole page body."""
    intro()
    jobs.pump(state.runs_dir())  # start queued runs if a worker slot is free
    states = checklist.find_runs(state.runs_dir())
    launch_button(states)
    progress(states)
    rows = evaluate(states)
    summary(rows)
    table(rows)
