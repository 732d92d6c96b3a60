"""Traces (dufm_core.curvature.trace) against dense float64 autograd Hessians and closed forms."""

from __future__ import annotations

import pytest
import torch

from dufm_core import theory
from dufm_core.config import RunConfig
from dufm_core.curvature import HessianOperator, KroneckerSpectrum
from dufm_core.curvature.base import DenseOperator
from dufm_core.curvature.trace import exact_trace, full_fit_trace, hutch_pp, hutchinson
from dufm_core.models import build_model


def _model(activation: str = "linear", init: str = "random", seed: int = 3,
           lam: float = 0.01) -> tuple[torch.nn.Module, RunConfig]:
    cfg = RunConfig(K=3, n=4, width=[6, 5], depth=2, activation=activation, init=init,
                    init_noise=0.0, seed=seed, lam_w=lam, lam_h=lam)
    cfg.validate()
    return build_model(cfg), cfg


@pytest.mark.parametrize("init", ["random", "optimum"])
def test_layer_trace_is_trP_trQ(init: str) -> None:
    model, cfg = _model(init=init)
    for l in range(1, cfg.depth + 1):
        dense = HessianOperator(model, f"layer:{l}", "mse").dense()
        want = float(dense.diagonal().sum())
        got = exact_trace(KroneckerSpectrum.from_model(model, l))
        assert got.stderr == 0.0 and got.matvecs == 0
        assert abs(got.value - want) < 1e-12 * abs(want)


@pytest.mark.parametrize("params", ["weights", "weights+features"])
def test_full_fit_trace_is_sum_of_diagonal_blocks(params: str) -> None:
    model, _ = _model()
    want = float(torch.linalg.eigvalsh(HessianOperator(model, params, "mse").dense()).sum())
    got = full_fit_trace(model, params, "mse")
    assert got is not None and abs(got - want) < 1e-11 * abs(want)


def test_full_fit_trace_needs_layer_traces_beyond_linear_mse() -> None:
    model, _ = _model("relu")
    assert full_fit_trace(model, "weights", "mse") is None
    dense = HessianOperator(model, "weights", "mse").dense()
    blocks = [float(HessianOperator(model, f"layer:{l}", "mse").dense().trace()) for l in (1, 2)]
    got = full_fit_trace(model, "weights", "mse", layer_traces=blocks)
    assert got is not None and abs(got - float(dense.trace())) < 1e-11 * abs(got)
    assert full_fit_trace(model, "weights+features", "mse", layer_traces=blocks) is None


def test_trace_is_k2_times_outlier_at_the_optimum() -> None:
    """At the linear-MSE global optimum each layer Hessian has rank K² with one eigenvalue, so
    tr = K²·λ*_l exactly; away from it the identity fails (the test could fail)."""
    model, cfg = _model(init="optimum")
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    for l in range(1, cfg.depth + 1):
        tr = KroneckerSpectrum.from_model(model, l).trace()
        assert abs(tr - cfg.K**2 * pred.layer_outlier[l - 1]) < 1e-10 * tr
    noisy, _ = _model(init="random")
    ks = KroneckerSpectrum.from_model(noisy, 1)
    assert abs(ks.trace() - cfg.K**2 * float(ks.values()[0])) > 1e-3 * ks.trace()


@pytest.mark.parametrize(("activation", "loss"), [("linear", "mse"), ("relu", "mse"),
                                                  ("relu", "ce")])
def test_estimators_agree_with_exact_within_their_error(activation: str, loss: str) -> None:
    model, _ = _model(activation)
    op = HessianOperator(model, "weights+features", loss)
    exact = float(op.dense().diagonal().sum())
    h = hutchinson(op, probes=120, seed=1)
    hpp = hutch_pp(op, matvecs=120, seed=1)
    assert h.matvecs == 120 and hpp.matvecs <= 120
    for est in (h, hpp):
        assert est.stderr > 0
        assert abs(est.value - exact) < 5 * est.stderr + 1e-12, (est, exact)
    assert hpp.stderr < h.stderr  # the deflated part has far less variance


def test_hutch_pp_is_exact_on_low_rank() -> None:
    """Rank below the sketch: the range part is everything, the residual is rounding."""
    g = torch.Generator().manual_seed(0)
    U = torch.randn(50, 4, generator=g, dtype=torch.float64)
    A = DenseOperator(U @ torch.diag(torch.tensor([5.0, 3.0, 2.0, 1.0], dtype=torch.float64))
                      @ U.T)
    est = hutch_pp(A, matvecs=30)
    assert abs(est.value - float(A.A.trace())) < 1e-10 * float(A.A.trace())
    assert est.stderr < 1e-10


def test_estimator_arguments_are_checked() -> None:
    A = DenseOperator(torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="probes"):
        hutchinson(A, probes=1)
    with pytest.raises(ValueError, match="matvecs"):
        hutch_pp(A, matvecs=5)
