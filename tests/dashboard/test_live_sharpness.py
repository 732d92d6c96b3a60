"""The live view of a run with ``log_sharpness`` (Train page, finished run): the sharpness chart
with its limit and the edge-of-stability note; a run without the option shows neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from dufm_core import RunConfig, train
from tests.dashboard.conftest import run_page, serve_runs
from tests.training.test_sharpness import EOS, PRED_EOS


def _specs(at) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


def test_live_view_draws_sharpness_and_flags_the_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    run = train(RunConfig(**EOS, lr=1.1 * 2 / PRED_EOS, log_sharpness=True), runs_dir=root,
                progress=None).run
    plain = train(RunConfig(**EOS, lr=0.8 * 2 / PRED_EOS), runs_dir=root, progress=None).run
    serve_runs(root, monkeypatch)
    at = run_page("train", run=run.id)
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Edge of stability: the sharpness reached 2/η") for w in warnings)
    specs = _specs(at)
    assert any("Sharpness: top eigenvalue of the total Hessian" in s for s in specs)
    assert any("cannot settle there" in c.value for c in at.caption)
    at = run_page("train", run=plain.id)
    assert not at.exception
    assert not any("Sharpness" in s for s in _specs(at))
    assert not any("Edge of stability" in w.value for w in at.warning)
