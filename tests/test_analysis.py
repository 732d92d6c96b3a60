"""Analysis reports: closed forms at the constructed optimum, a trained case-A run, caching,
the autograd paths (ReLU, CE, large layers), series over training, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core import analysis, reports, theory
from dufm_core.checkpoints import save_checkpoint
from dufm_core.config import RunConfig
from dufm_core.kinds import train
from dufm_core.models import build_model
from dufm_core.store import create_run, open_run

LAYER_KEYS = {
    "layer", "hessian_top", "hessian_predicted", "outlier_count", "outlier_ratio", "alignment_f",
    "subspace_capture", "gradient_coefficients", "gradient_eigenbasis", "weight_singular_values",
    "effective_rank", "nc1", "nc2", "nc3",
}


def _optimum(**kw) -> tuple[torch.nn.Module, RunConfig]:
    cfg = RunConfig(init="optimum", **kw)
    cfg.validate()
    return build_model(cfg), cfg


def _check_linear_report(report: dict, cfg: RunConfig, rtol: float) -> None:
    K, K2 = cfg.K, cfg.K**2
    pred = theory.predict(K, cfg.n, cfg.lam_ws, cfg.lam_h)
    assert report["loss"]["total"] == pytest.approx(pred.loss, rel=rtol)
    assert report["theory"]["gamma"] == pytest.approx(pred.gamma, rel=1e-12)
    for lay, outlier, sigma in zip(report["layers"], pred.layer_outlier, pred.sigma, strict=True):
        assert set(lay) >= LAYER_KEYS
        top = np.array(lay["hessian_top"])
        assert len(top) >= K2 + (K if lay["shape"][0] * lay["shape"][1] > K2 else 0)
        np.testing.assert_allclose(top[:K2], outlier, rtol=rtol)
        assert np.all(np.abs(top[K2:]) < 1e-6 * outlier)
        assert lay["hessian_predicted"] == pytest.approx(outlier, rel=1e-12)
        assert lay["outlier_count"] == K2
        assert lay["outlier_ratio"] == pytest.approx(1.0, abs=rtol * 10)
        np.testing.assert_allclose(lay["alignment_f"], np.ones((K, K)), atol=rtol)
        np.testing.assert_allclose(lay["subspace_capture"], np.ones((K, K)), atol=rtol)
        np.testing.assert_allclose(lay["gradient_coefficients"], np.eye(K) / K, atol=rtol)
        assert sum(lay["gradient_eigenbasis"]) == pytest.approx(1.0, abs=rtol)
        np.testing.assert_allclose(lay["weight_singular_values"][:K], sigma, rtol=rtol)
        assert lay["gn_split"]["ranks"] == [0, K * (K - 1), K]
        assert lay["effective_rank"] == pytest.approx(K, rel=rtol)
        assert lay["nc1"] < rtol and lay["nc3"] < rtol


@pytest.mark.parametrize(
    "kw",
    [
        {"K": 3, "n": 40, "width": 6, "depth": 5, "lam_w": 0.01, "lam_h": 0.01},  # case A
        {"K": 4, "n": 10, "width": 16, "depth": 4, "lam_w": 1e-3, "lam_h": 1e-3},  # case B
        {"K": 3, "n": 4, "width": 6, "depth": 3, "lam_w": [0.01, 0.02, 0.005], "lam_h": 0.01},
    ],
)
def test_report_at_constructed_optimum(kw) -> None:
    model, cfg = _optimum(**kw)
    report = analysis.analyze_model(model, cfg, step=0, full=True)
    _check_linear_report(report, cfg, rtol=1e-8)
    full = report["full_hessian"]
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    K2 = cfg.K**2
    np.testing.assert_allclose(full["top"][:K2], pred.full_outliers, rtol=1e-8)
    assert full["converged"] and full["params"] == "weights"
    assert full["predicted"] == pytest.approx(list(pred.full_outliers), rel=1e-12)
    json.dumps(report)  # JSON-serialisable


def test_full_hessian_with_features_case_c() -> None:
    model, cfg = _optimum(K=4, n=10, width=5, depth=1, lam_w=5e-3, lam_h=5e-3)
    th = analysis.predictions(cfg, model)
    full = analysis.analyze_full(model, cfg, th, params="weights+features")
    np.testing.assert_allclose(full["top"][:16], [0.15311388] * 6 + [0.14311388] * 10, rtol=1e-7)


def test_trained_case_a_report_matches_theory(runs_dir: Path) -> None:
    cfg = RunConfig(steps=10_000, log_points=30, checkpoint_points=3)
    res = train(cfg, runs_dir=runs_dir, progress=None)
    report = reports.analyze(res.run, full=True)
    assert report.step == 10_000
    _check_linear_report(report.to_json(), cfg, rtol=1e-6)
    pred = theory.predict(3, 40, cfg.lam_ws, cfg.lam_h)
    np.testing.assert_allclose(report.full_hessian.top[:9], pred.full_outliers, rtol=1e-6)
    assert report.gamma_measured == pytest.approx(pred.gamma, rel=1e-6)


def test_cache_is_used(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RunConfig(K=3, n=5, width=6, depth=2, steps=50, checkpoint_points=2)
    run = train(cfg, runs_dir=runs_dir, progress=None).run
    first = reports.analyze(run, 50)
    assert reports.report_path(run, 50).is_file()
    monkeypatch.setattr(analysis, "analyze_model", lambda *a, **k: pytest.fail("recomputed"))
    assert reports.analyze(run, 50) == first
    # asking for the full Hessian adds only that part
    full = reports.analyze(run, 50, full=True)
    assert full.layers == first.layers and full.full_hessian is not None
    assert "full_hessian" in json.loads(reports.report_path(run, 50).read_text())
    with pytest.raises(ValueError, match="no checkpoint at step 7"):
        reports.analyze(run, 7)


@pytest.mark.parametrize(
    "kw", [{"activation": "relu"}, {"loss": "ce"}, {"activation": "relu", "loss": "ce"}]
)
def test_autograd_paths_report(kw) -> None:
    cfg = RunConfig(K=3, n=4, width=5, depth=3, **kw)
    cfg.validate()
    model = build_model(cfg)
    report = analysis.analyze_model(model, cfg, step=0, full=True)
    for lay in report["layers"]:
        assert set(lay) >= LAYER_KEYS
        assert lay["hessian_method"].startswith("dense")
        # the dense layer Hessian's top eigenvalues equal a direct autograd computation
        W = model.weights[lay["layer"] - 1]
        assert len(lay["hessian_top"]) == 12
    assert len(report["full_hessian"]["top"]) == 12
    json.dumps(report)
    del W


def _dense_and_iterative(monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """Layer 2 of a small ReLU UFM analysed densely, then on Hessian products (DENSE_MAX
    lowered below its 49 weights)."""
    cfg = RunConfig(K=3, n=4, width=7, depth=3, activation="relu", seed=1)
    cfg.validate()
    model = build_model(cfg)
    th = analysis.predictions(cfg, model)
    dense = analysis.analyze_layer(model, cfg, 2, th)
    monkeypatch.setattr(analysis, "DENSE_MAX", 10)
    return dense, analysis.analyze_layer(model, cfg, 2, th)


def test_lanczos_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    dense, iterative = _dense_and_iterative(monkeypatch)
    assert "products" in iterative["hessian_method"] and iterative["hessian_converged"]
    np.testing.assert_allclose(iterative["hessian_top"], dense["hessian_top"], rtol=1e-8,
                               atol=1e-12)
    np.testing.assert_allclose(iterative["subspace_capture"], dense["subspace_capture"],
                               atol=1e-6)


def test_relu_dnc_point_predictions() -> None:
    model, cfg = _optimum(K=3, n=4, width=7, depth=4, activation="relu")
    report = analysis.analyze_model(model, cfg, step=0)
    pred0 = theory.relu_layer_eigenvalues(3, 4, cfg.lam_ws, cfg.lam_h, 0.0)
    for lay, p in zip(report["layers"], pred0, strict=True):
        np.testing.assert_allclose(lay["hessian_top"][:9], sorted(p, reverse=True), atol=1e-10)
        np.testing.assert_allclose(lay["gradient_coefficients"], np.eye(3) / 3, atol=1e-10)
    assert set(report["theory"]["relu_layer_eigenvalues"]) == {"0.0", "0.5", "1.0"}


def test_ce_dnc_point_predictions() -> None:
    model, cfg = _optimum(K=4, n=3, width=6, depth=3, loss="ce", lam_w=1e-3, lam_h=1e-3)
    report = analysis.analyze_model(model, cfg, step=0)
    th = report["theory"]
    assert th["ce_alpha_measured"] == pytest.approx(th["ce_alpha_star"], rel=1e-10)
    groups = theory.ce_optimal_layer_eigenvalues(4, 3, 3, 1e-3)
    expected = [v for v, m in groups for _ in range(m)]
    for lay in report["layers"]:
        np.testing.assert_allclose(lay["hessian_top"][: len(expected)], expected, rtol=1e-8)


def test_series_and_cli(runs_dir: Path) -> None:
    cfg = RunConfig(K=3, n=5, width=6, depth=2, steps=300, checkpoint_points=4)
    run = train(cfg, runs_dir=runs_dir, progress=None).run
    out = subprocess.run(
        [sys.executable, "-m", "dufm_core", "analyze", str(run.path), "--all-steps"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == run.analysis_dir / "series.json"
    series = json.loads(path.read_text())
    assert series["steps"] == run.checkpoints() and len(series["entries"]) == len(series["steps"])
    assert all(len(e["layers"]) == 2 and len(e["layers"][0]["top"]) == 9 for e in series["entries"])
    out = subprocess.run(
        [sys.executable, "-m", "dufm_core", "analyze", str(run.path), "--step", "300", "--full",
         "--out", str(runs_dir / "r.json")],
        capture_output=True, text=True, timeout=300, check=True,
    )
    assert Path(out.stdout.strip().splitlines()[-1]) == runs_dir / "r.json"
    rep = json.loads((runs_dir / "r.json").read_text())
    assert rep["full_hessian"]["params"] == "weights"
    bad = subprocess.run(
        [sys.executable, "-m", "dufm_core", "analyze", str(run.path), "--full-params", "head"],
        capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2 and "full_params: must be one of" in bad.stderr


def test_checkpoint_without_run_dir_can_be_analysed(tmp_path: Path) -> None:
    cfg = RunConfig(K=3, n=4, width=5, depth=2, init="optimum")
    cfg.validate()
    run = create_run(cfg, tmp_path)
    save_checkpoint(run, 0, build_model(cfg), None, cfg)
    report = reports.analyze(open_run(run.path), 0)
    assert report.layers[0].outlier_count == 9


# --------------------------------------------------------------- §8.3: bottom, trace, verdict
def test_bottom_trace_verdict_attribution_at_the_optimum() -> None:
    """Case A shape at its optimum: layer trace = K²·outlier, fit-Hessian bottom 0, full trace =
    Σ layer traces, total-Hessian verdict "minimum", each outlier cluster 1/L in every layer."""
    model, cfg = _optimum(K=3, n=40, width=6, depth=5, lam_w=0.01, lam_h=0.01)
    report = analysis.analyze_model(model, cfg, step=0, full=True)
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    for lay in report["layers"]:
        assert lay["hessian_trace"] == pytest.approx(9 * pred.layer_outlier[0], rel=1e-10)
        assert lay["hessian_trace_stderr"] == 0.0
        assert len(lay["hessian_bottom"]) == 3 and max(map(abs, lay["hessian_bottom"])) < 1e-12
    full = report["full_hessian"]
    assert full["trace"] == pytest.approx(sum(r["hessian_trace"] for r in report["layers"]),
                                          rel=1e-12)
    assert full["verdict"] == "minimum", full["verdict_detail"]
    assert len(full["bottom"]) == 3 and full["bottom"] == sorted(full["bottom"])
    det = full["verdict_detail"]
    assert det["lambda_min"] >= -det["curv_tol"] and det["grad_norm"] <= det["grad_tol"]
    clusters = full["attribution"]
    assert [c["multiplicity"] for c in clusters[:2]] == [3, 6]
    for c in clusters[:2]:
        assert c["layers"] == pytest.approx([0.2] * 5, abs=1e-8)
    assert full["attribution_blocks"] == [f"weights.{i}" for i in range(5)]
    json.dumps(report)


def test_verdict_at_a_perturbed_point_is_undetermined() -> None:
    model, cfg = _optimum(K=3, n=4, width=6, depth=3, lam_w=0.01, lam_h=0.01, init_noise=1e-2)
    th = analysis.predictions(cfg, model)
    full = analysis.analyze_full(model, cfg, th)
    det = full["verdict_detail"]
    assert full["verdict"] == "undetermined" and det["grad_norm"] > det["grad_tol"]


def test_iterative_layer_bottom_and_trace_match_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    dense, it = _dense_and_iterative(monkeypatch)
    assert it["hessian_bottom_converged"] and "σI − H" in it["hessian_bottom_method"]
    np.testing.assert_allclose(it["hessian_bottom"], dense["hessian_bottom"], atol=1e-7)
    assert dense["hessian_trace_stderr"] == 0.0 and it["hessian_trace_stderr"] > 0
    assert abs(it["hessian_trace"] - dense["hessian_trace"]) < 5 * it["hessian_trace_stderr"]
