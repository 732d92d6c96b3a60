"""Tiny stand-ins for the checklist's runs, shared by tests/test_checklist.py and
tests/dashboard/test_checklist_page.py: a linear MSE UFM that reaches its optimum to ~1e-15 in a
couple of seconds, and a ReLU UFM whose layer-4 outliers are unequal after 300 steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from dufm_core import checklist, kinds

TINY_RUNS = {
    "paper-linear": checklist.ChecklistRun(
        "quick-demo", {"K": 2, "n": 3, "width": 4, "depth": 3, "lr": 0.3, "steps": 8000,
                       "log_points": 5, "checkpoint_points": 1}),
    "paper-relu": checklist.ChecklistRun(
        "quick-demo", {"K": 3, "n": 4, "width": 8, "depth": 5, "activation": "relu",
                       "steps": 300, "log_points": 5, "checkpoint_points": 1}),
}


def use_tiny_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the checklist ask for the tiny runs instead of the paper's presets."""
    monkeypatch.setattr(checklist, "RUNS", TINY_RUNS)


def train_tiny_runs(root: Path) -> dict[str, str]:
    """Train both tiny runs into ``root`` (about 3 s); return key → run id."""
    with pytest.MonkeyPatch.context() as mp:
        use_tiny_runs(mp)
        return {key: kinds.train(checklist.run_config(key), runs_dir=root, progress=None).run.id
                for key in TINY_RUNS}
