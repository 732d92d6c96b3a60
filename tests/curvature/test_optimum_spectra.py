"""Golden spectra at the closed-form optimum (docs/theory.md §4, §8: cases A, B, E).

Measured with the curvature engine (HessianOperator + block Krylov, dense eigvalsh and the
Kronecker factors) and compared with ``theory.predict``: layer-wise K² outliers and rank,
the full weight fit-Hessian with its ρ split, and weights + H_1.
"""

from __future__ import annotations

import pytest
import torch

from dufm_core import theory
from dufm_core.config import RunConfig
from dufm_core.curvature import (
    HessianOperator,
    KroneckerSpectrum,
    LinearHessianOperator,
    count_outliers,
    full_spectrum,
    top_eigenpairs,
)
from dufm_core.models import build_model

RTOL = 1e-8

CASES = {
    # name: (K, n, width, L, lam_w, lam_h)
    "A": (3, 40, 6, 5, 0.01, 0.01),
    "B": (4, 10, 16, 4, 1e-3, 1e-3),
    "E": (3, 4, 6, 3, [0.01, 0.02, 0.005], 0.01),
}


def _setup(name: str) -> tuple[torch.nn.Module, theory.Prediction, RunConfig]:
    K, n, width, L, lam_w, lam_h = CASES[name]
    cfg = RunConfig(K=K, n=n, width=width, depth=L, lam_w=lam_w, lam_h=lam_h, init="optimum")
    cfg.validate()
    return build_model(cfg), theory.predict(K, n, cfg.lam_ws, cfg.lam_h), cfg


def _close(got: torch.Tensor, want: list[float] | tuple[float, ...], rtol: float = RTOL) -> None:
    want_t = torch.tensor(sorted(want, reverse=True), dtype=torch.float64)
    err = float(((got - want_t).abs() / want_t.abs()).max())
    assert err < rtol, (got.tolist(), list(want), err)


@pytest.mark.parametrize("name", ["A", "B", "E"])
def test_layer_outliers_and_rank(name: str) -> None:
    model, pred, cfg = _setup(name)
    K = cfg.K
    for layer in range(1, cfg.depth + 1):
        want = [pred.layer_outlier[layer - 1]] * K * K
        ks = KroneckerSpectrum.from_model(model, layer).values()
        _close(ks[: K * K], want)
        assert float(ks[K * K :].abs().max()) < 1e-12 * float(ks[0])  # rank exactly K²
        op = HessianOperator(model, f"layer:{layer}", "mse")
        res = top_eigenpairs(op, K * K + 1, block=K * K + 3, tol=1e-10)
        _close(res.values[: K * K], want)
        assert abs(float(res.values[K * K])) < 1e-10 * float(res.values[0])
        assert res.all_converged
        assert count_outliers(res.values, "gap") == K * K
        tot = KroneckerSpectrum.from_model(model, layer, "total", cfg.lam_ws).values()
        _close(tot[: K * K], [pred.layer_outlier_total[layer - 1]] * K * K)


@pytest.mark.parametrize("kind", [HessianOperator, LinearHessianOperator])
@pytest.mark.parametrize("name", ["A", "B", "E"])
def test_full_weight_hessian_outliers_with_rho_split(name: str, kind: type) -> None:
    model, pred, cfg = _setup(name)
    K2 = cfg.K**2
    op = kind(model, "weights", "mse")
    res = top_eigenpairs(op, K2 + 1, block=K2 + 4, tol=1e-10)
    assert res.all_converged
    _close(res.values[:K2], pred.full_outliers)
    # the split: K(K+1)/2 at the lower value and K(K−1)/2 at the upper (docs/theory.md §4.5)
    upper = sorted(pred.full_outliers, reverse=True)[0]
    n_upper = int(((res.values[:K2] - upper).abs() < 1e-8 * upper).sum())
    assert n_upper == cfg.K * (cfg.K - 1) // 2
    # bulk: O(λ), far below the outliers
    assert float(res.values[K2]) < 0.2 * float(res.values[K2 - 1])
    if op.dim <= 2000:
        dense = full_spectrum(op)
        _close(dense[:K2], pred.full_outliers)
    gn = top_eigenpairs(kind(model, "weights", "mse", part="gn"), K2 + 1, block=K2 + 4)
    _close(gn.values[:K2], [pred.full_gn_outlier] * K2)
    assert abs(float(gn.values[K2])) < 1e-10 * float(gn.values[0])
    tot = top_eigenpairs(
        kind(model, "weights", "mse", "total", cfg.lam_ws, cfg.lam_h), K2, block=K2 + 4
    )
    _close(tot.values, pred.full_outliers_total)


@pytest.mark.parametrize("kind", [HessianOperator, LinearHessianOperator])
@pytest.mark.parametrize("name", ["A", "E"])
def test_weights_plus_features(name: str, kind: type) -> None:
    model, pred, cfg = _setup(name)
    K2 = cfg.K**2
    op = kind(model, "weights+features", "mse")
    dense = full_spectrum(op, max_dim=4000)
    _close(dense[:K2], pred.full_outliers_with_features)
    # the K(N−K) within-class H_1 directions sit at λ_H γ/(1−γ) (docs/theory.md §4.5)
    h1 = pred.lam_h * pred.gamma / pred.one_minus_gamma
    n_h1 = int(((dense - h1).abs() < 1e-8 * h1).sum())
    assert n_h1 >= cfg.K * (cfg.N - cfg.K)
    res = top_eigenpairs(op, K2, block=K2 + 3, tol=1e-10)
    _close(res.values, pred.full_outliers_with_features)


def test_eigenvectors_span_the_predicted_layer_space() -> None:
    """Case A, layer 3: the top-K² eigenspace is span{μ_c^{(4)} μ_{c'}^{(3)ᵀ}} (subspace test)."""
    model, _, cfg = _setup("A")
    feats = model.layer_features().post
    K, n = cfg.K, cfg.n
    M3 = feats[2].reshape(-1, K, n).mean(dim=2)  # class means μ_c^{(3)}, columns
    M4 = feats[3].reshape(-1, K, n).mean(dim=2)
    pred_vecs = torch.stack(
        [torch.outer(M4[:, c], M3[:, cp]).reshape(-1) for c in range(K) for cp in range(K)], 1
    )
    Qp, _ = torch.linalg.qr(pred_vecs)
    res = top_eigenpairs(HessianOperator(model, "layer:3"), K * K, block=K * K + 2)
    U = res.vectors
    # projector distance ‖U Uᵀ − Qp Qpᵀ‖₂ = sin of the largest principal angle
    s = torch.linalg.svdvals(Qp.T @ U)
    assert float(s.min()) > 1 - 1e-10
