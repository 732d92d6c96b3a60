"""Sweeps: create, launch and monitor a grid of runs; the phase diagram and the depth, width and
regularisation studies drawn from its summary table."""

import os

import pandas as pd
import streamlit as st

from dufm_core import sweeps
from dufm_core.process import executors
from ui import charts, figures, links, shell, state

shell.ensure_shell(__file__)
st.title("Sweeps")
st.caption(
    "A sweep is a TOML spec: a `[base]` config and a `[grid]` of axes, run as a product. It runs "
    "in the background (`python -m dufm_core sweep`), so this page can be closed; its members are "
    "ordinary runs that every page can open. Format and the Ray cluster how-to: docs/sweeps.md."
)
root = state.runs_dir()


@st.cache_resource(max_entries=8, show_spinner="Validating the spec…")
def _validated(text: str, cap: str | None) -> tuple[sweeps.SweepSpec | None, str | None]:
    """The pasted spec validated once per text (a 10 000-member grid takes seconds), or its
    error; ``cap`` ($DUFM_MEMORY_CAP) is part of the key because the members are checked
    against it."""
    try:
        return sweeps.load_spec("<pasted>", text), None
    except sweeps.SpecError as exc:
        return None, str(exc)


with st.expander("New sweep", expanded=not sweeps.list_sweeps(root)):
    presets = sweeps.presets.spec_files()
    preset = st.selectbox("Start from", [*presets, "custom"], key="sweep_preset")
    default = presets[preset].read_text() if preset in presets else sweeps.presets.TEMPLATE
    text = st.text_area("Spec (TOML)", value=default, height=300, key=f"spec_{preset}")
    c1, c2 = st.columns(2)
    executor = c1.radio("Executor", ["local", "ray"], horizontal=True, key="sweep_executor")
    jobs = c2.number_input("Members at once", 1, 64, value=None, placeholder="all cores")
    spec = None
    ray_missing = executors.ray_missing() if executor == "ray" else None
    if ray_missing:
        st.warning(ray_missing)
    spec, error = _validated(text, os.environ.get("DUFM_MEMORY_CAP"))
    if spec is not None:
        where = sweeps.sweep_dir(spec.name, root)
        st.success(f"{len(spec.members())} members over {', '.join(spec.axes)}; folder `{where}`")
    else:
        st.error(error)
    if st.button("Launch sweep", type="primary", disabled=spec is None or bool(ray_missing)):
        try:
            st.query_params["sweep"] = sweeps.launch_sweep(spec, root, executor, jobs).name
            st.toast(f"started sweep {spec.name}")
        except RuntimeError as exc:
            st.error(str(exc))

listing = {s["name"]: s for s in sweeps.list_sweeps(root)}
if not listing:
    st.info("No sweeps yet: pick a preset above and launch it (about a minute on 2 cores).")
    st.stop()
ids = list(listing)
wanted = st.query_params.get("sweep")
missing = bool(wanted) and wanted not in ids
if missing:
    st.warning(
        f"Sweep `{state.shown(wanted)}` was not found in the runs folder; pick one below.",
        icon=":material/search_off:",
    )
pick = st.selectbox(
    "Sweep",
    ids,
    index=None if missing else ids.index(wanted) if wanted else 0,
    format_func=lambda n: f"{n} · {listing[n]['driver']}" if n in listing else str(n),
    placeholder="Pick a sweep",
    key="sweep_pick_missing" if missing else "sweep_pick",
)
if pick not in listing:  # nothing picked yet, or a value that is not one of the choices
    st.stop()
if pick != wanted:
    st.query_params["sweep"] = pick
    if missing:
        st.rerun()
folder = sweeps.sweep_dir(pick, root)


@st.fragment(run_every=2.0)
def monitor() -> None:
    """Member states and training progress; refreshes itself every 2 s."""
    table = sweeps.progress_table(folder)
    done = sum(r["state"] in sweeps.ENDED_STATES for r in table)
    driver = sweeps.driver_status(folder).get("state")
    st.progress(done / max(len(table), 1), text=f"driver {driver} · {done}/{len(table)} ended")
    progress = st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)
    frame = pd.DataFrame(table)
    if "run" in frame:  # a member's run (in the runs folder) opens on its live view
        frame.insert(0, "open", [links.url("train", run=r) if r else None for r in frame["run"]])
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": progress,
            "open": st.column_config.LinkColumn(
                "open", display_text=":material/open_in_new:", width="small",
                help="The member's run on the Train page; from there, its analysis pages",
            ),
        },
    )


monitor()
c1, c2, c3 = st.columns(3)
if c1.button("Cancel sweep"):
    st.toast(sweeps.cancel_sweep(folder))
if c2.button("Rerun (skips ended members)"):
    try:
        sweeps.launch_sweep(sweeps.load_spec(folder / "spec.toml"), root)
        st.toast("restarted")
    except (RuntimeError, sweeps.SpecError) as exc:
        st.error(str(exc))
if (folder / "summary.csv").is_file():
    csv = (folder / "summary.csv").read_text()
    c3.download_button("summary.csv", csv, file_name=f"{pick}-summary.csv", mime="text/csv")

rows = [r for r in sweeps.summary_rows(folder) if r["state"] == "finished"]
axes = sweeps.manifest(folder)["axes"]
kinds = sweeps.studies(rows, axes)
if not rows or not kinds:
    st.caption(
        "Studies appear here once members have finished: a λ axis gives the phase diagram (or "
        "the sensitivity study for ReLU/CE); depth and width axes their own."
    )
    st.stop()


def show(title: str, figs: list, note: str | None = None) -> None:
    """A study: its heading, an optional note, and its figures two per row."""
    st.subheader(title)
    if note:
        st.caption(note)
    cols = st.columns(2)
    for i, fig in enumerate(figs):
        charts.show(cols[i % 2], fig, f"sweep {title} {i + 1}")


if "phase" in kinds:
    lin = [r for r in rows if r["loss"] == "mse" and r["activation"] == "linear"]
    curves = sweeps.phase_curves(lin)
    show(
        "Phase diagram (linear MSE)",
        [figures.sweep_phase_gamma(lin, curves), figures.sweep_phase_outliers(lin, curves)],
        "Hollow markers: each class's own output scale (partially collapsed solutions).",
    )
if "depth" in kinds:
    has_full = any(r.get("full_plus_measured") is not None for r in rows)
    show(
        "Depth study: full Hessian against layer-wise (docs/theory.md §4.5)",
        [figures.sweep_depth_outliers(rows), figures.sweep_depth_split(rows)],
        None if has_full else "Set `[analysis] full_hessian = true` for the full-Hessian part.",
    )
if "width" in kinds:
    show("Width study: d < K, d = K, d > K", figures.sweep_width_figures(rows, int(rows[0]["K"])))
if "sensitivity" in kinds:
    x = "lam" if "lam" in axes else next(a for a in axes if a.startswith("lam"))
    show(
        "Regularisation sensitivity (ReLU and CE: no global closed form)",
        figures.sweep_sensitivity_figures(rows, x),
    )
