"""Fixtures for the dashboard tests: a runs folder holding one small finished UFM run, and one
that also holds a tiny finished real-network (ResNet-20 on digits) run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core import RunConfig, train
from dufm_core.runtime import cpu_threads
from tests.helpers import ROOT


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with one finished linear MSE run (K=3, n=10, d=12, L=3)."""
    root = tmp_path_factory.mktemp("dash") / "runs"
    cfg = RunConfig(
        K=3, n=10, width=12, depth=3, steps=3000, log_points=40, checkpoint_points=4, name="fixture"
    )
    train(cfg, runs_dir=root, progress=None)
    return root


def serve_runs(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the pages at ``root`` (one worker slot, no fork server) and return it."""
    monkeypatch.setenv("DUFM_RUNS_DIR", str(root))
    monkeypatch.setenv("DUFM_MAX_JOBS", "1")
    monkeypatch.setenv("DUFM_LAUNCHER", "off")
    return root


def run_page(page: str, **query: str) -> AppTest:
    """Run ``pages/<page>.py`` in AppTest with the given URL query parameters."""
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    return at


@pytest.fixture
def dash_env(finished_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return serve_runs(finished_runs, monkeypatch)


@pytest.fixture(scope="session")
def real_runs(finished_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with a copy of the UFM run and a tiny finished resnet20 run on digits
    (n = 3 per class, 3 full-batch steps: a few seconds on one thread)."""
    root = tmp_path_factory.mktemp("dash_real") / "runs"
    root.mkdir()
    for run in finished_runs.iterdir():
        shutil.copytree(run, root / run.name)
    cfg = RunConfig.from_dict(
        {
            "model": "resnet20",
            "n": 3,
            "steps": 3,
            "log_points": 4,
            "checkpoint_points": 2,
            "name": "real",
        }
    )
    with cpu_threads(1):
        train(cfg, runs_dir=root, progress=None)
    return root


@pytest.fixture
def real_env(real_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return serve_runs(real_runs, monkeypatch)
