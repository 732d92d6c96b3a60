"""A newcomer's first visit, in a real browser, on an empty runs folder (issue #13): Overview →
one click → the run's live view → finished → its Spectrum page, which names the run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts import devserver
from tests.e2e.conftest import SHOTS, _require_browser
from tests.e2e.test_browser import _no_exception, _settle


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    _require_browser()
    runs = tmp_path_factory.mktemp("first_visit") / "runs"
    runs.mkdir()
    srv = devserver.start(runs, env={"DUFM_LAUNCHER_IDLE": "60", "DUFM_MAX_JOBS": "1"})
    yield {"url": srv.url, "runs": runs}
    srv.stop()


def test_first_visit_one_click_to_a_finished_run_and_its_spectrum(browser, empty_server) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(empty_server["url"])
    _settle(page)
    page.get_by_text("No runs yet", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SHOTS / "first_visit_empty.png"), full_page=True)
    page.get_by_role("button", name="Train the paper's linear UFM").click()
    # lands on the new run's live view (not a bare Train page) and watches it finish
    page.wait_for_url("**/train?run=*", timeout=60_000)
    (run_id,) = [p.name for p in empty_server["runs"].iterdir() if not p.name.startswith(".")]
    assert run_id in page.url
    page.get_by_text("state: finished").wait_for(timeout=180_000)
    _settle(page)
    _no_exception(page, "live view")
    assert len(page.query_selector_all('[data-testid="stPlotlyChart"]')) >= 2
    page.screenshot(path=str(SHOTS / "first_visit_finished.png"), full_page=True)
    # the finished run links to its analysis pages; Spectrum opens on it and names it
    page.get_by_test_id("stMain").get_by_role("link", name="Spectrum").first.click()
    page.get_by_role("heading", name="Hessian spectrum").wait_for(timeout=60_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=120_000)
    _settle(page)
    _no_exception(page, "spectrum")
    assert f"run={run_id}" in page.url
    assert run_id in page.get_by_test_id("stMain").inner_text()  # the run header
    assert len(page.query_selector_all('[data-testid="stPlotlyChart"]')) >= 2
    page.screenshot(path=str(SHOTS / "first_visit_spectrum.png"), full_page=True)
    page.close()
