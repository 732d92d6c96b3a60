"""The analysis report of a real-network run (dufm_core.network_report via reports.analyze):
digits end to end, the schema of docs/design.md §5 with head layers, the λ_H/N mapping, the
consistency of the report with the run's own eval-mode metrics, the full Hessian over the head,
and clear refusals of parameter sets that do not apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dufm_core import reports, theory
from dufm_core.cli import main
from dufm_core.config import RunConfig
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.data import load_data
from dufm_core.kinds import load_checkpoint, train
from dufm_core.runtime import cpu_threads

LAYER_KEYS = {"layer", "shape", "hessian_top", "hessian_predicted", "outlier_count",
              "outlier_ratio", "alignment_f", "alignment_f_mean", "gradient_coefficients",
              "gn_split", "weight_singular_values", "nc1", "nc2", "nc3"}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory):
    """A 6-step digits run (n = 3, N = 30) with a checkpoint at every step it logs."""
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 3, "steps": 6, "log_points": 7,
                               "checkpoint_points": 3, "width": [64, 16, 16]})
    cfg.validate()
    with cpu_threads(1):
        res = train(cfg, tmp_path_factory.mktemp("runs"), progress=None)
    assert res.state == "finished"
    return res.run


def test_report_schema_and_lambda_mapping(real_run) -> None:
    with cpu_threads(1):
        rep = reports.analyze(real_run)
    cfg = real_run.config()
    assert rep.config["model"] == "resnet20" and rep.step == 6
    net = rep.network.to_json()
    assert net["bn_mode"].startswith("eval") and net["N"] == 30 and net["n"] == 3
    assert net["lam_h_ufm"] == pytest.approx(cfg.lam_h / 30)
    assert 0.0 <= net["train_acc"] <= 1.0 and net["test_acc"] is not None
    # predictions are the UFM's at λ_H / N
    pred = theory.predict(10, 3, cfg.lam_ws, cfg.lam_h / 30)
    assert rep.theory.layer_outlier == pytest.approx(list(pred.layer_outlier), rel=1e-12)
    assert rep.theory.gamma == pytest.approx(pred.gamma, rel=1e-12)
    assert cfg.depth == 3
    assert len(rep.layers) == 3
    assert [lay.shape for lay in rep.layers] == [[16, 64], [16, 16], [10, 16]]
    for lay in rep.layers:
        assert set(lay.to_json()) >= LAYER_KEYS
        assert len(lay.hessian_top) == min(110, lay.shape[0] * lay.shape[1])
    # layer 1's NC1 is that of the backbone features h(x)
    assert rep.layers[0].nc1 == pytest.approx(net["feature_nc1"], rel=1e-12)


def test_report_loss_equals_the_runs_eval_mode_metrics(real_run) -> None:
    """The report's loss (head view, λ_H/N) is the loss the training loop logged at that step
    (both eval mode, whole training set): the mapping is exact, not approximate."""
    with cpu_threads(1):
        rep = reports.analyze(real_run)
    row = next(r for r in real_run.metrics() if r["step"] == 6)
    assert rep.loss["total"] == pytest.approx(row["loss"], rel=1e-6)
    assert rep.loss["fit"] == pytest.approx(row["fit"], rel=1e-6)


def test_full_hessian_over_the_head_is_the_networks(real_run) -> None:
    with cpu_threads(1):
        rep = reports.analyze(real_run, full=True, full_params="head")
    fh = rep.full_hessian
    assert fh.params == "head" and fh.dim == 16 * 64 + 16 * 16 + 10 * 16
    assert len(fh.predicted) == 100  # the UFM's K² full-Hessian outliers
    # the top eigenvalue equals the Rayleigh quotient of the network's own head operator
    ck = load_checkpoint(real_run.checkpoint_path(6))
    data = load_data(ck.config)
    op = NetworkHessianOperator(ck.model, data.x_train, data.y_train, "mse", "head")
    g = torch.Generator().manual_seed(0)
    v = torch.randn(op.dim, dtype=torch.float64, generator=g)
    for _ in range(300):  # power iteration: the top of a PSD fit Hessian (linear MSE head)
        v = op.matvec(v)
        v = v / v.norm()
    assert float(v @ op.matvec(v)) == pytest.approx(fh.top[0], rel=1e-6)
    # "weights" is accepted as "head" and served from the cache
    assert reports.analyze(real_run, full=True, full_params="weights").full_hessian == fh


def test_cli_analyze_and_refusals(real_run, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", str(real_run.path), "--step", "2"]) == 0
    assert capsys.readouterr().out.strip().endswith("step_00000002.json")
    assert main(["analyze", str(real_run.path), "--full", "--full-params",
                 "weights+features"]) == 2
    err = capsys.readouterr().err
    assert "full_params: must be one of head | all for resnet20 runs" in err


def test_ufm_runs_refuse_network_parameter_sets(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "--runs-dir", str(runs), "--steps", "20", "--K", "2", "--n", "2",
                 "--width", "3", "--depth", "2"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["analyze", run_dir, "--full", "--full-params", "all"]) == 2
    assert "must be one of weights | weights+features for ufm runs" in capsys.readouterr().err
