"""Compare: several runs side by side (issue #13 item 2): their config diff and any logged or
analysed series overlaid, with the closed-form references and runs that differ only by seed as
mean ± spread bands. The runs are in the URL (``?runs=id1,id2``) so a comparison can be shared;
the data assembly is ``ui.compare``, the figure ``ui.figures.compare``."""

import pandas as pd
import streamlit as st

from dufm_core import ConfigError, reports
from dufm_core.checkpoints import CheckpointError
from ui import charts, compare, docs, figures, shell, state

shell.ensure_shell(__file__)
st.title("Compare runs")
docs.caption(
    "Pick runs to see how their configs differ and to overlay any series they logged "
    "(metrics.jsonl) or that their checkpoints' analysis holds (analysis/series.json). Dashed: "
    "the closed form the series tends to, where the theory applies to the run (linear MSE, "
    "every λ positive; docs/theory.md §3–§4). The link of this page names its runs."
)
rows = state.all_runs()
if not rows:
    st.info("No runs yet: start one on the **Train** page.")
    st.stop()
by_id = {r.id: r for r in rows}
labels = {r.id: state.run_label(r) for r in rows}
wanted = compare.parse_ids(st.query_params.get("runs"))
missing = [i for i in wanted if i not in by_id]
if missing:
    st.warning(compare.missing_message(missing, state.shown), icon=":material/search_off:")
if wanted:
    default = [i for i in wanted if i in by_id]
else:
    has_metrics = {r.id: compare.has_metrics(r) for r in rows[:20]}
    default = compare.default_ids(rows, has_metrics)
chosen = st.multiselect(
    "Runs", list(by_id), default=default, format_func=lambda i: labels.get(i, str(i)),
    placeholder="Pick runs to compare", key="compare_runs",
)
chosen = [i for i in chosen if i in by_id]  # a form value: checked
if chosen != (default if missing else wanted):  # the link keeps a bad id until one picks
    st.query_params["runs"] = ",".join(chosen)
if not chosen:
    st.info("Pick one or more runs to compare.")
    st.stop()

runs = {i: compare.load_run(by_id[i]) for i in chosen}
configs = {i: r.config for i, r in runs.items()}
names = compare.unique(compare.legend_names(configs))

st.subheader("Config")
show_all = st.toggle("Show every field", value=False, help="Off: only the fields that differ")
table = compare.config_table(configs, names, show_all=show_all)
if table["field"]:
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch")
else:
    st.caption("The chosen runs have the same config." if len(chosen) > 1 else
               "One run: turn on *Show every field* to see its config.")

st.subheader("Series")
all_series = {i: compare.run_series(r) for i, r in runs.items()}
keys = compare.available(all_series)
if not keys:
    st.info("The chosen runs have logged no metrics yet.")
    st.stop()
wanted_series = st.query_params.get("series")
if wanted_series and wanted_series not in keys:
    st.warning(f"Series `{state.shown(wanted_series)}` is not among the chosen runs' series; "
               "pick one below.", icon=":material/search_off:")
    wanted_series = None
c1, c2, c3 = st.columns([3, 1, 1])
first = wanted_series or ("loss" if "loss" in keys else keys[0])
key = c1.selectbox("Series", keys, index=keys.index(first), format_func=compare.describe,
                   key="compare_series")
if key != first:  # the link names the series too (a bad one stays until the visitor picks)
    st.query_params["series"] = key
longest = max((max(s[key][0], default=0) for s in all_series.values() if key in s), default=0)
log_x = c2.toggle("log x", value=longest >= 100, key="compare_log_x")
log_y = c3.toggle("log y", value=compare.positive_series(key), key=f"compare_log_y_{key}")
groups = compare.seed_groups(configs)
grouped, spread, members = False, compare.SPREADS[0], False
if any(len(g) > 1 for g in groups):
    g1, g2, g3 = st.columns([1, 1, 1])
    grouped = g1.toggle("Group seeds", value=True, key="compare_group",
                        help="Runs whose configs differ only by seed: one curve, mean ± spread")
    spread = g2.radio("Spread", compare.SPREADS, horizontal=True, disabled=not grouped,
                      help="The band: min to max over the seeds, or mean ± 1 (population) std")
    members = g3.toggle("Show each run", value=False, disabled=not grouped)
lines, lacking = compare.build_lines(runs, key, grouped, spread, members, all_series)
charts.show(st, figures.compare_curves(lines, compare.title(key), key, log_x=log_x,
                                       log_y=log_y), f"compare_{key}")
notes = []
if grouped:
    notes.append(f"Bands: {spread} over the seeds, at the steps every seed logged.")
if not any(line.reference is not None for line in lines):
    notes.append("No closed form is drawn for this series and these runs.")
if lacking:
    notes.append("Not in: " + "; ".join(names[i] for i in lacking) + ".")
if notes:
    st.caption(" ".join(notes))
st.download_button("curves.csv", compare.lines_csv(lines, key), mime="text/csv",
                   file_name=f"compare-{key.replace('[', '_').replace(']', '')}.csv")

stale = [i for i in chosen if runs[i].state not in ("queued", "running")
         and compare.needs_series(runs[i], compare.checkpoints(by_id[i]))]
if stale:
    st.caption(
        "Analysed series (top-K² eigenvalues, outlier ratio, f_cc', the gradient's share in the "
        f"outlier space) need every checkpoint analysed; not yet done for "
        f"{'; '.join(names[i] for i in stale)} (`python -m dufm_core analyze RUN --all-steps`)."
    )
    if st.button(f"Analyse every checkpoint of {len(stale)} run(s)"):
        bar = st.progress(0.0, text="Analysing checkpoints…")
        failed = []
        for n, i in enumerate(stale):
            run = state.find(i)
            try:
                if run is not None:
                    reports.analyze_series(run, progress=lambda msg, f, n=n, i=i: bar.progress(
                        min((n + min(max(f, 0.0), 1.0)) / len(stale), 1.0),
                        text=f"{names[i]}: {msg}"))
            except (CheckpointError, ConfigError, OSError, ValueError) as exc:  # a damaged run
                failed.append(f"{names[i]}: {shell.flat(str(exc), 200)}")
        bar.empty()
        if failed:
            st.error("Could not analyse " + "; ".join(failed))
        else:
            st.rerun()
