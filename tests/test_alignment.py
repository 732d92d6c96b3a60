"""Eigenvector alignment and the Gauss–Newton split (docs/theory.md §4.1, §4.2, §6.2, §8).

References are dense float64 autograd Hessians / Jacobians of one layer, built here.
"""

from __future__ import annotations

import json
import math

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
    gn_split,
    layer_means,
    predicted_basis,
    principal_angles,
    subspace_angles,
    subspace_capture,
    to_jsonable,
)
from dufm_core.config import RunConfig
from dufm_core.curvature.kronecker import KroneckerSpectrum, layer_factors
from dufm_core.models import DeepUFM, build_model, fit_term

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


def dense_layer_gn(model: DeepUFM, l: int, weighting: str = "identity") -> torch.Tensor:
    """Dense layer Gauss–Newton (1/N) Σ_i J_iᵀ P_i J_i from the autograd Jacobian of the logits;
    P_i = I (JᵀJ/N, the MSE GN) or the softmax Hessian diag p_i − p_i p_iᵀ (CE GN)."""
    w0 = model.weights[l - 1].detach().reshape(-1).clone()
    J = torch.autograd.functional.jacobian(lambda w: logits_with_layer(model, l, w), w0)
    N, K = J.shape[:2]
    if weighting == "identity":
        P = torch.eye(K, dtype=J.dtype).expand(N, K, K)
    else:
        p = torch.softmax(logits_with_layer(model, l, w0), dim=1)
        P = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ika,ikm,imb->ab", J, P, J) / N


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


@pytest.mark.parametrize("case", sorted(CASES))
def test_gn_split_at_linear_optimum(case: str) -> None:
    model, cfg = make_model(CASES[case], init="optimum")
    pred = prediction(cfg)
    K = cfg.K
    for l in range(1, cfg.depth + 1):
        rep = gn_split(model, l, return_parts=True)
        assert tuple(rep["ranks"]) == pred.gn_split_ranks == (0, K * (K - 1), K)
        assert rep["total"]["rank"] == K * K
        expected = pred.layer_outlier[l - 1]
        for part in ("cross", "class", "total"):
            eig = np.array(rep[part]["eigenvalues"])
            np.testing.assert_allclose(eig, expected, rtol=1e-8, atol=0)
        assert rep["orthogonality_error"] < 1e-12
        assert rep["orthogonality_max_cosine"] < 1e-12
        # closed forms G_class = Aᵀ(11ᵀ/K)A ⊗ Σ̂, G_cross = AᵀSA ⊗ Σ̂ (row-major torch.kron)
        parts = rep.pop("parts")
        json.dumps(rep)
        _, Q = layer_factors(model, l)
        Ws = [W.detach() for W in model.weights]
        A = torch.eye(K, dtype=torch.float64)
        for j in range(cfg.depth, l, -1):
            A = A @ Ws[j - 1]
        J = torch.ones(K, K, dtype=torch.float64) / K
        S = torch.eye(K, dtype=torch.float64) - J
        torch.testing.assert_close(
            parts.dense("class"), torch.kron(A.T @ J @ A, Q), atol=1e-13, rtol=0
        )
        torch.testing.assert_close(
            parts.dense("cross"), torch.kron(A.T @ S @ A, Q), atol=1e-13, rtol=0
        )
        assert float(parts.dense("within").abs().max()) < 1e-13


# ----------------------------------------------------------------------------- random points
RANDOM_SETUPS = [
    # (activation, loss, weighting, width): width 8 → NK ≤ dim (Gram path), 5 → dense path
    ("linear", "mse", "identity", 8),
    ("linear", "mse", "identity", 5),
    ("relu", "mse", "identity", 8),
    ("relu", "mse", "identity", 5),
    ("linear", "ce", "identity", 6),
    ("linear", "ce", "softmax", 8),
    ("relu", "ce", "softmax", 5),
]


