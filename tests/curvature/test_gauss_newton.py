"""Papyan's split of a layer's Gauss–Newton matrix (dufm_core.curvature.gauss_newton;
docs/theory.md §4.2, §4.6, §4.7, §8): closed forms at the optima, sums against dense autograd
Gauss–Newton matrices at random points, the Gram / dense / iterative paths, the typed result
and its JSON form.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dufm_core import theory
from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.gauss_newton import GN_PARTS, GNPartOperator, GNSplit, gn_split
from dufm_core.curvature.kronecker import layer_factors
from dufm_core.models import DeepUFM
from tests.test_alignment import (
    CASES,
    RELU_G,
    dense_layer_hessian,
    logits_with_layer,
    make_model,
    prediction,
)


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


# ----------------------------------------------------------------------------- optimum
@pytest.mark.parametrize("case", sorted(CASES))
def test_gn_split_at_linear_optimum(case: str) -> None:
    model, cfg = make_model(CASES[case], init="optimum")
    pred = prediction(cfg)
    K = cfg.K
    for l in range(1, cfg.depth + 1):
        rep = gn_split(model, l)
        assert tuple(rep.ranks) == pred.gn_split_ranks == (0, K * (K - 1), K)
        assert rep.spectra["total"].rank == K * K
        expected = pred.layer_outlier[l - 1]
        for part in ("cross", "class", "total"):
            eig = rep.eigenvalues(part).numpy()
            np.testing.assert_allclose(eig, expected, rtol=1e-8, atol=0)
        assert rep.orthogonality_error < 1e-12
        assert rep.orthogonality_max_cosine < 1e-12
        # closed forms G_class = Aᵀ(11ᵀ/K)A ⊗ Σ̂, G_cross = AᵀSA ⊗ Σ̂ (row-major torch.kron)
        parts = rep.parts
        json.dumps(rep.to_dict())
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
        rep = gn_split(model, l, loss=loss, weighting=weighting)
        parts = rep.parts
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
            ev = ev[ev > rep.tolerance]
            assert rep.spectra[p].rank == ev.numel()
            np.testing.assert_allclose(
                rep.eigenvalues(p).numpy(), ev.numpy(), rtol=0, atol=1e-12 * scale
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
    rep = gn_split(model, 2)  # dim = 3·7 = 21 < NK = 36 → dense
    assert rep.space == "dense"
    parts = rep.parts
    for p in ("within", "total"):
        ev = torch.linalg.eigvalsh(parts.gram(p)).flip(0)
        ev = ev[ev > rep.tolerance]
        np.testing.assert_allclose(rep.eigenvalues(p).numpy(), ev.numpy(), rtol=1e-10, atol=1e-14)


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
    assert part.partial and part.space == "iterative" and not full.partial
    assert part.spectra["within"].rank is None and part.spectra["total"].rank is None
    assert part.ranks[1:] == full.ranks[1:]
    for p in ("class", "cross"):
        np.testing.assert_allclose(part.eigenvalues(p), full.eigenvalues(p), rtol=1e-12)
    for p in ("within", "total"):
        top = full.eigenvalues(p)[:12].numpy()
        np.testing.assert_allclose(part.eigenvalues(p)[: top.size].numpy(), top, rtol=1e-7)


# ----------------------------------------------------------------------------- ReLU, CE DNC points
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
        np.testing.assert_allclose(rep.eigenvalues("total").numpy(), expected, rtol=1e-8)
        if tau == 0.0 and l < cfg.depth:
            # Derived here (not in docs/theory.md): with τ = 0 only the diagonal pairs carry signal,
            # v_{icc'} = δ_{cc'} v_{cc}, so G_class = Σ_c v_cc v_ccᵀ/K² (K at λ*/K) and
            # G_cross = (K−1)/K² Σ_c v_cc v_ccᵀ (K at (K−1)λ*/K): same image, not orthogonal.
            star, K = pred[l - 1][0], cfg.K
            assert rep.ranks == [0, K, K]
            np.testing.assert_allclose(rep.eigenvalues("class").numpy(), star / K, rtol=1e-8)
            cross = rep.eigenvalues("cross").numpy()
            np.testing.assert_allclose(cross, star * (K - 1) / K, rtol=1e-8)
            assert rep.orthogonality_max_cosine == pytest.approx(1.0, abs=1e-8)


def test_relu_dnc_autograd_convention() -> None:
    """With the defaults (τ = 0, kink_rtol = 0) the GN is exactly what autograd differentiates:
    it equals the dense autograd fit Hessian at the ReLU DNC point (the residual term vanishes
    there), of rank K for l < L (τ = 0 removes the off-diagonal pairs)."""
    model, cfg = make_model(RELU_G, init="optimum", activation="relu")
    star = prediction(cfg).layer_outlier
    for l in range(1, cfg.depth + 1):
        H = dense_layer_hessian(model, l)
        rep = gn_split(model, l)
        torch.testing.assert_close(rep.parts.dense("total"), H, rtol=0, atol=1e-13)
        np.testing.assert_allclose(rep.eigenvalues("total").numpy(), star[l - 1], rtol=1e-8)


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
        np.testing.assert_allclose(rep.eigenvalues("total").numpy(), expected, rtol=1e-8)
        assert rep.spectra["within"].rank == 0


# ----------------------------------------------------------------------------- typed result
def test_typed_result_and_its_json_form() -> None:
    """GNSplit.to_dict() is the report's JSON (the keys and values of the former dict), and each
    part is a CurvatureOperator whose products and dense matrix agree."""
    model, _ = make_model(CASES["E"], init="random", seed=2)
    rep = gn_split(model, 2)
    assert isinstance(rep, GNSplit)
    d = rep.to_dict()
    assert list(d) == ["layer", "loss", "weighting", "tau", "kink_rtol", "dim", "space", "rtol",
                       "tolerance", "partial", "within", "cross", "class", "total", "ranks",
                       "orthogonality_error", "orthogonality_max_cosine"]  # fmt: skip
    assert json.loads(json.dumps(d)) == d
    assert d["ranks"] == rep.ranks == [d[p]["rank"] for p in ("within", "cross", "class")]
    for p in GN_PARTS:
        assert d[p]["eigenvalues"] == rep.eigenvalues(p).tolist()
        op = rep.parts.operator(p)
        assert isinstance(op, GNPartOperator) and isinstance(op, CurvatureOperator)
        D = op.dense()
        torch.testing.assert_close(op.dense_columns(), D, rtol=0, atol=1e-13 * float(D.abs().max()))
    with pytest.raises(ValueError, match="part must be one of"):
        GNPartOperator(rep.parts, "bulk")


def test_validation() -> None:
    model, _ = make_model(CASES["E"], init="optimum")
    with pytest.raises(ValueError, match="softmax"):
        gn_split(model, 1, loss="mse", weighting="softmax")
    with pytest.raises(ValueError, match="layer"):
        gn_split(model, 0)
