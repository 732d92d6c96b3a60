"""The Eigenspace tracking page (pages/tracking.py) and its figures (ui/figures/tracking.py):
the series button, a series made before tracking, the overlap curves and the two-checkpoint
heatmap, and missing vectors files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dufm_core import reports, tracking
from dufm_core.store import open_run
from tests.dashboard.conftest import run_page, serve_runs
from ui import figures


@pytest.fixture
def own_runs(finished_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the finished fixture run (its analysis folder is written here), without the
    analyses other tests may have cached in the shared fixture: the page starts unanalysed."""
    root = tmp_path / "runs"
    shutil.copytree(finished_runs, root)
    for analysis in root.glob("*/analysis"):
        shutil.rmtree(analysis)
    return serve_runs(root, monkeypatch)


def _run_id(root: Path) -> str:
    return next(p.name for p in root.iterdir() if p.is_dir() and p.name != "sweeps")


def _click(at, label: str):
    next(b for b in at.button if b.label == label).click()
    return at.run(timeout=240)


def test_page_computes_the_series_and_draws_overlaps(own_runs: Path) -> None:
    run_id = _run_id(own_runs)
    at = run_page("tracking", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Eigenspace tracking"
    assert not at.get("plotly_chart")
    at = _click(at, "Analyse every checkpoint")
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("plotly_chart")
    assert len(charts) == 4  # overlap with final, with previous, heatmap, principal angles
    final = json.loads(charts[0].proto.spec)
    last = [t["y"][-1] for t in final["data"]]
    assert last == [pytest.approx(1.0, abs=1e-12)] * 3  # one line per layer, 1 at the end
    heat = json.loads(charts[2].proto.spec)["data"][0]
    assert len(heat["z"]) == 9 and len(heat["z"][0]) == 9  # K² × K²
    assert all(0.0 <= v <= 1.0 + 1e-12 for row in heat["z"] for v in row)
    shown = " ".join(m.value for m in at.markdown)
    series = json.loads((own_runs / run_id / "analysis" / "series.json").read_text())
    first = series["entries"][0]["layers"][0]["overlap_final"]
    assert f"**{first:.6f}**" in shown  # layer 1, first against last checkpoint
    # the same checkpoint twice: overlap 1 and the identity as cos² matrix
    at.select_slider[0].set_value((series["steps"][-1], series["steps"][-1])).run()
    assert "**1.000000**" in " ".join(m.value for m in at.markdown)
    # the full Hessian's overlaps on demand: a fourth line, and a choice of its own
    at = _click(at, "Add the full Hessian (all weights; slower)")
    assert not at.exception, [e.value for e in at.exception]
    final = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in final["data"]][-1] == "full Hessian"
    assert final["data"][-1]["y"][-1] == pytest.approx(1.0, abs=1e-12)
    assert "full Hessian" in at.selectbox[0].options


def test_a_series_made_before_tracking_gets_a_button(own_runs: Path) -> None:
    run_id = _run_id(own_runs)
    run = open_run(own_runs / run_id)
    series = reports.analyze_series(run)
    for entry in series["entries"]:
        for lay in entry["layers"]:
            for key in ("overlap_final", "overlap_prev", "overlap_dim"):
                lay.pop(key)
    (run.analysis_dir / "series.json").write_text(json.dumps(series))
    at = run_page("tracking", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert any("before eigenspace tracking" in i.value for i in at.info)
    at = _click(at, "Compute the overlaps")
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 4


def test_missing_vectors_say_so(own_runs: Path) -> None:
    run_id = _run_id(own_runs)
    run = open_run(own_runs / run_id)
    reports.analyze_series(run)
    for path in run.analysis_dir.glob("*.vectors.safetensors"):
        path.unlink()
    at = run_page("tracking", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 2  # the curves come from series.json
    assert any("not both kept" in i.value for i in at.info)
    at = _click(at, "Compute the series again")
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 4


def test_figures() -> None:
    series = {"entries": [
        {"step": 0, "layers": [{"overlap_final": 0.2, "overlap_prev": None}],
         "full": {"overlap_final": 0.1, "overlap_prev": None}},
        {"step": 10, "layers": [{"overlap_final": 1.0, "overlap_prev": 0.3}],
         "full": {"overlap_final": 1.0, "overlap_prev": 0.4}},
    ]}
    fig = figures.overlap_over_training(series, "overlap_prev")
    assert [t.name for t in fig.data] == ["layer 1", "full Hessian"]
    assert list(fig.data[0].y) == [None, 0.3] and list(fig.data[1].y) == [None, 0.4]
    assert "previous" in fig.layout.title.text
    heat = figures.cos2_heatmap([[1.0, 0.0], [0.0, 1.0]], 0, 10, "layer 1")
    assert heat.data[0].zmin == 0.0 and heat.data[0].zmax == 1.0
    bars = figures.principal_cos2_bars([1.0, 0.5], 0, 10, "layer 1")
    assert list(bars.data[0].y) == [1.0, 0.5]
    assert tracking.FULL == "full"


def test_page_draws_the_attribution_over_training(own_runs: Path) -> None:
    """With the full Hessian in the series, the top outlier cluster's share per block and its
    part in the predicted directions are drawn over training; at the last step of the fixture
    run (a collapsed linear MSE model) dashed meets solid."""
    run = open_run(own_runs / _run_id(own_runs))
    series = reports.analyze_series(run, full=True)
    last = series["entries"][-1]
    top = last["full_attribution"][0]
    assert sum(top["layers"]) == pytest.approx(1.0, abs=1e-9)
    assert top["predicted"] == pytest.approx(top["layers"], abs=1e-6)
    at = run_page("tracking", run=run.id)
    assert not at.exception, [e.value for e in at.exception]
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    attr = next(f for f in figs if "outlier cluster" in f["layout"]["title"]["text"])
    names = [t["name"] for t in attr["data"]]
    assert "W_1 · share" in names and "W_3 · in predicted directions" in names
    assert len(attr["data"]) == 6  # 3 blocks × (share, predicted)
