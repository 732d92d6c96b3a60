"""Runs: the run store as a table; compare curves; download; delete."""

import json

import pandas as pd
import streamlit as st

from dufm_core import ConfigError, RunConfig, kinds
from dufm_core.process import jobs
from dufm_core.store import open_run
from ui import charts, docs, exports, figures, links, shell, state

shell.ensure_shell(__file__)
st.title("Runs")
st.caption(
    f"Run store: `{state.runs_dir().resolve()}` (set `DUFM_RUNS_DIR` to change it). "
    "γ measured is the mean diagonal of the output class means; predicted is the closed "
    "form (linear MSE; for real networks at λ_H,UFM = λ_H/N). Accuracies (real networks) are "
    "the last logged step's, in eval mode. A row's ↗ opens the run's live view (from there, its "
    "analysis pages)."
)
rows = state.all_runs()
if not rows:
    st.info(
        docs.linkify(
            "No runs yet. One click trains the paper's linear UFM (docs/theory.md case A, a few "
            "seconds):"
        )
    )
    if st.button("Run the paper's linear UFM", type="primary"):
        from dufm_core import RunConfig
        from dufm_core.presets import PRESETS

        try:
            run = jobs.launch(RunConfig(**PRESETS["paper-linear"]), state.runs_dir())
        except (ValueError, OSError) as exc:  # a full disk, a memory cap set very low
            st.error(str(exc))
            st.stop()
        st.session_state["watch"] = run.id
        st.switch_page("pages/train.py", query_params={"run": run.id})  # lands on its live view
    st.stop()


def _gamma_pred(c: dict) -> float | None:
    """Closed-form γ of the run's UFM (λ_H/N for a real network), None where none applies."""
    try:
        return kinds.predict_for(RunConfig.from_dict(c)).gamma()
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


table = []
for r in rows:
    last = open_run(r.path).metrics()[-1:] if r.state != "queued" else []
    c = r.config
    real = kinds.get(c.get("model", "ufm")).real_network
    table.append(
        {
            "run": r.id,
            "open": links.url("train", run=r.id),  # a link to the run's live view
            "state": r.state,
            "progress": r.step / r.total_steps if r.total_steps else 0.0,
            "model": c.get("model", "ufm"),
            "dataset": c.get("dataset") if real else None,
            "K": c.get("K"),
            "n": c.get("n"),
            "L": c.get("depth"),
            "width": str(c.get("width")),
            "act/loss": f"{c.get('activation')}/{c.get('loss')}",
            "λ_W": str(c.get("lam_w")),
            "λ_H": c.get("lam_h"),
            "loss": r.loss,
            "train_acc": last[0].get("train_acc") if last else None,
            "test_acc": last[0].get("test_acc") if last else None,
            "γ measured": last[0].get("gamma_measured") if last else None,
            "γ predicted": _gamma_pred(c),
        }
    )
df = pd.DataFrame(table)
if not any(kinds.get(r.config.get("model", "ufm")).real_network for r in rows):
    df = df.drop(columns=["model", "dataset", "train_acc", "test_acc"])  # a UFM-only store
st.dataframe(
    df,
    hide_index=True,
    width="stretch",
    column_config={
        "open": st.column_config.LinkColumn(
            "open",
            display_text=":material/open_in_new:",
            help="The run's live view on the Train page; from there, its analysis pages",
            width="small",
        ),
        "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
        "loss": st.column_config.NumberColumn(format="%.10f"),
        "γ measured": st.column_config.NumberColumn(format="%.8f"),
        "γ predicted": st.column_config.NumberColumn(format="%.8f"),
        "train_acc": st.column_config.NumberColumn("train acc", format="%.4f"),
        "test_acc": st.column_config.NumberColumn("test acc", format="%.4f"),
    },
)

st.subheader("Compare")
ids = [r.id for r in rows]
chosen = st.multiselect("Runs to compare", ids, default=ids[: min(2, len(ids))])
compared = {i: run for i in chosen if (run := state.find(i)) is not None}  # a form value: checked
if compared:
    series = {i: run.metrics() for i, run in compared.items()}
    c1, c2 = st.columns(2)
    charts.show(c1, figures.metric_curves(series, "loss", title="Loss"), "compare_loss")
    charts.show(
        c2,
        figures.metric_curves(series, "grad_norm", title="Gradient norm"), "compare_grad_norm"
    )

st.subheader("One run")
pick = st.selectbox("Run", ids, key="runs_pick")
run = state.find(pick)
if run is None:
    st.stop()
metrics = run.metrics()
c1, c2, c3 = st.columns(3)
if metrics:
    flat = exports.tidy_metrics(metrics)  # one column per layer value
    c1.download_button(
        "metrics.csv", flat.to_csv(index=False), file_name=f"{pick}-metrics.csv", mime="text/csv"
    )
try:
    c2.download_button(
        "config.json",
        json.dumps(run.config().to_dict(), indent=2),
        file_name=f"{pick}-config.json",
        mime="application/json",
    )
except ConfigError as exc:  # a damaged config.json: the run can still be deleted
    c2.warning(str(exc))
reports = sorted(run.analysis_dir.glob("step_*.json")) if run.analysis_dir.is_dir() else []
if reports:
    c3.download_button(
        "latest report.json",
        reports[-1].read_text(),
        file_name=f"{pick}-{reports[-1].name}",
        mime="application/json",
    )
st.caption(f"State: {run.status().get('state')}. " + (run.status().get("error") or ""))
if run.status().get("state") in ("queued", "running"):
    if st.button("Cancel this run"):
        st.toast(jobs.cancel(run))
        st.rerun()
else:
    confirm = st.checkbox(f"Yes, delete {pick} and all its files", key=f"confirm_{pick}")
    if st.button("Delete run", disabled=not confirm):
        try:
            jobs.delete(run)
        except RuntimeError as exc:  # something still trains it (its lock is held)
            st.error(str(exc))
        else:
            st.toast(f"deleted {pick}")
            st.rerun()
