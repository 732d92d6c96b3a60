"""Every page under streamlit.testing.v1.AppTest, against a small finished run."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.conftest import run_page
from tests.helpers import ROOT

# every page in pages/: a new page is covered without being listed here
PAGES = sorted(p.stem for p in (ROOT / "pages").glob("*.py"))


_run = run_page


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception(page: str, dash_env: Path) -> None:
    at = _run(page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title, "every page has a title"


def test_app_shell_runs(dash_env: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception


def test_collapse_page_draws_charts(dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = _run("collapse", run=run_id, layer="2")
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) >= 6


def test_train_page_validation_message(dash_env: Path) -> None:
    at = _run("train")
    at.text_input(key="paper-linear_lr").set_value("-1").run()
    assert any("lr: must be" in e.value for e in at.error)
    assert at.button[0].disabled


@pytest.mark.parametrize(("page", "charts"), [("spectrum", 2), ("alignment", 4), ("gradients", 3)])
def test_analysis_pages_draw_charts(page: str, charts: int, dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = _run(page, run=run_id, layer="2")
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) >= charts


def test_spectrum_full_hessian_and_series(dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = _run("spectrum", run=run_id)
    at.radio[0].set_value("full (all weights)").run()
    assert not at.exception
    assert any("Full fit-Hessian" in c.value for c in at.caption)
    at.button(key=f"series_{run_id}").click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 3


def test_inspect_page_refuses_bad_upload(dash_env: Path) -> None:
    at = _run("inspect")
    assert not at.exception
    at.radio[0].set_value("a run's checkpoint").run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 2
