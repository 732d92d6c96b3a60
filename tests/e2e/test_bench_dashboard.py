"""The dashboard benchmark runs in its quick mode (timings are reported, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import _require_browser
from tests.helpers import ROOT


def test_bench_dashboard_quick(tmp_path: Path) -> None:
    _require_browser()
    out = tmp_path / "d.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_dashboard", "--quick", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )
    res = json.loads(out.read_text())
    assert set(res) == {"launch_to_first_metric", "analysis_cached", "analysis_uncached"}
    assert all(v["median"] > 0 for v in res.values())
