"""A real Streamlit server and a headless Chromium driven by Playwright (docs/design.md §7.4)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import devserver
from scripts.devserver import CHROMIUM, CHROMIUM_ARGS
from tests.helpers import ROOT

SHOTS = Path(os.environ.get("DUFM_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        msg = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI installs both: a missing one is a broken CI, not a skip
        pytest.skip(msg)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`streamlit run app.py` on a free localhost port over a runs folder with one finished run."""
    _require_browser()
    from dufm_core import RunConfig, train

    runs = tmp_path_factory.mktemp("e2e") / "runs"
    train(
        RunConfig(K=3, n=10, width=12, depth=3, steps=2000, checkpoint_points=3, name="e2e"),
        runs_dir=runs,
        progress=None,
    )
    try:
        srv = devserver.start(runs, env={"DUFM_LAUNCHER_IDLE": "120", "DUFM_MAX_JOBS": "2"})
    except RuntimeError as exc:
        pytest.fail(str(exc))
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"url": srv.url, "runs": runs}
    srv.stop()


@pytest.fixture(scope="session")
def browser(server: dict) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def shutil_which_chromium() -> str | None:
    return shutil.which("chromium")
