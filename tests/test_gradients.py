"""Gradient structure (docs/theory.md §4.3, §4.6, §6.3): closed forms at the optimum, autograd at
random points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dufm_core.alignment import layer_means, predicted_basis
from dufm_core.gradients import (
    eigenbasis_coefficients,
    gradient_beta,
    gradient_coefficients,
    gradient_report,
    layer_gradient,
    output_residual,
    per_class_coefficients,
    per_class_gradients,
)
from dufm_core.models import DeepUFM, fit_term
from tests.test_alignment import (
    CASES,
    RELU_G,
    basis_of,
    dense_layer_hessian,
    make_model,
    prediction,
    top_eigvecs,
)


def autograd_layer_gradient(
    model: DeepUFM, l: int, loss: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """∂/∂W_l of the fit term (restricted to the samples in ``mask``, keeping the 1/N)."""
    W = model.weights[l - 1]
    logits = model()
    if mask is None:
        fit = fit_term(logits, model.labels, loss)
    elif loss == "mse":
        onehot = torch.nn.functional.one_hot(model.labels, model.K).to(logits.dtype)
        fit = ((logits - onehot)[mask]).square().sum() / (2 * model.N)
    else:
        ce = torch.nn.functional.cross_entropy(logits, model.labels, reduction="none")
        fit = ce[mask].sum() / model.N
    (g,) = torch.autograd.grad(fit, W)
    return g.detach()


def _diag_over_k(K: int) -> torch.Tensor:
    return torch.eye(K, dtype=torch.float64) / K


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_structure_at_linear_optimum(case: str) -> None:
    model, cfg = make_model(CASES[case], init="optimum")
    pred = prediction(cfg)
    K = cfg.K
    eye = torch.eye(K, dtype=torch.float64)
    for l in range(1, cfg.depth + 1):
        g = layer_gradient(model, l, "mse")
        basis = basis_of(model, l)
        C = gradient_coefficients(g, basis)
        torch.testing.assert_close(C, _diag_over_k(K), rtol=0, atol=1e-10)
        # inside the outlier space of the dense Hessian
        _, U = top_eigvecs(dense_layer_hessian(model, l), K * K)
        coeffs, inside = eigenbasis_coefficients(g, U)
        assert coeffs.shape == (K * K,) and abs(inside - 1.0) < 1e-10
        # β^{(l+1)} = −γ(1−γ)/‖μ^{(l+1)}‖²
        beta = gradient_beta(model, l, "mse")
        assert beta == pytest.approx(pred.gradient_beta[l - 1], rel=1e-8)
        # per-class gradients: sum to g, each along its own diagonal direction
        per = per_class_gradients(model, l, "mse")
        torch.testing.assert_close(per.sum(0), g, rtol=0, atol=1e-15)
        pc = per_class_coefficients(per, basis)
        for c in range(K):
            ref = torch.outer(eye[c], eye[c])
            torch.testing.assert_close(pc[c], ref, rtol=0, atol=1e-10)
        # stationarity: fit gradient = −λ_{W_l} W_l
        tot = layer_gradient(model, l, "mse", part="total", lam=cfg.lam_ws[l - 1])
        assert float(tot.abs().max()) < 1e-13


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_gradients_match_autograd(activation: str, loss: str) -> None:
    params = {"K": 3, "n": 4, "width": 6, "depth": 3, "lam_w": [0.01, 0.02, 0.03], "lam_h": 0.01}
    model, cfg = make_model(params, init="random", activation=activation, loss=loss, seed=2)
    for l in range(1, cfg.depth + 1):
        ref = autograd_layer_gradient(model, l, loss)
        g = layer_gradient(model, l, loss)
        torch.testing.assert_close(g, ref, rtol=1e-12, atol=1e-15)
        lam = cfg.lam_ws[l - 1]
        total = layer_gradient(model, l, loss, part="total", lam=lam)
        torch.testing.assert_close(total, ref + lam * model.weights[l - 1].detach())
        per = per_class_gradients(model, l, loss)
        for c in range(cfg.K):
            ref_c = autograd_layer_gradient(model, l, loss, mask=model.labels == c)
            torch.testing.assert_close(per[c], ref_c, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(per.sum(0), g, rtol=1e-12, atol=1e-15)
        # coefficients equal their definitions
        basis = basis_of(model, l)
        C = gradient_coefficients(g, basis)
        gv = g.reshape(-1)
        for c in range(cfg.K):
            for d in range(cfg.K):
                ref_cd = float(basis[c, d].reshape(-1) @ gv) ** 2 / float(gv @ gv)
                assert float(C[c, d]) == pytest.approx(ref_cd, rel=1e-12)
        _, U = top_eigvecs(dense_layer_hessian(model, l, loss), 5)
        coeffs, inside = eigenbasis_coefficients(gv, U)
        ref_c = (U.T @ gv) ** 2 / (gv @ gv)
        torch.testing.assert_close(coeffs, ref_c, rtol=1e-12, atol=1e-15)
        assert inside == pytest.approx(float(ref_c.sum()), rel=1e-12)
        # β is the least-squares coefficient of g on (1/K) Σ_c μ_c^{(l+1)} μ_c^{(l)ᵀ}
        M_out, M_in = layer_means(model, l, logit_means=True)
        S = M_out @ M_in.T / cfg.K
        beta_ls = float((g * S).sum() / S.square().sum())
        assert gradient_beta(model, l, loss) == pytest.approx(beta_ls, rel=1e-12)


def test_output_residual() -> None:
    model, _ = make_model(CASES["E"], init="random", loss="ce")
    Z = model().detach()
    Y = torch.nn.functional.one_hot(model.labels, model.K).double()
    torch.testing.assert_close(output_residual(model, "mse"), ((Z - Y) / model.N).T)
    torch.testing.assert_close(output_residual(model, "ce"), ((Z.softmax(1) - Y) / model.N).T)
    with pytest.raises(ValueError, match="loss"):
        output_residual(model, "hinge")
    with pytest.raises(ValueError, match="lam"):
        layer_gradient(model, 1, part="total")


def test_relu_dnc_gradient_coefficients_diagonal() -> None:
    """Case G (ReLU DNC point, τ = 0 autograd): C = I/K in every layer (docs/theory.md §4.6), β
    equal to the linear closed form, and gradients equal autograd's."""
    model, cfg = make_model(RELU_G, init="optimum", activation="relu")
    pred = prediction(cfg)
    K = cfg.K
    for l in range(1, cfg.depth + 1):
        g = layer_gradient(model, l, "mse")
        torch.testing.assert_close(
            g, autograd_layer_gradient(model, l, "mse"), rtol=1e-12, atol=1e-15
        )
        M_out, M_in = layer_means(model, l)
        C = gradient_coefficients(g, predicted_basis(M_out, M_in))
        torch.testing.assert_close(C, _diag_over_k(K), rtol=0, atol=1e-10)
        assert gradient_beta(model, l, "mse") == pytest.approx(pred.gradient_beta[l - 1], rel=1e-8)
        for tau in (0.5, 1.0):  # the gradient does not depend on σ'(0) here
            torch.testing.assert_close(
                layer_gradient(model, l, "mse", tau=tau), g, rtol=0, atol=1e-15
            )
        _, U = top_eigvecs(dense_layer_hessian(model, l), K * K)
        _, inside = eigenbasis_coefficients(g, U)
        assert abs(inside - 1.0) < 1e-10


