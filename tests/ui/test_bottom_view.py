"""The Spectrum page's bottom / trace / verdict / attribution section: table rows, the verdict
line and the stacked attribution bars, from a real report of a tiny model at its optimum."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from dufm_core import analysis
from dufm_core.config import RunConfig
from dufm_core.models import build_model
from dufm_core.report_types import Report
from ui import analysis_view as av
from ui import figures


@pytest.fixture(scope="module")
def report() -> Report:
    cfg = RunConfig(K=3, n=4, width=6, depth=3, lam_w=0.01, lam_h=0.01, init="optimum",
                    init_noise=0.0)
    cfg.validate()
    return Report.from_json(analysis.analyze_model(build_model(cfg), cfg, step=0, full=True))


def test_rows_show_trace_beside_k2_outlier(report: Report) -> None:
    rows = av.curvature_rows(report)
    assert [r["layer"] for r in rows] == ["1", "2", "3"]
    for r in rows:
        # at the optimum the trace equals K²·λ₁ and K²·predicted (4 significant digits)
        assert r["trace"] == r["K²·λ₁"] == r["K²·predicted"]
        assert "±" not in r["trace"] and r["bottom (ascending)"].count(",") == 2


def test_rows_without_linear_mse_have_no_k2_columns(report: Report) -> None:
    relu = Report.from_json({**report.to_json(),
                             "config": {**report.config, "activation": "relu"}})
    assert "K²·λ₁" not in av.curvature_rows(relu)[0]


def test_verdict_line_names_the_numbers(report: Report) -> None:
    line = av.verdict_text(report.full_hessian)
    assert line is not None and line.startswith("**minimum**")
    for word in ("λ_min", "‖∇L‖", "tolerance", "negative-curvature"):
        assert word in line
    assert av.verdict_text(None) is None


def test_attribution_figure_stacks_one_bar_per_cluster(report: Report) -> None:
    full = report.full_hessian
    fig = figures.outlier_attribution(full.attribution, full.attribution_blocks)
    assert isinstance(fig, go.Figure) and fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["W_1", "W_2", "W_3"]  # as the theory names them
    # each bar's hover also gives the part of the share inside the predicted directions
    assert list(fig.data[0].customdata) == [c["predicted"][0] for c in full.attribution]
    n = len(full.attribution)
    totals = [sum(t.y[i] for t in fig.data) for i in range(n)]
    assert totals == pytest.approx([1.0] * n, abs=1e-9)
