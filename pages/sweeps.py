"""Sweeps: create, launch and monitor a grid of runs; the phase diagram and the depth, width and
regularisation studies drawn from its summary table."""

import pandas as pd
import streamlit as st

from dufm_core import plots, sweeps
from ui import shell, state

shell.ensure_shell(__file__)
st.title("Sweeps")
st.caption(
    "A sweep is a TOML spec: a `[base]` config and a `[grid]` of axes, run as a product. It runs "
    "in the background (`python -m dufm_core sweep`), so this page can be closed; its members are "
    "ordinary runs that every page can open. Format and the Ray cluster how-to: docs/sweeps.md."
)
root = state.runs_dir()

with st.expander("New sweep", expanded=not sweeps.list_sweeps(root)):
    presets = sweeps.presets()
    names = [*presets, "custom"]
    preset = st.selectbox("Start from", names, key="sweep_preset")
    default = (
        presets[preset].read_text()
        if preset in presets
        else (
            'name = "my-sweep"\n[base]\nK = 3\nn = 10\nwidth = 12\ndepth = 3\nsteps = 4000\n'
            "[grid]\nlam = [0.002, 0.02]\nseed = [0, 1]\n"
        )
    )
    text = st.text_area("Spec (TOML)", value=default, height=300, key=f"spec_{preset}")
    c1, c2 = st.columns(2)
    executor = c1.radio("Executor", ["local", "ray"], horizontal=True, key="sweep_executor")
    jobs = c2.number_input("Members at once", 1, 64, value=None, placeholder="all cores")
    spec, problem = None, None
    try:
        spec = sweeps.load_spec("<pasted>", text)
    except sweeps.SpecError as exc:
        problem = str(exc)
    if problem:
        st.error(problem)
    else:
        st.success(
            f"{len(spec.members())} members over {', '.join(spec.axes)}; "
            f"folder `{sweeps.sweep_dir(spec.name, root)}`"
        )
    if st.button("Launch sweep", type="primary", disabled=spec is None):
        try:
            folder = sweeps.launch_sweep(spec, root, executor=executor, jobs=jobs)
            st.query_params["sweep"] = folder.name
            st.toast(f"started sweep {folder.name}")
        except RuntimeError as exc:
            st.error(str(exc))

listing = sweeps.list_sweeps(root)
if not listing:
    st.info("No sweeps yet: pick a preset above and launch it (about a minute on 2 cores).")
    st.stop()
ids = [s["name"] for s in listing]
wanted = st.query_params.get("sweep")
drivers = {s["name"]: s["driver"] for s in listing}
pick = st.selectbox(
    "Sweep",
    ids,
    index=ids.index(wanted) if wanted in ids else 0,
    format_func=lambda n: f"{n} · {drivers[n]}",
)
st.query_params["sweep"] = pick
folder = sweeps.sweep_dir(pick, root)


@st.fragment(run_every=2.0)
def monitor() -> None:
    """Member states and progress; refreshes itself every 2 s."""
    rows = sweeps.summary_rows(folder)
    driver = sweeps.driver_status(folder)
    done = sum(r["state"] in ("finished", "diverged", "failed", "cancelled") for r in rows)
    st.progress(
        done / max(len(rows), 1),
        text=f"driver {driver.get('state')} · {done} of {len(rows)} members ended",
    )
    axes = sweeps.manifest(folder)["axes"]
    cols = [
        "member",
        *axes,
        "state",
        "step",
        "total_steps",
        "final_loss",
        "gamma_measured",
        "gamma_predicted",
        "outlier_count_max",
        "error",
        "run",
    ]
    df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows])
    df["progress"] = [
        (r["step"] or 0) / r["total_steps"] if r.get("total_steps") else 0.0 for r in rows
    ]
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0)
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
    c3.download_button(
        "summary.csv",
        (folder / "summary.csv").read_text(),
        file_name=f"{pick}-summary.csv",
        mime="text/csv",
    )

rows = [r for r in sweeps.summary_rows(folder) if r["state"] == "finished"]
axes = sweeps.manifest(folder)["axes"]
kinds = sweeps.studies(rows, axes)
if not rows or not kinds:
    st.caption(
        "Studies appear here once members have finished: a λ axis gives the phase "
        "diagram (or the sensitivity study for ReLU/CE); depth and width axes their own."
    )
    st.stop()
K = int(rows[0]["K"])
if "phase" in kinds:
    st.subheader("Phase diagram (linear MSE)")
    lin = [r for r in rows if r["loss"] == "mse" and r["activation"] == "linear"]
    curves = sweeps.phase_curves(lin)
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.sweep_phase_gamma(lin, curves), config=plots.CONFIG)
    c2.plotly_chart(plots.sweep_phase_outliers(lin, curves), config=plots.CONFIG)
if "depth" in kinds:
    st.subheader("Depth study: full Hessian against layer-wise (theory.md §4.5)")
    if not any(r.get("full_plus_measured") is not None for r in rows):
        st.caption("Set `[analysis] full_hessian = true` in the spec for the full-Hessian part.")
    c1, c2 = st.columns(2)
    c1.plotly_chart(plots.sweep_depth_outliers(rows), config=plots.CONFIG)
    c2.plotly_chart(plots.sweep_depth_split(rows), config=plots.CONFIG)
if "width" in kinds:
    st.subheader("Width study: d < K, d = K, d > K")
    c1, c2 = st.columns(2)
    c1.plotly_chart(
        plots.sweep_scatter(
            rows,
            "width",
            "gamma_measured",
            "γ against width",
            "γ",
            predicted="gamma_predicted",
            log_x=True,
            vline=K,
            vline_label="d = K",
        ),
        config=plots.CONFIG,
    )
    c2.plotly_chart(
        plots.sweep_scatter(
            rows,
            "width",
            "outlier_count_max",
            "Layer outliers against width",
            "outlier count",
            log_x=True,
            vline=K,
            vline_label="d = K",
            hline=K * K,
            hline_label="K²",
        ),
        config=plots.CONFIG,
    )
if "sensitivity" in kinds:
    st.subheader("Regularisation sensitivity (ReLU and CE: no global closed form)")
    for r in rows:
        r["model"] = f"{r['activation']}/{r['loss']}"
    x = "lam" if "lam" in axes else next(a for a in axes if a.startswith("lam"))
    c1, c2 = st.columns(2)
    for i, (y, title, log_y) in enumerate(
        [
            ("gamma_measured", "Mean diagonal output (γ for MSE)", False),
            ("outlier_count_max", "Layer outliers (most over layers)", False),
            ("f_mean", "Alignment: mean f_cc' over layers", False),
            ("nc1_max", "DNC1 (worst layer)", True),
        ]
    ):
        (c1 if i % 2 == 0 else c2).plotly_chart(
            plots.sweep_scatter(rows, x, y, title, group_by=("model",), log_x=True, log_y=log_y),
            config=plots.CONFIG,
        )
