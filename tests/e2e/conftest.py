"""A real Streamlit server and a headless Chromium driven by Playwright (design.md §7.4)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, subprocess_env

CHROMIUM = os.environ.get("DUFM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("DUFM_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
    env = subprocess_env()
    env.update(DUFM_RUNS_DIR=str(runs), DUFM_LAUNCHER_IDLE="120", DUFM_MAX_JOBS="2")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start: " + proc.stdout.read().decode()[-2000:])
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield {"url": url, "runs": runs}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    from dufm_core import launcher

    launcher.stop(runs)


@pytest.fixture(scope="session")
def browser(server: dict) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def shutil_which_chromium() -> str | None:
    return shutil.which("chromium")
