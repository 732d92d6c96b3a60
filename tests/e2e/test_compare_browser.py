"""Compare two runs and a seed group in a real browser (issue #13 item 2): a server of its own
over three seeds of one linear-MSE config and one run with another λ_W (their checkpoints
analysed), opened by a shared ``compare?runs=…`` link: the config diff, the loss overlay with
its band and closed forms, then an analysed series picked from the list. Its screenshot is
docs/figures/compare.png's source (``DUFM_SCREENSHOTS``, default artifacts/screenshots)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts import devserver
from tests.e2e.conftest import SHOTS
from tests.e2e.test_browser import _no_exception, _settle


@pytest.fixture(scope="module")
def compare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A dashboard over four finished runs (K=3, L=3, 500 steps at lr 0.5: near their closed
    forms), every checkpoint analysed."""
    from dufm_core import RunConfig, reports, train

    runs = tmp_path_factory.mktemp("e2e_compare") / "runs"
    ids = []
    for seed, lam_w in ((1, 0.01), (2, 0.01), (3, 0.01), (1, 0.02)):
        cfg = RunConfig(K=3, n=10, width=12, depth=3, steps=500, log_points=30,
                        checkpoint_points=3, seed=seed, lam_w=lam_w, lr=0.5)
        run = train(cfg, runs_dir=runs, progress=None).run
        reports.analyze_series(run)
        ids.append(run.id)
    try:
        srv = devserver.start(runs, env={"DUFM_LAUNCHER": "off"})
    except RuntimeError as exc:
        pytest.fail(str(exc))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"url": srv.url, "runs": runs, "ids": ids}
    srv.stop()


def test_compare_runs_by_link(browser, compare_server: dict) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1500})
    page.goto(f"{compare_server['url']}/compare?runs={','.join(compare_server['ids'])}")
    _settle(page)
    page.get_by_role("heading", name="Compare runs").wait_for(timeout=60_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=60_000)
    _settle(page)
    _no_exception(page, "compare")
    assert "/compare" in page.url and "runs=" in page.url
    assert page.get_by_test_id("stDataFrame").count() == 1  # the config diff
    chart = page.get_by_test_id("stPlotlyChart").first
    legend = chart.inner_text()
    assert "lam_w=0.01 · 3 seeds, mean" in legend and "lam_w=0.02, seed=1" in legend
    assert "closed form" in legend
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

    page.get_by_test_id("stSelectbox").first.click()  # the series picker
    page.keyboard.type("outlier_ratio[3]")
    page.get_by_role("option", name="outlier_ratio[3]", exact=False).first.click()
    _settle(page)
    _no_exception(page, "compare (analysed series)")
    title = page.get_by_test_id("stPlotlyChart").first.inner_text()
    assert "max/min of the top K² eigenvalues" in title and "closed form 1" in title
    page.screenshot(path=str(SHOTS / "compare_outlier_ratio.png"), full_page=True)
    page.close()


def test_compare_with_an_unknown_run_says_so(browser, compare_server: dict) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{compare_server['url']}/compare?runs=nope-1234")
    _settle(page)
    page.get_by_text("Run nope-1234 was not found in the runs folder").wait_for(timeout=60_000)
    _no_exception(page, "compare (bad link)")
    assert page.get_by_test_id("stPlotlyChart").count() == 0
    page.close()