@pytest.mark.parametrize(("activation", "loss", "weighting", "width"), RANDOM_SETUPS)
def test_gn_split_sums_to_dense_gn(activation: str, loss: str, weighting: str, width: int) -> None:
    params = {"K": 3, "n": 4, "width": width, "depth": 3, "lam_w": 0.01, "lam_h": 0.01}
    model, cfg = make_model(params, init="random", activation=activation, loss=loss, seed=3)
    gen = torch.Generator().manual_seed(1)
    for l in range(1, cfg.depth + 1):
        G = dense_layer_gn(model, l, weighting)
        rep = gn_split(model, l, loss=loss, weighting=weighting, return_parts=True)
        parts = rep["parts"]
        dense = {p: parts.dense(p) for p in ("within", "cross", "class", "total")}
        scale = float(G.abs().max())
        err = (dense["within"] + dense["cross"] + dense["class"] - G).abs().max()
        assert float(err) <= 1e-10 * scale
        assert float((dense["total"] - G).abs().max()) <= 1e-10 * scale
        # operators agree with the dense matrices on random stacks
        M = torch.randn(4, *parts.shape, generator=gen, dtype=torch.float64)
        for p, op in parts.operators.items():
            ref = (M.reshape(4, -1) @ dense[p].T).reshape(M.shape)
            torch.testing.assert_close(op(M), ref, rtol=0, atol=1e-12 * scale)
        # reported non-zero eigenvalues = those of the dense parts (either computation path)
        for p, D in dense.items():
            ev = torch.linalg.eigvalsh(D).flip(0)
            ev = ev[ev > rep["tolerance"]]
            assert rep[p]["rank"] == ev.numel()
            np.testing.assert_allclose(
                rep[p]["eigenvalues"], ev.numpy(), rtol=0, atol=1e-12 * scale
            )
        # the linear model's layer Hessian is exactly its GN (MSE: JᵀJ/N; CE: softmax GN)
        if activation == "linear" and (loss == "mse" or weighting == "softmax"):
            H = dense_layer_hessian(model, l, loss)
            torch.testing.assert_close(dense["total"], H, rtol=0, atol=1e-12 * scale)


def test_gn_split_space_paths_agree() -> None:
    """Gram (NK ≤ dim) and dense (dim < NK) paths give the same spectrum for one model."""
    model, _ = make_model(
        {"K": 3, "n": 4, "width": 7, "depth": 2, "lam_w": 0.01, "lam_h": 0.01},
        init="random", activation="relu", seed=5,
    )  # fmt: skip
    rep = gn_split(model, 2, return_parts=True)  # dim = 3·7 = 21 < NK = 36 → dense
    assert rep["space"] == "dense"
    parts = rep["parts"]
    for p in ("within", "total"):
        ev = torch.linalg.eigvalsh(parts.gram(p)).flip(0)
        ev = ev[ev > rep["tolerance"]]
        np.testing.assert_allclose(rep[p]["eigenvalues"], ev.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_gn_split_partial_path_matches_full(activation: str) -> None:
    """Past ``max_size`` (real-network heads over thousands of samples) within/total keep only
    their top eigenvalues, from matrix-free products: they must equal the top of the full
    spectra, class/cross must be unchanged, and the ranks of within/total are not claimed."""
    model, _ = make_model(
        {"K": 3, "n": 6, "width": 8, "depth": 2, "lam_w": 0.01, "lam_h": 0.01},
        init="random", activation=activation, seed=3,
    )  # fmt: skip
    full = gn_split(model, 1)  # dim = 64 > NK = 54 → gram
    part = gn_split(model, 1, max_size=20, partial_top=12)
    assert part["partial"] and part["space"] == "iterative" and not full["partial"]
    assert part["within"]["rank"] is None and part["total"]["rank"] is None
    assert part["ranks"][1:] == full["ranks"][1:]
    for p in ("class", "cross"):
        np.testing.assert_allclose(part[p]["eigenvalues"], full[p]["eigenvalues"], rtol=1e-12)
    for p in ("within", "total"):
        top = np.asarray(full[p]["eigenvalues"][:12])
        np.testing.assert_allclose(part[p]["eigenvalues"][: top.size], top, rtol=1e-7)


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


def test_subspace_angles_small_and_large() -> None:
    """Sine/cosine combination is accurate at tiny and right angles."""
    e = torch.eye(3, dtype=torch.float64)
    eps = 1e-12
    A = e[:, :2]
    B = torch.stack([e[:, 0], math.cos(eps) * e[:, 1] + math.sin(eps) * e[:, 2]], 1)
    ang = subspace_angles(A, B)
    torch.testing.assert_close(
        ang, torch.tensor([0.0, eps], dtype=torch.float64), atol=1e-20, rtol=1e-6
    )
    ang = subspace_angles(e[:, :1], e[:, 1:])
    torch.testing.assert_close(ang, torch.tensor([math.pi / 2], dtype=torch.float64))


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
@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0])
def test_relu_dnc_gn_matches_theory(tau: float) -> None:
    """Case G: K diagonal pairs at λ*, K(K−1) off-diagonal at λ* τ^{2(L−l)} (docs/theory.md §4.6).

    The constructed point (coordinate frames) has exact zeros at the kinks, so no ``kink_rtol``
    is needed: autograd's convention is τ = 0 and the other τ are applied at exact zeros."""
    model, cfg = make_model(RELU_G, init="optimum", activation="relu")
    pred = theory.relu_layer_eigenvalues(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h, tau)
    for l in range(1, cfg.depth + 1):
        rep = gn_split(model, l, tau=tau)
        expected = np.array([x for x in pred[l - 1] if x > 0])
        np.testing.assert_allclose(rep["total"]["eigenvalues"], expected, rtol=1e-8)
        if tau == 0.0 and l < cfg.depth:
            # Derived here (not in docs/theory.md): with τ = 0 only the diagonal pairs carry signal,
            # v_{icc'} = δ_{cc'} v_{cc}, so G_class = Σ_c v_cc v_ccᵀ/K² (K at λ*/K) and
            # G_cross = (K−1)/K² Σ_c v_cc v_ccᵀ (K at (K−1)λ*/K): same image, not orthogonal.
            star, K = pred[l - 1][0], cfg.K
            assert rep["ranks"] == [0, K, K]
            np.testing.assert_allclose(rep["class"]["eigenvalues"], star / K, rtol=1e-8)
            np.testing.assert_allclose(rep["cross"]["eigenvalues"], star * (K - 1) / K, rtol=1e-8)
            assert rep["orthogonality_max_cosine"] == pytest.approx(1.0, abs=1e-8)


