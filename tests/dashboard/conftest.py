"""Fixtures for the dashboard tests: a runs folder holding one small finished run."""

from __future__ import annotations

from pathlib import Path

import pytest

from dufm_core import RunConfig, train


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with one finished linear MSE run (K=3, n=10, d=12, L=3)."""
    root = tmp_path_factory.mktemp("dash") / "runs"
    cfg = RunConfig(
        K=3, n=10, width=12, depth=3, steps=3000, log_points=40, checkpoint_points=4, name="fixture"
    )
    train(cfg, runs_dir=root, progress=None)
    return root


@pytest.fixture
def dash_env(finished_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DUFM_RUNS_DIR", str(finished_runs))
    monkeypatch.setenv("DUFM_MAX_JOBS", "1")
    monkeypatch.setenv("DUFM_LAUNCHER", "off")
    return finished_runs
