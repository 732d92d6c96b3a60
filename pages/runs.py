"""Runs: every run folder in the runs store with its state and last loss."""

import pandas as pd
import streamlit as st

from dufm_core.store import default_runs_dir, list_runs

st.title("Runs")
runs_dir = default_runs_dir()
st.caption(f"Run store: `{runs_dir.resolve()}` (set `DUFM_RUNS_DIR` to change it).")
rows = list_runs(runs_dir)
if not rows:
    st.info(
        "No runs yet. Train the paper's linear UFM (theory.md case A, about 5 s on a laptop):\n\n"
        "```\npython -m dufm_core train --K 3 --n 40 --width 60 --depth 5 --lam 1e-2 "
        "--lr 0.2 --steps 10000\n```"
    )
else:
    df = pd.DataFrame(
        [
            {
                "run": r.id,
                "state": r.state,
                "progress": r.step / r.total_steps if r.total_steps else 0.0,
                "loss": r.loss,
                "K": r.config.get("K"),
                "L": r.config.get("depth"),
                "width": str(r.config.get("width")),
                "activation": r.config.get("activation"),
                "loss fn": r.config.get("loss"),
                "λ_W": str(r.config.get("lam_w")),
                "λ_H": r.config.get("lam_h"),
            }
            for r in reversed(rows)
        ]
    )
    st.dataframe(
        df,
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
            "loss": st.column_config.NumberColumn("loss", format="%.10f"),
        },
    )
