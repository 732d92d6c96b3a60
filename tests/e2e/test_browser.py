"""End to end in a real browser: every page renders without an exception, the analysis pages
draw charts, and a run launched from the Train page trains to the end."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.e2e.conftest import SHOTS

PAGES = [
    "",
    "train",
    "runs",
    "spectrum",
    "alignment",
    "gradients",
    "collapse",
    "inspect",
    "theory_explorer",
    "tracking",
    "landscape",
]
CHART_PAGES = {"spectrum": 2, "alignment": 4, "gradients": 3, "collapse": 6, "theory_explorer": 3}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def _settle(page, timeout_ms: int = 90_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    time.sleep(0.5)
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def _no_exception(page, name: str) -> None:
    errors = page.query_selector_all('[data-testid="stException"]')
    if errors:
        pytest.fail(f"{name}: exception on the page: {errors[0].inner_text()[:1000]}")


def test_direct_link_on_fresh_server_opens_inside_the_shell(browser, server) -> None:
    """First request of a fresh server is a shared link to an analysis page with its query."""
    run_id = next(p.name for p in server["runs"].iterdir())
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server['url']}/alignment?run={run_id}&layer=2")
    _settle(page)
    page.get_by_role("heading", name="Eigenvector alignment").wait_for(timeout=60_000)
    _settle(page)
    _no_exception(page, "direct link")
    assert "/alignment" in page.url and "layer=2" in page.url
    nav = page.query_selector('[data-testid="stSidebarNav"]').inner_text()
    assert (
        "Analysis" in nav and "Theory explorer" in nav
    )  # the shell's sections, not the legacy list
    assert len(page.query_selector_all('[data-testid="stPlotlyChart"]')) >= 4
    page.screenshot(path=str(SHOTS / "direct_link.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("path", PAGES)
def test_page(browser, server, path: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server['url']}/{path}")
    _settle(page)
    name = path or "overview"
    if path in CHART_PAGES:  # the script may start after the first idle check on a busy machine
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        want = CHART_PAGES[path]
        with contextlib.suppress(PlaywrightTimeout):  # counted and reported below
            page.wait_for_function(
                f"document.querySelectorAll('[data-testid=\"stPlotlyChart\"] .main-svg')"
                f".length >= {want}", timeout=60_000)
        _settle(page)
    _no_exception(page, name)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if path in CHART_PAGES:
        charts = page.query_selector_all('[data-testid="stPlotlyChart"]')
        assert len(charts) >= CHART_PAGES[path], f"{name}: {len(charts)} charts"
    page.close()


def test_launch_from_train_page(browser, server) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server['url']}/train")
    _settle(page)
    page.get_by_test_id("stSelectbox").first.click()
    page.get_by_role("option", name="A small linear UFM", exact=False).click()
    _settle(page)
    before = {p.name for p in server["runs"].iterdir()}
    page.get_by_role("button", name="Launch").click()
    page.get_by_text("state: finished").wait_for(timeout=120_000)
    _no_exception(page, "train (after launch)")
    new = {p.name for p in server["runs"].iterdir()} - before
    assert len(new) == 1
    page.screenshot(path=str(SHOTS / "train_after_launch.png"), full_page=True)
    page.close()


def test_inspect_upload(browser, server, tmp_path) -> None:
    run_dir = next(p for p in server["runs"].iterdir() if "e2e" in p.name)
    ckpt = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    bad = tmp_path / "broken.pt"
    bad.write_bytes(ckpt.read_bytes()[:100])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server['url']}/inspect")
    _settle(page)
    page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(bad))
    _settle(page)
    page.get_by_text("truncated or corrupt", exact=False).first.wait_for(timeout=30_000)
    page.set_input_files('[data-testid="stFileUploaderDropzoneInput"]', str(ckpt))
    # the upload starts a rerun asynchronously: wait for its result, not just for an idle app
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=90_000)
    _settle(page)
    page.screenshot(path=str(SHOTS / "inspect_upload.png"), full_page=True)
    _no_exception(page, "inspect (upload)")
    assert len(page.query_selector_all('[data-testid="stPlotlyChart"]')) >= 2
    page.close()
