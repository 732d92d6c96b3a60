"""End to end in a real browser: on an empty runs folder the Reproduction checklist page shows
every claim "not run yet"; one click on "Run the checklist" trains the paper's presets in the
background (progress shown), and every claim then passes; a row's link opens its page on the
run and layer it concerns. The screenshot of the passing table is docs/figures/checklist.png
(copied there by hand when the page changes; the test writes it under artifacts/)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dufm_core import checklist
from scripts import devserver
from tests.e2e.conftest import SHOTS, _require_browser

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
TRAIN_TIMEOUT_MS = 300_000  # both presets (the ReLU one: 10 000 steps) on a loaded 2-core CPU

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A dashboard over an empty runs folder (the session's browser drives it: one Playwright
    per process, since its sync API cannot be nested)."""
    _require_browser()
    runs = tmp_path_factory.mktemp("e2e_checklist") / "runs"
    runs.mkdir()
    try:
        srv = devserver.start(runs)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"url": srv.url, "runs": runs}
    srv.stop()


def _settle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    time.sleep(0.5)
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def _no_exception(page) -> None:
    errors = page.query_selector_all('[data-testid="stException"]')
    assert not errors, errors[0].inner_text()[:1000]


def test_one_click_checklist_passes_on_the_presets(browser, empty_server: dict) -> None:
    n = len(checklist.CLAIMS)
    page = browser.new_page(viewport={"width": 1400, "height": 2300})
    page.goto(f"{empty_server['url']}/checklist")
    _settle(page)
    _no_exception(page)
    page.get_by_text(f"0 of {n} claims pass").wait_for(timeout=60_000)
    assert page.get_by_text("not run yet", exact=True).count() == n
    page.get_by_role("button", name="Run the checklist").click()
    # the presets train in the background: a progress line, then the passing table
    page.get_by_text(re.compile(r"paper-(linear|relu): (queued|running), step")).first.wait_for(
        timeout=60_000)
    page.get_by_text(f"{n} of {n} claims pass").wait_for(timeout=TRAIN_TIMEOUT_MS)
    _settle(page)
    _no_exception(page)
    assert page.get_by_text(re.compile(r"^\S*\s?pass$")).count() == n  # icon + "pass"
    assert page.get_by_text("not run yet", exact=True).count() == 0
    assert sorted(p.name.split("-", 2)[2].rsplit("-", 1)[0]
                  for p in Path(empty_server["runs"]).iterdir()) == [
        "checklist-paper-linear", "checklist-paper-relu"]
    page.screenshot(path=str(SHOTS / "checklist.png"))
    # the ReLU row's link opens the Spectrum page on its run, at layer 4
    relu = checklist.find_runs(empty_server["runs"])["paper-relu"].finished
    assert relu is not None
    link = page.locator(f'a[href*="spectrum?run={relu.id}"][href*="layer=4"]')
    assert link.count() == 1
    link.click()
    _settle(page)
    page.get_by_role("heading", name="Hessian spectrum").wait_for(timeout=60_000)
    _no_exception(page)
    assert f"run={relu.id}" in page.url and "layer=4" in page.url
    page.close()
