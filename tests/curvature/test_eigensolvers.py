"""Block eigensolver on matrices with known degenerate clusters; outlier-counting rules.

Eigenvectors of a degenerate eigenvalue are compared as subspaces (principal angles /
projector distance to the true eigenspace), never vector by vector (docs/theory.md §9).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dufm_core.curvature import (
    DenseOperator,
    count_outliers,
    default_block,
    full_spectrum,
    top_eigenpairs,
)


def spectral_matrix(values: list[float] | torch.Tensor, seed: int = 0):
    """A = Q diag(values) Qᵀ with a random orthogonal Q; returns (A, Q, values)."""
    vals = torch.as_tensor(values, dtype=torch.float64)
    n = vals.numel()
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (Q * vals) @ Q.T, Q, vals


def outside(U: torch.Tensor, basis: torch.Tensor) -> float:
    """‖(I − P) U‖₂ with P the projector on span(basis) (orthonormal columns): the sine of the
    largest principal angle between span(U) and that space (0 when contained)."""
    return float(torch.linalg.matrix_norm(U - basis @ (basis.T @ U), ord=2))


def check_residuals(A: torch.Tensor, res) -> None:
    """Reported residual norms are the explicit ‖A v − θ v‖ and the flags follow the rule."""
    R = A @ res.vectors - res.vectors * res.values
    explicit = R.norm(dim=0)
    assert torch.allclose(res.residual_norms, explicit, rtol=1e-6, atol=1e-13)
    scale = float(res.values.abs().max())
    assert torch.equal(res.converged, res.residual_norms <= res.tol * scale)
    G = res.vectors.T @ res.vectors
    assert float((G - torch.eye(G.shape[0], dtype=G.dtype)).abs().max()) < 1e-12


def test_nine_fold_cluster_over_a_near_bulk() -> None:
    n = 400
    bulk = torch.linspace(0.0, 0.9, n - 9, dtype=torch.float64)
    A, Q, _ = spectral_matrix(torch.cat([torch.ones(9, dtype=torch.float64), bulk]))
    res = top_eigenpairs(A, 9, tol=1e-10)
    assert res.all_converged
    assert float((res.values - 1.0).abs().max()) < 1e-12
    assert outside(res.vectors, Q[:, :9]) < 1e-8  # all nine members of the cluster found
    check_residuals(A, res)
    assert res.matvecs <= res.iterations * default_block(9)


def test_cluster_straddling_the_requested_count() -> None:
    """Top 4 distinct, then a 9-fold cluster: m = 9 takes 5 of its members; those must lie in
    the cluster's eigenspace (any 5 of them are a valid answer)."""
    n = 300
    vals = [3.0, 2.5, 2.0, 1.5] + [1.0] * 9 + list(np.linspace(0.0, 0.6, n - 13))
    A, Q, _ = spectral_matrix(vals, seed=1)
    res = top_eigenpairs(A, 9, tol=1e-10)
    assert res.all_converged
    expect = torch.tensor([3.0, 2.5, 2.0, 1.5] + [1.0] * 5, dtype=torch.float64)
    assert float((res.values - expect).abs().max()) < 1e-11
    assert outside(res.vectors[:, :4], Q[:, :4]) < 1e-8
    assert outside(res.vectors[:, 4:], Q[:, 4:13]) < 1e-8
    check_residuals(A, res)


def test_cluster_just_below_the_requested_count() -> None:
    """An 8-fold top cluster and m = 9: the whole cluster plus the next eigenvalue."""
    n = 300
    vals = [1.0] * 8 + [0.97] + list(np.linspace(-0.5, 0.9, n - 9))
    A, Q, _ = spectral_matrix(vals, seed=2)
    res = top_eigenpairs(A, 9, block=9, tol=1e-10)
    assert res.all_converged
    assert float((res.values[:8] - 1.0).abs().max()) < 1e-11
    assert abs(float(res.values[8]) - 0.97) < 1e-11
    assert outside(res.vectors[:, :8], Q[:, :8]) < 1e-8
    assert outside(res.vectors, Q[:, :9]) < 1e-8
    check_residuals(A, res)


