"""The Hessian benchmarks run in their quick mode (they are not tests of speed).

Our own solver part always runs; the PyHessian / curvlinops comparison is skipped, with the
reason, when those benchmark-only packages are not installed (CI does not install them).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def _run(script: str, out: Path, *extra: str) -> dict:
    subprocess.run(
        [
            sys.executable,
            "-m",
            f"benchmarks.{script}",
            "--quick",
            "--threads",
            "1",
            "--out",
            str(out),
            *extra,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return json.loads(out.read_text())


def test_bench_hessian_ours_quick(tmp_path: Path) -> None:
    res = _run("bench_hessian", tmp_path / "ours.json", "--only",
               "ours,ours-structured,ours-report")
    assert res["k"] == 9 and res["n_weights"] > 0
    for name in ("ours", "ours-structured", "ours-report"):
        ours = res["results"][name]
        assert ours["converged"] and ours["max_rel_err"] < 1e-8
        assert ours["hvps"] >= 9 and ours["seconds"] > 0
    stages = res["results"]["ours-report"]["stages"]  # the report path, stage by stage
    assert {"solve", "slq", "bottom+trace+verdict", "rest"} <= set(stages)
    assert stages["solve"] > 0 and stages["slq"] > 0 and stages["bottom+trace+verdict"] > 0


def test_bench_hessian_external_quick(tmp_path: Path) -> None:
    missing = [m for m in ("pyhessian", "curvlinops") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"benchmark-only packages not installed: {', '.join(missing)}")
    res = _run("bench_hessian", tmp_path / "all.json")
    assert set(res["results"]) == {"ours", "ours-structured", "ours-report", "pyhessian",
                                   "curvlinops"}
    assert res["results"]["curvlinops"]["max_rel_err"] < 1e-6
    assert res["results"]["pyhessian"]["max_rel_err"] < 0.1  # power iteration at tol 1e-3
    assert all(v > 0 for v in res["ratios"].values())


def test_bench_kronecker_quick(tmp_path: Path) -> None:
    res = _run("bench_kronecker", tmp_path / "k.json")
    assert res["dim"] == 32 * 32
    assert res["top_rel_err"] < 1e-9 and res["bulk_max_abs"] < 1e-12
    assert res["krylov_vs_kronecker_top9_rel"] < 1e-9
