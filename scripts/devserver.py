"""Start and stop a local ``streamlit run app.py`` over a given runs folder, and drive it with
a headless Chromium (Playwright) — shared by the browser tests (tests/e2e), the dashboard
benchmark (benchmarks/bench_dashboard.py) and the documentation figures
(scripts/screenshots.py), so that all three run the dashboard the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
CHART = '[data-testid="stPlotlyChart"]'


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running dashboard: its process, URL and runs folder."""

    proc: subprocess.Popen
    url: str
    runs: Path

    def stop(self) -> None:
        """Terminate the server (kill after 20 s) and the runs folder's fork server."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        from dufm_core.process import launcher

        launcher.stop(self.runs)


def start(runs: Path, env: Mapping[str, str] | None = None, timeout: float = 90.0) -> Server:
    """``streamlit run app.py`` on a free localhost port over ``runs``; waits until it accepts
    connections. RuntimeError with the server's output if it does not start in ``timeout``."""
    port = free_port()
    full_env = dict(os.environ)
    full_env.update({"DUFM_RUNS_DIR": str(runs), "DUFM_LAUNCHER_IDLE": "120",
                     "DUFM_MAX_JOBS": "2"})
    full_env.update(env or {})
    # a file, not a pipe: an unread pipe would block the server once full
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Server(proc, f"http://127.0.0.1:{port}", Path(runs))
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    log.seek(0)
    raise RuntimeError("streamlit did not start: " + log.read().decode(errors="replace")[-2000:])
