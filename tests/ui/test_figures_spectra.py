"""ui/figures/spectra.py and alignment.py: spectra beside their predicted values, heatmaps."""

from __future__ import annotations

import math

import numpy as np

from dufm_core.report_types import Report
from ui.figures import alignment, spectra
from ui.figures.common import PRED_STYLE


def test_binned_histogram_counts_zeros_and_marks_outliers() -> None:
    hist = {"edges": [-2, -1, 0, 1], "positive": [1, 0, 4], "negative": [2, 0, 0], "zeros": 7,
            "floor": 1e-12}
    fig = spectra.binned_histogram(hist, top=[10.0, 5.0, 0.1], n_outliers=2, predicted=[10.0])
    assert [t.name for t in fig.data] == ["λ > 0", "λ < 0", "top 2"]
    assert list(fig.data[0].y) == [1, None, 4]  # empty bins are gaps on the log axis
    assert list(fig.data[2].x) == [1.0, math.log10(5.0)]
    assert fig.layout.title.text.startswith("Spectrum — 7 eigenvalues are 0")
    assert fig.layout.shapes[0].x0 == 1.0  # the prediction at log10(10)


def test_top_eigenvalues_with_predictions_and_K2_line() -> None:
    fig = spectra.top_eigenvalues([5.0, 4.0, 3.0], [5.0, 4.0], K2=2)
    assert [t.name for t in fig.data] == ["measured", "predicted"]
    assert fig.data[1].marker.symbol == "circle-open"
    assert fig.data[1].marker.color == PRED_STYLE["color"]
    assert fig.layout.shapes[0].x0 == 2.5


def test_head_spectra_vs_ufm() -> None:
    report = Report.from_json({"config": {"K": 2}, "layers": [
        {"layer": 1, "hessian_top": [5.0, 4.0, 3.0, 2.0, 0.0], "hessian_predicted": 4.0},
        {"layer": 2, "hessian_top": [1.0, 1.0], "hessian_predicted": None},
    ]})
    fig = spectra.head_spectra_vs_ufm(report)
    assert [t.name for t in fig.data] == ["W_1 measured", "W_1 UFM prediction", "W_2 measured"]
    assert list(fig.data[0].y)[-1] is None  # 0 is not drawn on the log axis
    assert list(fig.data[1].x) == [1, 4] and fig.layout.height == 440


def test_heatmap_diverging_scale_is_centred() -> None:
    fig = alignment.heatmap(np.array([[-2.0, 1.0], [0.5, 0.0]]), "C", diverging=True)
    trace = fig.data[0]
    assert trace.zmid == 0.0 and (trace.zmin, trace.zmax) == (-2.0, 2.0)
    assert trace.text[0][0] == "-2"
    assert fig.layout.yaxis.autorange == "reversed"
