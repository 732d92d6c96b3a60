"""ui/exports.py: a run's metrics rows as one tidy table, one value per cell."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd

from dufm_core import RunConfig, train
from ui.exports import tidy_metrics


def test_ufm_rows_spread_per_layer_lists_over_columns(tmp_path: Path) -> None:
    cfg = RunConfig(K=2, n=2, width=3, depth=2, steps=20, log_points=3, checkpoint_points=2)
    rows = train(cfg, runs_dir=tmp_path, progress=None).run.metrics()
    df = tidy_metrics(rows)
    L = cfg.depth
    assert list(df.columns[:5]) == ["step", "loss", "fit", "reg", "grad_norm"]
    for name in ("nc1", "nc1_fro", "nc1_ratio", "nc2"):  # feature index 1..L+1 (last: Z)
        assert [c for c in df.columns if c.startswith(name + "_l")] == [
            f"{name}_l{l}" for l in range(1, L + 2)
        ]
    assert [c for c in df.columns if c.startswith("nc3_")] == ["nc3_l1", "nc3_l2"]
    # sv: W_1 is 3×3 (K+1 = 3 values kept), W_2 is K×3 (K values)
    assert [c for c in df.columns if c.startswith("sv_")] == [
        "sv_l1_1", "sv_l1_2", "sv_l1_3", "sv_l2_1", "sv_l2_2"
    ]  # fmt: skip
    assert len(df) == len(rows)
    assert df["nc1_l3"].tolist() == [r["nc1"][L] for r in rows]
    assert df["sv_l2_1"].tolist() == [r["sv"][1][0] for r in rows]
    assert df["gamma_measured"].tolist() == [r["gamma_measured"] for r in rows]
    assert not any(isinstance(v, list) for v in df.to_numpy().ravel())  # one value per cell


def test_real_network_rows_and_missing_values_give_empty_cells() -> None:
    """Rows shaped like dufm_core/training/real.py's: epoch, lr, accuracies (test_acc None
    without a test set), batch_loss; then a diverged step that logged its loss split only."""
    full = {"step": 0, "epoch": 0.0, "lr": 0.1, "loss": 1.2, "fit": 1.0, "reg": 0.2,
            "nc1": [0.5, 0.4], "nc3": [0.3], "sv": [[2.0, 1.0, 0.5]], "gamma_measured": 0.1,
            "train_acc": 0.25, "test_acc": None, "batch_loss": 1.3, "grad_norm": 4.0,
            "time": 0.5}  # fmt: skip
    diverged = {"step": 10, "loss": None, "fit": math.nan, "reg": 0.2, "time": 1.0}
    df = tidy_metrics([full, diverged])
    assert list(df.columns) == [
        "step", "epoch", "lr", "loss", "fit", "reg", "nc1_l1", "nc1_l2", "nc3_l1", "sv_l1_1",
        "sv_l1_2", "sv_l1_3", "gamma_measured", "train_acc", "test_acc", "batch_loss",
        "grad_norm", "time",
    ]  # fmt: skip
    csv = df.to_csv(index=False).splitlines()
    assert csv[1].split(",")[14] == ""  # test_acc None
    cells = dict(zip(csv[0].split(","), csv[2].split(","), strict=True))
    assert cells["step"] == "10" and cells["reg"] == "0.2"
    assert all(cells[c] == "" for c in ("loss", "fit", "nc1_l1", "sv_l1_3", "train_acc"))
    back = pd.read_csv(io.StringIO(df.to_csv(index=False)))
    assert back.shape == (2, 18) and back["sv_l1_2"][0] == 1.0


def test_columns_follow_first_appearance_and_layer_order() -> None:
    rows = [{"step": 1, "b": 1.0}, {"a": [1, 2], "step": 2, "b": 2.0, "c": {"x": 1, "y": [3]}},
            {"step": 3, "a": [float(i) for i in range(11)]}]  # fmt: skip
    df = tidy_metrics(rows)
    # step first; a's layers in numeric order (l10 after l2), even those first seen later
    a_cols = [f"a_l{i}" for i in range(1, 12)]
    assert list(df.columns) == ["step", "b", *a_cols, "c.x", "c.y_1"]
    assert df["a_l11"].isna().tolist() == [True, True, False]
    assert tidy_metrics([]).empty
