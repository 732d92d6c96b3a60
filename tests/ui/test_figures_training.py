"""ui/figures/training.py: curves against step (metrics, accuracy, a real network's two losses,
analysis series)."""

from __future__ import annotations

from ui.figures import training
from ui.figures.common import COLORS, PRED_STYLE


def _real_rows() -> list[dict]:
    return [
        {
            "step": s,
            "epoch": s / 2,
            "loss": 1.0 / (s + 1),
            "batch_loss": 1.2 / (s + 1),
            "train_acc": min(1.0, 0.1 + 0.2 * s),
            "test_acc": 0.1 + 0.1 * s,
        }
        for s in range(5)
    ]


def test_plot_builders_for_real_rows() -> None:
    rows = _real_rows()
    assert training.has_accuracy(rows)
    assert not training.has_accuracy([{"step": 0, "loss": 1.0}])
    acc = training.accuracy_curves(rows)
    assert [t.name for t in acc.data] == ["train", "test"]
    assert [c[1] for c in acc.data[0].customdata] == [0.0, 0.5, 1.0, 1.5, 2.0]
    no_test = training.accuracy_curves([{**r, "test_acc": None} for r in rows])
    assert [t.name for t in no_test.data] == ["train"]
    loss = training.batch_loss_curves(rows, reference=0.1)
    assert [list(t.y) for t in loss.data] == [
        [r["loss"] for r in rows],
        [r["batch_loss"] for r in rows],
    ]
    assert loss.layout.yaxis.type == "log"


def test_metric_curves_log_axes_gaps_and_reference() -> None:
    rows = [{"step": s, "loss": v} for s, v in [(0, 1.0), (10, 0.0), (1000, 1e-3)]]
    fig = training.metric_curves({"run a": rows, "run b": rows[:2]}, reference=1e-2)
    assert [t.name for t in fig.data] == ["run a", "run b"]
    assert [t.line.color for t in fig.data] == COLORS[:2]
    assert list(fig.data[0].x) == [0.5, 10, 1000]  # step 0 at 0.5 on the log axis
    assert list(fig.data[0].y) == [1.0, None, 1e-3]  # a zero is a gap on the log axis
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    (ref,) = fig.layout.shapes
    assert ref.y0 == 1e-2 and ref.line.dash == PRED_STYLE["dash"]
    assert fig.layout.annotations[0].text == "closed form"


def test_layer_curves_one_line_per_layer() -> None:
    rows = [{"step": s, "nc1": [1.0 / (s + 1), 2.0]} for s in range(3)]
    fig = training.layer_curves(rows, "nc1", "NC1", layer_names=["W_1", "W_2"])
    assert [t.name for t in fig.data] == ["W_1", "W_2"]
    assert fig.layout.title.text == "NC1" and fig.layout.xaxis.title.text == "step"


def test_series_lines_reference_and_markers() -> None:
    fig = training.series_lines([0, 5], {"f": [0.5, 1.0]}, "Series", "f", reference=1.0)
    assert fig.data[0].mode == "lines+markers" and fig.layout.yaxis.title.text == "f"
    assert fig.layout.annotations[0].text == "predicted"
