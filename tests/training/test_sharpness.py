"""Sharpness during training (``log_sharpness``, dufm_core/sharpness.py): the logged
value against a dense float64 autograd Hessian and the closed form at the optimum, warm and
cold starts, the option off by default (rows unchanged), resume, the edge-of-stability flag,
config refusals and the metrics reader."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dufm_core import kinds
from dufm_core import sharpness as sh
from dufm_core.config import ConfigError, RunConfig
from dufm_core.models import build_model, fit_term
from dufm_core.run_schema import typed_metrics_row
from dufm_core.store import open_run
from dufm_core.training.ufm import GradientFn

SHARP_KEYS = {"sharpness", "sharpness_products", "sharpness_limit", "edge_of_stability"}
# A tiny UFM whose GD reaches 2/η: from a small init the sharpness grows past 2/lr (progressive
# sharpening) and GD ends on a stable period-2 orbit with sharpness above the limit instead of
# at the optimum (closed-form sharpness 1.18038 > 2/lr = 1.0731). With lr 0.8× 2/1.18038 the
# same run converges to the optimum, below the limit.
EOS = {"K": 2, "n": 2, "width": 3, "depth": 2, "lam_w": 0.01, "lam_h": 0.01,
       "init_scale": 0.3, "steps": 600, "log_points": 12, "checkpoint_points": 2}
PRED_EOS = 1.1803779297990444


def _cfg(**kw) -> RunConfig:
    base = {"K": 3, "n": 4, "width": 5, "depth": 3, "lam_w": 0.01, "lam_h": 0.02, "lr": 0.2,
            "steps": 120, "log_points": 8, "checkpoint_points": 2, "schedule": "linear"}
    base.update(kw)
    cfg = RunConfig(**base)
    cfg.validate()
    return cfg


def dense_top(model: torch.nn.Module, cfg: RunConfig) -> float:
    """λ_max of the dense float64 autograd Hessian of the total loss over H_1 and every W_l,
    written out independently of the engine's operators."""
    tensors = [model.features.detach(), *[w.detach() for w in model.weights]]
    shapes = [t.shape for t in tensors]
    sizes = [t.numel() for t in tensors]
    lams = [cfg.lam_h, *cfg.lam_ws]

    def total(theta: torch.Tensor) -> torch.Tensor:
        parts = [p.reshape(s) for p, s in zip(torch.split(theta, sizes), shapes, strict=True)]
        h = parts[0]
        for i, W in enumerate(parts[1:]):
            h = W @ (torch.relu(h) if i > 0 and cfg.activation == "relu" else h)
        reg = sum(0.5 * lam * p.square().sum() for lam, p in zip(lams, parts, strict=True))
        return fit_term(h.T, model.labels, cfg.loss) + reg

    theta = torch.cat([t.reshape(-1) for t in tensors]).double()
    H = torch.func.hessian(total)(theta)
    return float(torch.linalg.eigvalsh(0.5 * (H + H.T))[-1])


def _gd(model: torch.nn.Module, cfg: RunConfig, steps: int) -> None:
    for p in model.parameters():
        p.requires_grad_(cfg.activation != "linear" or cfg.loss != "mse")
    grad_fn = GradientFn(model, cfg)
    for _ in range(steps):
        grads, _, _ = grad_fn()
        with torch.no_grad():
            for p, g in zip([model.features, *model.weights], grads, strict=True):
                p.sub_(cfg.lr * g)


@pytest.mark.parametrize("kw", [
    {},
    {"activation": "relu"},
    {"loss": "ce", "lam_w": [0.01, 0.02, 0.005]},
    {"activation": "relu", "loss": "ce", "width": [5, 4, 6]},
])
def test_sharpness_equals_dense_autograd_top_eigenvalue_warm_and_cold(kw) -> None:
    cfg = _cfg(**kw)
    model = build_model(cfg)
    warm = sh.SharpnessMeter(cfg.loss, cfg.lam_ws, cfg.lam_h)
    cold = sh.SharpnessMeter(cfg.loss, cfg.lam_ws, cfg.lam_h, warm=False)
    products = {"warm": 0, "cold": 0}
    for chunk in (0, 20, 40):  # states at steps 0, 20, 60
        _gd(model, cfg, chunk)
        ref = dense_top(model, cfg)
        for name, meter in (("warm", warm), ("cold", cold)):
            reading = meter.measure(model)
            assert reading.converged
            assert reading.value == pytest.approx(ref, rel=1e-6), (name, chunk)
            products[name] += reading.products
    assert warm._vectors is not None and cold._vectors is not None
    assert products["warm"] <= products["cold"]


