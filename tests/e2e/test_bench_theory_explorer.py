"""The Theory explorer benchmark runs in its quick mode (timings are reported, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import _require_browser
from tests.helpers import ROOT


def test_bench_theory_explorer_quick(tmp_path: Path) -> None:
    _require_browser()
    out = tmp_path / "t.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_theory_explorer", "--quick", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    res = json.loads(out.read_text())
    assert set(res) == {"busy_cores_before", "script", "browser"}
    assert len(res["browser"]["all_ms"]) == len(res["script"]["all_ms"]) == 4
    assert all(v > 0 for v in res["browser"]["all_ms"])
