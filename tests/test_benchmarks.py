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


def test_bench_network_peers_quick(tmp_path: Path) -> None:
    """The quick mode runs without the peers: a missing peer is skipped with a line saying so,
    and our own rows meet the level they were picked for against the tight reference."""
    import importlib.util
    import os

    out = tmp_path / "peers.json"
    only = "ours" if importlib.util.find_spec("pyhessian") else "ours,pyhessian"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # no /tmp/peers: the peers are optional
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_network_peers", "--quick", "--only", only,
         "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=120, env=env,
    )
    res = json.loads(out.read_text())
    ref = res["reference_top"]["values"]
    assert len(ref) == res["k"] == 3 and ref == sorted(ref, reverse=True) and ref[-1] > 0
    assert res["methods"] == ["ours"]
    if only != "ours":
        assert "pyhessian" in res["skipped"] and "skipped pyhessian" in proc.stdout
    (part,) = res["parts"]
    (row,) = part["top"]
    assert row["method"] == "ours" and row["met"] and row["error"] <= row["level"] == 1e-2
    assert row["products"] >= 3 and row["vs_ours"] == 1.0
    (tr,) = part["trace"]
    assert tr["products"] == 6 and 0 <= tr["mean_abs_rel_err"] < 10
    assert res["reference_trace"]["stderr"] > 0
