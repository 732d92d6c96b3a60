"""Figure downloads in a real browser (issue #13 item 6): a chart's "⬇ SVG · PNG · CSV" row
saves files a paper can use, made when the button is clicked; a finished run's figure bundle
downloads as one zip."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e.conftest import SHOTS
from tests.e2e.test_browser import _no_exception, _settle
from ui.figures import export

MISSING = export.image_engine_missing()


def _download(page, button, tmp: Path) -> Path:
    """Click ``button`` and return the file the browser saved."""
    with page.expect_download(timeout=120_000) as info:
        button.click()
    dl = info.value
    path = tmp / dl.suggested_filename
    dl.save_as(path)
    return path


def _open(browser, server: dict, path: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(f"{server['url']}/{path}")
    _settle(page)
    _no_exception(page, path)
    return page


def test_a_chart_downloads_as_csv_svg_and_print_png(browser, server, tmp_path: Path) -> None:
    run_id = next(p.name for p in server["runs"].iterdir())
    page = _open(browser, server, f"collapse?run={run_id}")
    page.get_by_role("heading", name="Collapse & weights").wait_for(timeout=60_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=60_000)
    rows = page.locator('[data-testid="stDownloadButton"]')
    assert rows.count() >= 3 * 4  # every chart has its row
    first_chart = page.locator('[data-testid="stPlotlyChart"]').first
    first_chart.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "figure_downloads.png"), full_page=False)

    csv = _download(page, page.get_by_role("button", name="CSV").first, tmp_path)
    assert csv.name == "nc1_per_layer.csv"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["trace", "type", "x", "y"] and len(frame) > 10
    assert frame.trace.iloc[0] == "H_1"

    svg_button = page.get_by_role("button", name="⬇ SVG").first
    if MISSING is not None:
        assert svg_button.is_disabled()
        pytest.skip(f"no image export here: {MISSING}")
    svg = _download(page, svg_button, tmp_path)
    assert svg.name == "nc1_per_layer.svg"
    root = ET.fromstring(svg.read_bytes())
    assert "NC1 per layer" in "".join(root.itertext())
    png = _download(page, page.get_by_role("button", name="PNG").first, tmp_path).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24])[0] == 2100  # 300 dpi across 7 inches
    _no_exception(page, "after the downloads")
    page.close()


@pytest.mark.slow
def test_a_finished_run_downloads_its_figure_bundle(browser, server, tmp_path: Path) -> None:
    run_id = next(p.name for p in server["runs"].iterdir())
    page = _open(browser, server, f"train?run={run_id}")
    page.get_by_role("button", name="Prepare figure bundle").click()
    get = page.get_by_role("button", name="⬇ Download figure bundle (.zip)")
    get.wait_for(timeout=240_000)
    _no_exception(page, "bundle")
    page.screenshot(path=str(SHOTS / "figure_bundle.png"), full_page=False)
    path = _download(page, get, tmp_path)
    assert path.name == f"{run_id}-figures.zip"
    names = zipfile.ZipFile(path).namelist()
    top = f"{run_id}-figures/"
    assert {top + "config.json", top + "metrics.csv", top + "data/loss.csv"} <= set(names)
    if MISSING is None:
        svg = zipfile.ZipFile(path).read(top + "figures/top_eigenvalues_layer1.svg")
        assert "Top eigenvalues, layer 1" in "".join(ET.parse(io.BytesIO(svg)).getroot().itertext())
    page.close()


@pytest.mark.slow
def test_an_analysis_page_downloads_the_runs_figure_bundle(browser, server,
                                                           tmp_path: Path) -> None:
    """The same bundle is offered at the foot of a finished run's analysis pages."""
    run_id = next(p.name for p in server["runs"].iterdir())
    page = _open(browser, server, f"gradients?run={run_id}")
    page.get_by_role("heading", name="Figure bundle").wait_for(timeout=60_000)
    page.get_by_role("button", name="Prepare figure bundle").click()
    get = page.get_by_role("button", name="⬇ Download figure bundle (.zip)")
    get.wait_for(timeout=240_000)
    _no_exception(page, "bundle on the Gradients page")
    path = _download(page, get, tmp_path)
    assert path.name == f"{run_id}-figures.zip"
    names = set(zipfile.ZipFile(path).namelist())
    top = f"{run_id}-figures/"
    assert {top + "README.txt", top + "data/gradient_C_layer1.csv", top + "data/loss.csv"} <= names
    page.close()