def test_one_iteration_reports_not_converged_honestly() -> None:
    n = 300
    A, _, _ = spectral_matrix([1.0] * 9 + list(np.linspace(0, 0.95, n - 9)), seed=3)
    res = top_eigenpairs(A, 9, max_iter=1, tol=1e-10)
    assert res.iterations == 1
    assert not bool(res.converged.any())
    assert float(res.residual_norms.min()) > 1e-6
    check_residuals(A, res)


def test_exactly_low_rank_and_degenerate_zeros() -> None:
    """Rank-3 operator: the Krylov space becomes invariant after one step; the solver must
    refill the block with fresh directions to return the zero eigenvalues too."""
    n = 200
    A, Q, _ = spectral_matrix([5.0, 4.0, 3.0] + [0.0] * (n - 3), seed=4)
    res = top_eigenpairs(A, 6, block=6, tol=1e-10)
    assert res.all_converged
    assert (
        float((res.values - torch.tensor([5, 4, 3, 0, 0, 0.0], dtype=torch.float64)).abs().max())
        < 1e-12
    )
    assert outside(res.vectors[:, :3], Q[:, :3]) < 1e-10
    check_residuals(A, res)


def test_restarts_and_largest_modulus() -> None:
    n = 500
    vals = [-4.0, -4.0, 3.0, *np.linspace(-1.0, 1.0, n - 3).tolist()]
    A, Q, _ = spectral_matrix(vals, seed=5)
    res = top_eigenpairs(A, 3, which="LM", block=4, max_basis=8, tol=1e-10)
    assert res.all_converged
    assert torch.allclose(
        res.values, torch.tensor([-4.0, -4.0, 3.0], dtype=torch.float64), atol=1e-11, rtol=0
    )
    assert outside(res.vectors[:, :2], Q[:, :2]) < 1e-8
    check_residuals(A, res)
    la = top_eigenpairs(DenseOperator(A), 2, tol=1e-10)  # algebraic: 3.0 then the bulk edge 1.0
    assert torch.allclose(la.values, torch.tensor([3.0, 1.0], dtype=torch.float64), atol=1e-10)


def test_argument_errors_and_full_spectrum() -> None:
    A, _, vals = spectral_matrix(list(np.linspace(-1, 2, 30)), seed=6)
    with pytest.raises(ValueError, match="at least 1"):
        top_eigenpairs(A, 5, block=0)
    with pytest.raises(ValueError, match="which"):
        top_eigenpairs(A, 2, which="SA")
    with pytest.raises(ValueError, match="m must be"):
        top_eigenpairs(A, 31)
    assert torch.allclose(full_spectrum(A), vals.flip(0), atol=1e-13, rtol=0)
    # m = dim: the Krylov space fills the whole space and the answer is exact
    res = top_eigenpairs(A, 30, tol=1e-12)
    assert torch.allclose(res.values, vals.flip(0), atol=1e-12, rtol=0)


def test_count_outliers_rules() -> None:
    rng = np.random.default_rng(0)
    bulk = rng.uniform(-0.01, 0.01, 500)
    spec = np.concatenate([[0.856] * 3, [0.776] * 6, bulk])
    top12 = np.sort(spec)[::-1][:12]
    assert count_outliers(top12, "gap") == 9
    assert count_outliers(spec, "relative", tau_rel=0.05) == 9
    assert count_outliers(spec, "mad", kappa=10.0) == 9
    # exactly low rank: 9 equal values and zeros (rounding noise) → rank 9
    low = np.concatenate([[0.16] * 9, rng.normal(0, 1e-17, 30)])
    assert count_outliers(low, "gap") == 9
    # K large + K(K−1) mini-bulk (CE-like): the largest gap decides
    ce = np.concatenate([[1.0] * 3, [0.2] * 6, [1e-4] * 20])
    assert count_outliers(ce, "gap") == 9
    assert count_outliers(ce, "gap", m=8) == 3
    assert count_outliers(ce, "relative", tau_rel=0.5) == 3
    assert count_outliers([], "gap") == 0
    with pytest.raises(ValueError, match="rule"):
        count_outliers(ce, "elbow")