def test_a_stale_warm_vector_still_gives_the_top_eigenvalue() -> None:
    """Warm-started from an exact eigenvector of the *second* eigenvalue (what a crossing of the
    top two would leave), the solve must still find the top one: the start is perturbed."""
    cfg = _cfg()
    model = build_model(cfg)
    _gd(model, cfg, 10)
    meter = sh.SharpnessMeter(cfg.loss, cfg.lam_ws, cfg.lam_h)
    op = sh.hessian_operator(model, sh.PARAMS, cfg.loss, "total", cfg.lam_ws, cfg.lam_h)
    values, vectors = torch.linalg.eigh(op.dense())
    assert values[-1] - values[-2] > 1e-3 * values[-1]
    meter._vectors = vectors[:, -2:-1].clone()
    assert meter.measure(model).value == pytest.approx(float(values[-1]), rel=1e-6)


@pytest.mark.parametrize("kw", [{}, {"lam_w": [0.02, 0.01, 0.03], "width": [4, 6, 5]}])
def test_sharpness_at_the_optimum_is_the_closed_form(kw) -> None:
    cfg = _cfg(init="optimum", **kw)
    pred = sh.predicted_sharpness(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h, cfg.widths)
    assert pred is not None
    reading = sh.SharpnessMeter(cfg.loss, cfg.lam_ws, cfg.lam_h).measure(build_model(cfg))
    assert reading.value == pytest.approx(pred, rel=1e-8)
    assert reading.value == pytest.approx(dense_top(build_model(cfg), cfg), rel=1e-8)


def test_no_closed_form_where_the_theory_has_none() -> None:
    args = (3, 4, [0.01] * 3, 0.01, [5] * 3)
    assert sh.predicted_sharpness(*args) is not None
    assert sh.predicted_sharpness(*args, activation="relu") is None
    assert sh.predicted_sharpness(*args, loss="ce") is None
    assert sh.predicted_sharpness(3, 4, [0.01] * 3, 0.0, [5] * 3) is None
    assert sh.predicted_sharpness(3, 4, [0.01] * 3, 0.01, [5, 2, 5]) is None


def test_stability_limits_and_the_edge_flag() -> None:
    assert sh.stability_limit("gd", 0.5) == 4.0
    assert sh.stability_limit("momentum", 0.5, 0.9) == pytest.approx(7.6)
    assert sh.stability_limit("adam", 0.5) is None
    assert sh.at_edge(4.0, 4.0) and sh.at_edge(3.999, 4.0) and sh.at_edge(5.0, 4.0)
    assert not sh.at_edge(3.9, 4.0)
    assert not sh.at_edge(5.0, None) and not sh.at_edge(None, 4.0)
    assert not sh.at_edge(math.nan, 4.0)


def _rows(run_dir: Path) -> list[dict]:
    return open_run(run_dir).metrics()


def test_off_by_default_and_measuring_does_not_change_the_run(runs_dir: Path) -> None:
    assert RunConfig().log_sharpness is False
    plain = kinds.train(_cfg(), runs_dir, progress=None)
    logged = kinds.train(_cfg(log_sharpness=True), runs_dir, progress=None)
    a, b = _rows(plain.run.path), _rows(logged.run.path)
    assert len(a) == len(b) == 9
    assert all(not SHARP_KEYS & set(r) for r in a)
    for ra, rb in zip(a, b, strict=True):
        assert set(rb) >= SHARP_KEYS
        assert rb["sharpness_products"] >= 1 and rb["sharpness_limit"] == 2 / 0.2
        assert rb["edge_of_stability"] is False
        # every other key bit for bit (the measurement does not touch the parameters)
        assert {k: v for k, v in rb.items() if k not in SHARP_KEYS | {"time"}} == \
            {k: v for k, v in ra.items() if k != "time"}
    model = kinds.load_checkpoint(logged.run.checkpoint_path(120)).model.double()
    assert b[-1]["sharpness"] == pytest.approx(dense_top(model, _cfg()), rel=1e-6)


