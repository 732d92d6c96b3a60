"""Exact Kronecker layer blocks of the linear MSE model against dense autograd Hessians."""

from __future__ import annotations

import pytest
import torch

from dufm_core import theory
from dufm_core.config import RunConfig
from dufm_core.curvature import (
    HessianOperator,
    KroneckerSpectrum,
    LinearHessianOperator,
    full_spectrum,
    hessian_operator,
    layer_factors,
    top_eigenpairs,
)
from dufm_core.models import build_model
from tests.curvature.test_operators import dense_fit, rel


def _model(init: str, seed: int = 4) -> torch.nn.Module:
    cfg = RunConfig(K=3, n=4, width=[5, 6, 4], depth=3, init=init, seed=seed, init_noise=0.0)
    cfg.validate()
    return build_model(cfg)


@pytest.mark.parametrize("init", ["random", "optimum"])
def test_factors_reproduce_the_dense_layer_hessian(init: str) -> None:
    model = _model(init)
    for layer in (1, 2, 3):
        ref = dense_fit(model, (f"weights.{layer - 1}",), "mse")
        P, Q = layer_factors(model, layer)
        d_out, d_in = model.weights[layer - 1].shape
        assert P.shape == (d_out, d_out) and Q.shape == (d_in, d_in)
        ks = KroneckerSpectrum(P, Q, layer=layer)
        assert rel(ks.dense(), ref) < 1e-10
        assert rel(torch.kron(P, Q), ref) < 1e-10  # row-major: P on the output index
        dense_vals = torch.linalg.eigvalsh(ref).flip(0)
        assert (ks.values() - dense_vals).abs().max() < 1e-12 * dense_vals.abs().max()
        assert rel(full_spectrum(ks), dense_vals) < 1e-10


def test_matmat_top_and_total_shift() -> None:
    model = _model("random", seed=9)
    lam_w = [0.01, 0.02, 0.03]
    ks = KroneckerSpectrum.from_model(model, 2)
    op = HessianOperator(model, "layer:2")
    V = torch.randn(ks.dim, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert rel(ks.matmat(V), op.matmat(V)) < 1e-12
    assert rel(ks.matvec(V[:, 0]), op.matvec(V[:, 0])) < 1e-12
    vals, mats = ks.top(5)
    assert torch.allclose(vals, ks.values()[:5], rtol=0, atol=1e-15)
    for v, M in zip(vals, mats, strict=True):
        assert abs(float(M.norm()) - 1.0) < 1e-12
        assert rel(ks.apply(M), v * M) < 1e-10  # P M Qᵀ = λ M
    tot = KroneckerSpectrum.from_model(model, 2, part="total", lam_w=lam_w)
    assert torch.allclose(tot.values(), ks.values() + 0.02, rtol=0, atol=1e-15)
    op_tot = HessianOperator(model, "layer:2", part="total", lam_w=lam_w, lam_h=0.01)
    assert rel(tot.matmat(V), op_tot.matmat(V)) < 1e-12
    # the eigensolver works on the Kronecker operator as on any other
    res = top_eigenpairs(ks, 3, tol=1e-12)
    assert res.all_converged
    assert torch.allclose(res.values, ks.values()[:3], rtol=1e-12, atol=0)


def test_relu_is_refused() -> None:
    cfg = RunConfig(K=3, n=2, width=4, depth=2, activation="relu")
    cfg.validate()
    with pytest.raises(ValueError, match="linear model"):
        layer_factors(build_model(cfg), 1)
    with pytest.raises(ValueError, match=r"1\.\.2"):
        layer_factors(build_model(RunConfig(K=3, n=2, width=4, depth=2)), 3)


def test_case_a_width_64_layer_spectrum_is_the_closed_form() -> None:
    """Case A (docs/theory.md §8) at d = 64: every layer has 9 outliers λ_W γ/(1−γ), zeros else."""
    cfg = RunConfig(K=3, n=40, width=64, depth=5, lam_w=0.01, lam_h=0.01, init="optimum")
    cfg.validate()
    model = build_model(cfg)
    pred = theory.predict(3, 40, cfg.lam_ws, cfg.lam_h)
    for layer in range(1, 6):
        vals = KroneckerSpectrum.from_model(model, layer).values()
        assert vals.numel() == model.weights[layer - 1].numel()
        assert torch.allclose(
            vals[:9],
            torch.full((9,), pred.layer_outlier[layer - 1], dtype=torch.float64),
            rtol=1e-9,
            atol=0,
        )
        assert float(vals[9:].abs().max()) < 1e-12 * float(vals[0])


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("init", ["random", "optimum"])
def test_structured_linear_operator_matches_autograd(loss: str, init: str) -> None:
    cfg = RunConfig(K=3, n=2, width=[4, 5, 4], depth=3, loss=loss, init=init, seed=3)
    cfg.validate()
    model = build_model(cfg)
    lam_w, lam_h = [0.01, 0.02, 0.03], 0.04
    for spec in ["layer:2", "layers:3,1", "weights", "weights+features", "features"]:
        fit = HessianOperator(model, spec, loss).dense()
        scale = float(fit.abs().max())
        for part in ["fit", "gn", "residual", "total"]:
            ref = HessianOperator(model, spec, loss, part, lam_w, lam_h).dense()
            got = LinearHessianOperator(model, spec, loss, part, lam_w, lam_h).dense()
            assert float((got - ref).abs().max()) < 1e-12 * scale, (spec, part)
        # a single factor enters the logits linearly: no residual (second-derivative) part
        if spec in ("layer:2", "features"):
            res = LinearHessianOperator(model, spec, loss, "residual").dense()
            assert float(res.abs().max()) == 0.0


def test_hessian_operator_factory() -> None:
    lin = _model("random")
    assert isinstance(hessian_operator(lin, "weights"), LinearHessianOperator)
    assert isinstance(hessian_operator(lin, "weights", structured=False), HessianOperator)
    cfg = RunConfig(K=3, n=2, width=4, depth=2, activation="relu")
    cfg.validate()
    relu = build_model(cfg)
    assert isinstance(hessian_operator(relu, "weights"), HessianOperator)
    with pytest.raises(ValueError, match="linear model"):
        hessian_operator(relu, "weights", structured=True)
