"""The Landscape page (pages/landscape.py) under AppTest: nothing is computed until asked, a
click computes and draws the line with its quadratic model, the result is then read from the
run's analysis/ folder, a plane draws a contour with the training path, bad input is one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import run_page, serve_runs
from ui import figures


@pytest.fixture
def own_runs(finished_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the dashboard's finished run: the scans written here stay here."""
    shutil.copytree(finished_runs, tmp_path / "runs")
    return serve_runs(tmp_path / "runs", monkeypatch)


def _traces(at: AppTest) -> list[dict]:
    return json.loads(at.get("plotly_chart")[0].proto.spec)["data"]


def test_line_computes_on_click_and_is_cached(own_runs: Path) -> None:
    run_id = next(p.name for p in own_runs.iterdir())
    at = run_page("landscape", run=run_id, layer="2")
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Loss landscape"
    assert not at.get("plotly_chart") and at.button[0].label == "Compute"
    at.slider[0].set_value(11)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    names = [t.get("name") for t in _traces(at)]
    assert names == ["fit", "quadratic model fit(0) + λt²/2"]
    assert any(p.name.startswith("landscape_") for p in (own_runs / run_id / "analysis").iterdir())
    again = run_page("landscape", run=run_id, layer="2")
    again.slider[0].set_value(11).run()
    assert again.get("plotly_chart") and not again.button  # read back, no button


def test_pca_plane_with_path_and_bad_radius(own_runs: Path) -> None:
    run_id = next(p.name for p in own_runs.iterdir())
    at = run_page("landscape", run=run_id, layer="1")
    at.radio[0].set_value("all weights")
    kind = next(s for s in at.selectbox if s.label == "Directions")
    kind.set_value("pca").run()
    at.slider[0].set_value(7)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    types = [t["type"] for t in _traces(at)]
    assert types[0] == "contour" and "scatter" in types
    at.text_input[0].set_value("-3").run()
    assert any(e.value.startswith("radius: must be a number in") for e in at.error)


def test_figures_are_exported() -> None:
    fig = figures.landscape_line([-1, 0, 1], [1.0, 0.0, 1.0], "fit", [2.0, 0.0, 2.0])
    assert len(fig.data) == 2 and fig.data[1].line.dash == "dash"
    # a quadratic far above the measured curve is clipped, not drawn to the top
    assert fig.data[1].y[0] is None and fig.data[1].y[1] == 0.0
    fig = figures.landscape_plane([0, 1], [0, 1, 2], [[1, 2, 3], [4, 5, 6]], "fit",
                                  path={"steps": [0, 5], "a": [0.5, 0], "b": [1, 0]})
    assert list(fig.data[0].z[2]) == [3, 6]  # z[b][a]
    assert len(fig.data) == 4