def test_relu_dnc_autograd_convention() -> None:
    """With the defaults (τ = 0, kink_rtol = 0) the GN is exactly what autograd differentiates:
    it equals the dense autograd fit Hessian at the ReLU DNC point (the residual term vanishes
    there), of rank K for l < L (τ = 0 removes the off-diagonal pairs). The K diagonal pairs are
    eigenvectors (f = 1) in every layer."""
    model, cfg = make_model(RELU_G, init="optimum", activation="relu")
    star = prediction(cfg).layer_outlier
    for l in range(1, cfg.depth + 1):
        H = dense_layer_hessian(model, l)
        rep = gn_split(model, l, return_parts=True)
        torch.testing.assert_close(rep["parts"].dense("total"), H, rtol=0, atol=1e-13)
        np.testing.assert_allclose(rep["total"]["eigenvalues"], star[l - 1], rtol=1e-8)
        diag = torch.diagonal(alignment_f(dense_hvp(H), basis_of(model, l)))
        torch.testing.assert_close(diag, torch.ones_like(diag), rtol=0, atol=1e-10)


def test_ce_softmax_gn_at_dnc_etf_point() -> None:
    """CE DNC-ETF point at the stationary scale α* (docs/theory.md §4.7, Case H type): the
    softmax GN (= the linear model's CE layer Hessian) has 1 + (K−1) + (K²−3K+1) non-zero
    eigenvalues."""
    K, n, L, lam = 4, 3, 3, 1e-3
    params = {"K": K, "n": n, "width": 6, "depth": L, "lam_w": lam, "lam_h": lam}
    model, _ = make_model(params, init="optimum", loss="ce")
    groups = theory.ce_optimal_layer_eigenvalues(K, n, L, lam)
    expected = np.concatenate([np.full(m, v) for v, m in groups])
    for l in range(1, L + 1):
        rep = gn_split(model, l, loss="ce", weighting="softmax")
        np.testing.assert_allclose(rep["total"]["eigenvalues"], expected, rtol=1e-8)
        assert rep["within"]["rank"] == 0


# ----------------------------------------------------------------------------- misc
def test_report_and_validation() -> None:
    model, cfg = make_model(CASES["E"], init="optimum")
    basis = basis_of(model, 1)
    _, U = top_eigvecs(dense_layer_hessian(model, 1), cfg.K**2)
    rep = alignment_report(basis, KroneckerSpectrum(*layer_factors(model, 1)).apply, U)
    json.dumps(rep)
    assert set(rep) >= {"alignment_f", "subspace_capture", "principal_angles", "cosine_heatmap"}
    assert to_jsonable({"a": torch.ones(2), "b": (np.float64(1.5), torch.tensor(2.0))}) == {
        "a": [1.0, 1.0], "b": [1.5, 2.0]
    }  # fmt: skip
    with pytest.raises(TypeError):
        to_jsonable(object())
    with pytest.raises(ValueError, match="layer"):
        layer_means(model, 0)
    with pytest.raises(ValueError, match="softmax"):
        gn_split(model, 1, loss="mse", weighting="softmax")
    relu, _ = make_model(RELU_G, init="optimum", activation="relu")
    with pytest.raises(ValueError, match="linear"):
        layer_factors(relu, 1)
