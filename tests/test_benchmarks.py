"""Benchmarks are not tests; this only checks that they run in their quick mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def test_bench_train_quick(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_train", "--quick", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    res = json.loads(out.read_text())
    assert res["steps"] == 200 and res["ratio"] > 0
    # both loops minimise the same loss from the same kind of start: after 200 steps the
    # losses are close (not equal: the random draws differ)
    assert abs(res["hand_final_loss"] - res["ours_final_loss"]) < 0.05


def test_bench_block_size_quick(tmp_path: Path) -> None:
    """Product counts by block size: every setting returns ten values, and at the tight
    tolerance one vector needs fewer products than the default-sized block of 12."""
    out = tmp_path / "b.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_block_size", "--quick", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    res = json.loads(out.read_text())
    tight = res["rows"][-1]
    assert tight["tol"] == 1e-6 and tight["b=1"]["err"] < 1e-8 and tight["eigsh"]["err"] < 1e-8
    assert tight["b=1"]["products"] < tight["b=12"]["products"]