def test_gradient_report_is_json() -> None:
    model, cfg = make_model(CASES["E"], init="optimum")
    _, U = top_eigvecs(dense_layer_hessian(model, 2), cfg.K**2)
    rep = gradient_report(model, 2, "mse", U_top=U)
    json.dumps(rep)
    np.testing.assert_allclose(rep["coefficients"], np.eye(cfg.K) / cfg.K, atol=1e-10)
    assert rep["diagonal_fraction"] == pytest.approx(1.0, abs=1e-10)
    assert rep["eigenbasis_fraction"] == pytest.approx(1.0, abs=1e-10)
    assert rep["beta"] == pytest.approx(prediction(cfg).gradient_beta[1], rel=1e-8)


def test_ce_gradient_along_top_eigenvector() -> None:
    """CE DNC-ETF point (docs/theory.md §4.7): the gradient is the top Hessian eigenvector."""
    params = {"K": 4, "n": 3, "width": 6, "depth": 3, "lam_w": 1e-3, "lam_h": 1e-3}
    model, cfg = make_model(params, init="optimum", loss="ce")
    for l in range(1, cfg.depth + 1):
        g = layer_gradient(model, l, "ce")
        torch.testing.assert_close(
            g, autograd_layer_gradient(model, l, "ce"), rtol=1e-12, atol=1e-16
        )
        _, U = top_eigvecs(dense_layer_hessian(model, l, "ce"), 1)
        _, inside = eigenbasis_coefficients(g, U)
        assert inside == pytest.approx(1.0, abs=1e-10)
