"""Shared fixtures: small configs and a temporary runs folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs folder, also set as $DUFM_RUNS_DIR for code that reads the default."""
    d = tmp_path / "runs"
    monkeypatch.setenv("DUFM_RUNS_DIR", str(d))
    return d