def test_need_stops_when_the_leading_cluster_has_converged() -> None:
    """Nine degenerate outliers over a tight bulk (a trained UFM's full Hessian): asking for
    9 + 3 values with need=9 converges the outliers and returns the bulk values with honest,
    unconverged flags — without the hundreds of iterations the bulk cluster would take."""
    n = 600
    g = torch.Generator().manual_seed(3)
    bulk = 0.01 * (torch.rand(n - 9, generator=g, dtype=torch.float64) * 2 - 1)
    A, Q, _ = spectral_matrix(torch.cat([torch.full((9,), 0.8, dtype=torch.float64), bulk]))
    res = top_eigenpairs(A, 12, tol=1e-10, need=9, max_iter=300)
    assert bool(res.converged[:9].all())
    assert float((res.values[:9] - 0.8).abs().max()) < 1e-12
    assert outside(res.vectors[:, :9], Q[:, :9]) < 1e-8
    check_residuals(A, res)
    full = top_eigenpairs(A, 12, tol=1e-10, max_iter=300)
    assert res.iterations < full.iterations
    with pytest.raises(ValueError, match="need"):
        top_eigenpairs(A, 3, need=4)


@pytest.mark.parametrize("block", [1, 2, 4])
def test_a_block_smaller_than_m_finds_simple_eigenvalues_with_fewer_products(block: int) -> None:
    """Ten simple outliers over a two-signed bulk (a trained network's top-k): a block b < m
    returns the same ten values to 1e-10 with explicit residuals, and at b ≤ 2 with fewer
    products than the default block (a higher-degree Krylov space per product)."""
    g = torch.Generator().manual_seed(5)
    top = [50.0, 31.0, 22.0, 17.0, 13.0, 10.5, 9.0, 8.0, 7.2, 6.5, 5.9, 5.3]
    bulk = torch.cat([0.3 * torch.randn(500, generator=g, dtype=torch.float64),
                      torch.rand(100, generator=g, dtype=torch.float64) * 3.0])
    A, _, vals = spectral_matrix(torch.cat([torch.tensor(top, dtype=torch.float64), bulk]),
                                 seed=7)
    ref = torch.sort(vals, descending=True).values[:10]
    small = top_eigenpairs(A, 10, block=block, tol=1e-10, max_basis=48)
    assert small.values.numel() == 10 and bool(small.converged.all())
    assert torch.allclose(small.values, ref, atol=1e-9, rtol=0)
    check_residuals(A, small)
    wide = top_eigenpairs(A, 10, tol=1e-10)
    if block <= 2:
        assert small.matvecs < wide.matvecs


def test_float32_products_with_a_float64_basis_reach_the_products_accuracy() -> None:
    """A float32 operator is solved with its products in float32 and the basis in float64: the
    ten values of a float32 matrix converge at tol 1e-6 to its own eigenvalues within 1e-7
    (a float32 basis stalled near 1e-6 and never met tol 1e-6)."""
    g = torch.Generator().manual_seed(8)
    top = [50.0, 31.0, 22.0, 17.0, 13.0, 10.5, 9.0, 8.0, 7.2, 6.5, 5.9]
    bulk = 0.3 * torch.randn(700, generator=g, dtype=torch.float64)
    A, _, _ = spectral_matrix(torch.cat([torch.tensor(top, dtype=torch.float64), bulk]), seed=9)
    A32 = A.float()
    ref = torch.linalg.eigvalsh(A32.double()).flip(0)[:10]
    res = top_eigenpairs(DenseOperator(A32), 10, block=10, tol=1e-6, max_iter=60)
    assert res.values.dtype == torch.float64 and bool(res.converged.all())
    assert float(((res.values - ref).abs() / ref).max()) < 1e-7
