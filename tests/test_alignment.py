"""Eigenvector alignment (docs/theory.md §4.1, §6.2, §8).

References are dense float64 autograd Hessians of one layer, built here (shared with the
gradient, weight and Gauss–Newton tests).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from dufm_core import theory
from dufm_core.alignment import (
    alignment_f,
    alignment_report,
    cosine_heatmap,
    dense_hvp,
    layer_means,
    predicted_basis,
    predicted_span,
    principal_angles,
    subspace_capture,
)
from dufm_core.config import RunConfig
from dufm_core.curvature.kronecker import KroneckerSpectrum, layer_factors
from dufm_core.models import DeepUFM, build_model, fit_term
from dufm_core.subspaces import orthonormal_basis

# ----------------------------------------------------------------------------- shared helpers
# docs/theory.md §8 cases with a small width (the closed forms do not depend on d).
CASES = {
    "A": {"K": 3, "n": 40, "width": 6, "depth": 5, "lam_w": 0.01, "lam_h": 0.01},
    "B": {"K": 4, "n": 10, "width": 6, "depth": 4, "lam_w": 1e-3, "lam_h": 1e-3},
    "E": {"K": 3, "n": 4, "width": 6, "depth": 3, "lam_w": [0.01, 0.02, 0.005], "lam_h": 0.01},
}
RELU_G = {"K": 3, "n": 4, "width": 7, "depth": 4, "lam_w": 0.01, "lam_h": 0.01}  # Case G


def make_model(params: dict, **kw: object) -> tuple[DeepUFM, RunConfig]:
    """Model for a config dict (+ overrides), validated."""
    cfg = RunConfig(**{**params, **kw})
    cfg.validate()
    return build_model(cfg), cfg


def prediction(cfg: RunConfig) -> theory.Prediction:
    """Closed-form prediction for a config."""
    return theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)


def logits_with_layer(model: DeepUFM, l: int, w: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) with W_l replaced by ``w`` (flattened row-major), everything else fixed."""
    Ws = [W.detach() for W in model.weights]
    Ws[l - 1] = w.reshape(Ws[l - 1].shape)
    h = model.features.detach()
    for j, W in enumerate(Ws):
        if j > 0 and model.activation == "relu":
            h = torch.relu(h)
        h = W @ h
    return h.T


def dense_layer_hessian(model: DeepUFM, l: int, loss: str = "mse") -> torch.Tensor:
    """Dense fit Hessian of vec_r W_l by torch.autograd.functional.hessian (float64)."""
    w0 = model.weights[l - 1].detach().reshape(-1).clone()

    def f(w: torch.Tensor) -> torch.Tensor:
        return fit_term(logits_with_layer(model, l, w), model.labels, loss)

    return torch.autograd.functional.hessian(f, w0)


