"""Issue #13 item 4: the Spectrum and Gradients captions fit the run. A cross-entropy run's
captions do not state the linear-MSE closed forms (they say those do not apply and what is
measured); a ReLU run's carry the caveat that gradient descent need not reach the linear
optimum; a linear MSE run's state the closed forms, with C and I/K on one colour scale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dufm_core import RunConfig, train
from dufm_core.runtime import cpu_threads
from dufm_core.store import Run
from tests.dashboard.conftest import run_page, serve_runs
from ui import analysis_view as av

TINY = {"K": 3, "n": 4, "width": 5, "depth": 2, "steps": 200, "log_points": 4,
        "checkpoint_points": 2}  # fmt: skip
MSE_CLAIM = "linear MSE optimum"  # the closed-form sentence of the MSE spectrum caption
CAVEAT = "need not reach the linear optimum"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with a tiny CE run ("ce") and a tiny ReLU MSE run ("relu")."""
    root = tmp_path_factory.mktemp("captions") / "runs"
    with cpu_threads(1):
        for name, extra in (("ce", {"loss": "ce"}), ("relu", {"activation": "relu"})):
            train(RunConfig(**TINY, **extra, name=name), runs_dir=root, progress=None)
    return root


def _run_id(root: Path, name: str) -> str:
    return next(p.name for p in root.iterdir() if Run(p).config().name == name)


def _captions(page: str, root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    serve_runs(root, monkeypatch)
    at = run_page(page, run=_run_id(root, name))
    assert not at.exception
    return "\n".join(c.value for c in at.caption)


def test_ce_captions_do_not_claim_the_mse_closed_forms(
    tiny_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_runs
    spectrum = _captions("spectrum", root, "ce", monkeypatch)
    assert "MSE closed forms do not apply" in spectrum
    assert MSE_CLAIM not in spectrum and "K² equal outliers" not in spectrum
    gradients = _captions("gradients", root, "ce", monkeypatch)
    assert "MSE closed forms do not apply" in gradients and "C is measured only" in gradients
    assert "so C = I/K" not in gradients


def test_ce_gradients_page_draws_no_predicted_identity(
    tiny_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_runs
    serve_runs(root, monkeypatch)
    at = run_page("gradients", run=_run_id(root, "ce"))
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert not any("Predicted I/K" in t for t in titles)
    assert any("measured" in t for t in titles)


def test_relu_captions_carry_the_caveat(
    tiny_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tiny_runs
    for page in ("spectrum", "gradients"):
        text = _captions(page, root, "relu", monkeypatch)
        assert CAVEAT in text and "§4.6" in text, page


def test_linear_mse_captions_state_the_closed_forms(
    dash_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = run_page("gradients", run=run_id)
    assert not at.exception
    text = "\n".join(c.value for c in at.caption)
    assert "so C = I/K" in text and CAVEAT not in text
    charts = at.get("plotly_chart")
    scales = [
        (d["zmin"], d["zmax"])
        for c in charts
        for d in json.loads(c.proto.spec)["data"]
        if d.get("type") == "heatmap"
    ]
    assert len(scales) == 2 and scales[0] == scales[1]  # measured C and I/K: one scale
    spectrum = _captions("spectrum", dash_env, "fixture", monkeypatch)
    assert MSE_CLAIM in spectrum


def test_applies_of_each_run(tiny_runs: Path) -> None:
    root = tiny_runs
    reports = {
        name: av.reports.analyze(Run(root / _run_id(root, name)), 200) for name in ("ce", "relu")
    }
    ce, relu = (av.theory_applies(reports[k]) for k in ("ce", "relu"))
    assert ce.ce and not ce.closed_form and not av.shows_identity(ce)
    assert relu.relu and relu.closed_form and av.shows_identity(relu)
    assert MSE_CLAIM not in av.spectrum_theory(ce, 3)
    assert CAVEAT in av.spectrum_theory(relu, 3) and CAVEAT in av.gradient_theory(relu, 3)


def test_live_loss_chart_claims_a_closed_form_only_where_one_is_drawn(
    tiny_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Train page's live view of a CE run titles its loss chart 'Loss' (no closed form is
    drawn); a linear MSE run's says 'closed form dashed'."""
    serve_runs(tiny_runs, monkeypatch)
    at = run_page("train", run=_run_id(tiny_runs, "ce"))
    assert not at.exception
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert specs and not any("closed form dashed" in s for s in specs)
    assert any('"text":"Loss"' in s.replace(" ", "") for s in specs)