def test_resume_logs_sharpness_again_from_a_cold_start(runs_dir: Path) -> None:
    whole = kinds.train(_cfg(log_sharpness=True), runs_dir, progress=None)
    part = kinds.train(_cfg(log_sharpness=True, steps=60), runs_dir, progress=None)
    resumed = kinds.resume(part.run.path, steps=120, progress=None)
    assert resumed.state == "finished"
    a = {r["step"]: r for r in _rows(whole.run.path)}
    b = {r["step"]: r for r in _rows(part.run.path)}
    assert b.keys() >= {60, 75, 90, 105, 120} and all(set(r) >= SHARP_KEYS for r in b.values())
    for step in a.keys() & b.keys():  # the same states: the same sharpness, to the tolerance
        assert b[step]["loss"] == a[step]["loss"]
        assert b[step]["sharpness"] == pytest.approx(a[step]["sharpness"], rel=1e-6)


@pytest.mark.parametrize(("factor", "flagged"), [(1.1, True), (0.8, False)])
def test_a_run_at_the_edge_of_stability_is_flagged(runs_dir: Path, factor, flagged) -> None:
    lr = factor * 2 / PRED_EOS
    cfg = RunConfig(**EOS, lr=lr, log_sharpness=True)
    assert sh.predicted_sharpness(2, 2, cfg.lam_ws, cfg.lam_h, cfg.widths) == \
        pytest.approx(PRED_EOS, rel=1e-12)
    res = kinds.train(cfg, runs_dir, progress=None)
    assert res.state == "finished"
    rows = _rows(res.run.path)
    assert rows[0]["sharpness"] < 0.5 * 2 / lr  # far from the edge at the start
    assert any(r["edge_of_stability"] for r in rows) is flagged
    assert all(r["edge_of_stability"] == (r["sharpness"] >= (1 - sh.EDGE_RTOL) * 2 / lr)
               for r in rows)
    if not flagged:  # it converged to the optimum: the closed-form sharpness
        assert rows[-1]["sharpness"] == pytest.approx(PRED_EOS, rel=1e-6)
    else:  # ended above the limit, on an orbit rather than at the optimum
        assert rows[-1]["sharpness"] > 2 / lr


@pytest.mark.parametrize(("kw", "needle"), [
    ({"model": "resnet20"}, "model ufm only"),
    ({"optimizer": "adam"}, "gd or momentum"),
])
def test_config_refuses_log_sharpness_where_it_does_not_apply(kw, needle) -> None:
    cfg = RunConfig.from_dict({**kw, "log_sharpness": True})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert err.value.field == "log_sharpness" and needle in str(err.value)
    assert "\n" not in str(err.value)


def test_config_log_sharpness_must_be_a_bool() -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig(log_sharpness="maybe").validate()
    assert err.value.field == "log_sharpness"
    RunConfig(log_sharpness=True, optimizer="momentum").validate()


def test_metrics_reader_types_the_sharpness_keys() -> None:
    row = typed_metrics_row({"step": 3, "sharpness": "x", "sharpness_products": 12,
                             "sharpness_limit": 10.0, "edge_of_stability": "yes"})
    assert row is not None
    assert row["sharpness"] is None and row["sharpness_products"] == 12
    assert row["sharpness_limit"] == 10.0 and row["edge_of_stability"] is None
    ok = typed_metrics_row({"step": 3, "edge_of_stability": True})
    assert ok is not None and ok["edge_of_stability"] is True


@pytest.mark.parametrize("args", [
    ["--log-sharpness", "true", "--optimizer", "adam"],
    ["--log-sharpness", "true", "--model", "resnet20"],
    ["--log-sharpness", "maybe"],
])
def test_cli_refuses_in_one_line_before_any_folder(args, tmp_path: Path, capsys) -> None:
    from dufm_core.cli import main

    runs = tmp_path / "runs"
    assert main(["train", *args, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: log_sharpness: "), err
    assert not runs.exists()


def test_cli_dry_run_accepts_the_option(capsys) -> None:
    from dufm_core.cli import main

    assert main(["train", "--log-sharpness", "true", "--optimizer", "momentum", "--dry-run"]) == 0
    assert '"log_sharpness": true' in capsys.readouterr().out