def top_eigvecs(H: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-m eigenvalues (descending) and eigenvectors (columns) of a symmetric matrix."""
    evals, evecs = torch.linalg.eigh(H)
    return evals.flip(0)[:m], evecs.flip(1)[:, :m]


def basis_of(model: DeepUFM, l: int) -> torch.Tensor:
    """Predicted unit basis of layer l."""
    return predicted_basis(*layer_means(model, l))


# ----------------------------------------------------------------------------- optimum
@pytest.mark.parametrize("case", sorted(CASES))
def test_alignment_at_linear_optimum(case: str) -> None:
    model, cfg = make_model(CASES[case], init="optimum")
    pred = prediction(cfg)
    K2 = cfg.K**2
    for l in range(1, cfg.depth + 1):
        H = dense_layer_hessian(model, l)
        evals, U = top_eigvecs(H, K2)
        torch.testing.assert_close(
            evals, torch.full_like(evals, pred.layer_outlier[l - 1]), rtol=1e-9, atol=0
        )
        basis = basis_of(model, l)
        P, Q = layer_factors(model, l)
        ones = torch.ones(cfg.K, cfg.K, dtype=torch.float64)
        for hvp in (KroneckerSpectrum(P, Q).apply, dense_hvp(H)):
            torch.testing.assert_close(alignment_f(hvp, basis), ones, rtol=0, atol=1e-10)
        torch.testing.assert_close(subspace_capture(U, basis), ones, rtol=0, atol=1e-10)
        angles = principal_angles(U, basis)
        assert angles.numel() == K2 and float(angles.max()) < 1e-7
        heat = cosine_heatmap(U, basis)
        assert heat.shape == (K2, K2)
        torch.testing.assert_close(heat.norm(dim=1), ones.reshape(-1), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- random points
@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_alignment_f_matches_direct_dense(activation: str) -> None:
    params = {"K": 3, "n": 5, "width": 6, "depth": 3, "lam_w": 0.01, "lam_h": 0.01}
    model, cfg = make_model(params, init="random", activation=activation, seed=7)
    for l in range(1, cfg.depth + 1):
        H = dense_layer_hessian(model, l).numpy()
        basis = basis_of(model, l)
        f = alignment_f(dense_hvp(torch.from_numpy(H)), basis).numpy()
        ref = np.zeros((cfg.K, cfg.K))
        for c in range(cfg.K):
            for d in range(cfg.K):
                v = basis[c, d].reshape(-1).numpy()
                Hv = H @ v
                ref[c, d] = (v @ Hv) ** 2 / ((v @ v) * (Hv @ Hv))
        np.testing.assert_allclose(f, ref, rtol=1e-12, atol=1e-14)
        assert f.min() > 0 and f.max() < 1 - 1e-6  # a generic point is not aligned
        if activation == "linear":
            P, Q = layer_factors(model, l)
            np.testing.assert_allclose(
                alignment_f(KroneckerSpectrum(P, Q).apply, basis).numpy(),
                ref,
                rtol=1e-10,
                atol=1e-14,
            )


def test_capture_angles_heatmap_match_dense_projector() -> None:
    params = {"K": 3, "n": 5, "width": 6, "depth": 3, "lam_w": 0.01, "lam_h": 0.01}
    model, cfg = make_model(params, init="random", seed=11)
    l = 2
    H = dense_layer_hessian(model, l)
    for m in (4, 9, 15):  # fewer, as many as, more eigenvectors than K²
        _, U = top_eigvecs(H, m)
        basis = basis_of(model, l)
        V = basis.reshape(cfg.K**2, -1).numpy()
        Un = U.numpy()
        Proj = Un @ Un.T
        pi_ref = np.array([(v @ Proj @ v) / (v @ v) for v in V]).reshape(cfg.K, cfg.K)
        np.testing.assert_allclose(subspace_capture(U, basis).numpy(), pi_ref, atol=1e-12)
        ang_ref = np.sort(scipy.linalg.subspace_angles(V.T, Un))
        ang = principal_angles(U, basis).numpy()
        assert ang.shape == (min(m, cfg.K**2),)
        np.testing.assert_allclose(ang, ang_ref, atol=1e-10)
        heat = cosine_heatmap(U, basis).numpy()
        ref = np.abs(V @ Un) / np.linalg.norm(V, axis=1)[:, None]
        np.testing.assert_allclose(heat, ref, atol=1e-12)
        np.testing.assert_allclose((heat**2).sum(1), pi_ref.reshape(-1), atol=1e-12)


def test_degenerate_eigenspace_capture_is_basis_invariant() -> None:
    """At the optimum the K² outliers are equal: rotating U_top inside their eigenspace leaves
    the capture unchanged but changes the per-vector cosine heatmap (docs/theory.md §9)."""
    model, cfg = make_model(CASES["A"], init="optimum")
    K2, l = cfg.K**2, 3
    _, U = top_eigvecs(dense_layer_hessian(model, l), K2)
    basis = basis_of(model, l)
    R, _ = torch.linalg.qr(torch.randn(K2, K2, generator=torch.Generator().manual_seed(0),
                                       dtype=torch.float64))  # fmt: skip
    U2 = U @ R
    pi1, pi2 = subspace_capture(U, basis), subspace_capture(U2, basis)
    torch.testing.assert_close(pi1, pi2, rtol=0, atol=1e-12)
    torch.testing.assert_close(principal_angles(U, basis), principal_angles(U2, basis),
                               rtol=0, atol=1e-7)  # fmt: skip
    h1, h2 = cosine_heatmap(U, basis), cosine_heatmap(U2, basis)
    assert float((h1 - h2).abs().max()) > 0.1
    torch.testing.assert_close(h1.norm(dim=1), h2.norm(dim=1), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- ReLU DNC point
def test_relu_dnc_diagonal_pairs_are_eigenvectors() -> None:
    """At the ReLU DNC point the K diagonal pairs are eigenvectors (f = 1) of the autograd
    Hessian in every layer (docs/theory.md §4.6)."""
    model, cfg = make_model(RELU_G, init="optimum", activation="relu")
    for l in range(1, cfg.depth + 1):
        H = dense_layer_hessian(model, l)
        diag = torch.diagonal(alignment_f(dense_hvp(H), basis_of(model, l)))
        torch.testing.assert_close(diag, torch.ones_like(diag), rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------- misc
def test_report_and_validation() -> None:
    model, cfg = make_model(CASES["E"], init="optimum")
    basis = basis_of(model, 1)
    _, U = top_eigvecs(dense_layer_hessian(model, 1), cfg.K**2)
    ks = KroneckerSpectrum(*layer_factors(model, 1))
    rep = alignment_report(basis, ks.apply, U)
    json.dumps(rep)
    assert set(rep) >= {"alignment_f", "subspace_capture", "principal_angles", "cosine_heatmap"}
    assert alignment_report(basis, ks, U) == rep  # an operator is used through its matrix form
    with pytest.raises(ValueError, match="layer"):
        layer_means(model, 0)
    relu, _ = make_model(RELU_G, init="optimum", activation="relu")
    with pytest.raises(ValueError, match="linear"):
        layer_factors(relu, 1)


@pytest.mark.parametrize("case", ["generic", "rank_deficient", "zero_mean"])
def test_predicted_span_is_the_span_of_the_stacked_basis(case: str) -> None:
    """predicted_span (two d × K SVDs) spans the same subspace as the SVD of the d_out·d_in × K²
    stack of predicted_basis, with the same numerical rank: projectors equal to rounding."""
    g = torch.Generator().manual_seed(3)
    M_out = torch.randn(7, 3, dtype=torch.float64, generator=g)
    M_in = torch.randn(5, 3, dtype=torch.float64, generator=g)
    if case == "rank_deficient":  # two equal input means (collapsed classes): rank 2 on the right
        M_in[:, 2] = M_in[:, 1]
    if case == "zero_mean":
        M_out[:, 0] = 0.0
    Q = predicted_span(M_out, M_in)
    ref = orthonormal_basis(predicted_basis(M_out, M_in).reshape(9, -1).T)
    assert Q.shape == ref.shape
    assert float((Q.T @ Q - torch.eye(Q.shape[1], dtype=torch.float64)).abs().max()) < 1e-13
    assert float((Q @ Q.T - ref @ ref.T).abs().max()) < 1e-12
    assert predicted_span(torch.zeros(4, 2), torch.ones(3, 2)).shape == (12, 0)
