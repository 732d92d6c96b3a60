"""Hostile links in a real browser (issue #12): a link naming a folder outside the runs folder, a
symbolic link, a missing run, checkpoint step or layer shows one plain line and no traceback, and
nothing outside the runs folder is opened or signalled."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from tests.e2e.conftest import SHOTS
from tests.e2e.test_browser import _no_exception, _settle

WARNING = '[data-testid="stAlert"]'


def _decoy(runs: Path) -> tuple[Path, Path, subprocess.Popen]:
    """A "running" run folder beside the runs folder whose status.json names a live `sleep`,
    and a symbolic link to it inside the runs folder."""
    real = next(p for p in sorted(runs.iterdir()) if (p / "config.json").is_file())
    decoy = runs.parent / "decoy-hostile"
    decoy.mkdir(exist_ok=True)
    shutil.copy(real / "config.json", decoy / "config.json")
    sleeper = subprocess.Popen(["sleep", "300"])
    status = {"state": "running", "pid": sleeper.pid, "host": socket.gethostname(), "step": 1,
              "total_steps": 10}
    (decoy / "status.json").write_text(json.dumps(status))
    link = runs / "zz-hostile-link"
    link.symlink_to(decoy)
    return decoy, link, sleeper


def test_hostile_links_show_one_line_and_touch_nothing_outside(browser, server) -> None:
    runs = server["runs"]
    real = next(p.name for p in sorted(runs.iterdir()) if (p / "config.json").is_file())
    decoy, link, sleeper = _decoy(runs)
    status_before = (decoy / "status.json").read_text()
    cases = [
        ("train_absolute", f"train?run={quote(str(decoy))}", "was not found in the runs folder"),
        ("train_dotdot", f"train?run=../{decoy.name}", "was not found in the runs folder"),
        ("train_symlink", f"train?run={link.name}", "was not found in the runs folder"),
        ("spectrum_missing_run", "spectrum?run=nonexistent", "was not found in the runs folder"),
        ("spectrum_missing_step", f"spectrum?run={real}&step=999999", "does not exist in run"),
        ("spectrum_bad_layer", f"spectrum?run={real}&layer=99", "is out of range 1–3"),
    ]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        for name, path, text in cases:
            page.goto(f"{server['url']}/{path}")
            _settle(page)
            page.locator(WARNING, has_text=text).first.wait_for(timeout=30_000)
            _settle(page)
            _no_exception(page, name)
            body = page.inner_text("body")
            assert "Traceback" not in body, name
            assert "Cancel run" not in body, name
            assert path.split("?")[1].split("&")[-1] in page.url.replace("%2F", "/"), (
                name, page.url)  # the link is not rewritten to another run, step or layer
            page.screenshot(path=str(SHOTS / f"hostile_{name}.png"), full_page=True)
            # click whatever there is to click, except Launch (which would start a real run)
            for button in page.get_by_role("button").all():
                label = button.inner_text().strip()
                if button.is_visible() and button.is_enabled() and label and label != "Launch":
                    button.click()
                    _settle(page)
            _no_exception(page, name)
        time.sleep(0.5)
        assert sleeper.poll() is None, "the decoy's pid was signalled"
        assert (decoy / "status.json").read_text() == status_before
    finally:
        page.close()
        link.unlink()
        sleeper.kill()
        sleeper.wait(timeout=10)
        shutil.rmtree(decoy, ignore_errors=True)


def test_a_hostile_upload_is_one_line_in_the_browser(browser, server, tmp_path: Path) -> None:
    """The real upload path (Streamlit's UploadedFile, streamed to a temporary file): random
    bytes named .pt are refused in one line naming the file, not the temporary path."""
    bad = tmp_path / "random-bytes.pt"
    bad.write_bytes(bytes(range(256)) * 64)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        page.goto(f"{server['url']}/inspect")
        _settle(page)
        page.set_input_files('input[type="file"]', str(bad), timeout=30_000)
        error = page.locator('[data-testid="stAlertContentError"]').first
        error.wait_for(timeout=60_000)
        _settle(page)
        _no_exception(page, "inspect upload")
        text = error.inner_text()
        assert text.startswith("random-bytes.pt: "), text
        assert "dufm-upload" not in text and "Traceback" not in page.inner_text("body")
        page.screenshot(path=str(SHOTS / "hostile_upload.png"), full_page=True)
    finally:
        page.close()
