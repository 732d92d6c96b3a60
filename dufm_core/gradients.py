"""Layer gradients and their structure (docs/theory.md §4.3, §4.6, §6.3).

Notation as in :mod:`dufm_core.propagation`: layer l = 1..L, W_l (d_{l+1} × d_l) maps the input
features H̃_l (post-activation for ReLU) to the pre-activation H_{l+1}; row-major vec.

The full-batch fit gradient of W_l is computed by the chain rule written out (no autograd):

    ∇_{W_l} L_fit = δ_{l+1} H̃_lᵀ,   δ_{L+1} = R := ∂L_fit/∂Z,   δ_j = D_j ⊙ W_jᵀ δ_{j+1},

with R = (Z − Y)/N for MSE and (softmax(Z) − Y)/N for the mean cross-entropy, and D_j = σ'(H_j)
(σ'(0) = τ, default 0 as in autograd). Since R and δ are per-sample columns, class c's samples
contribute δ_{l+1}[:, c] H̃_l[:, c]ᵀ, and these K terms sum to the full gradient.

Closed form at the linear MSE optimum (docs/theory.md §4.3), also at the ReLU DNC optimum (§4.6):

    g̃^{(l)} = (β^{(l+1)}/K) Σ_c μ_c^{(l+1)} μ_c^{(l)ᵀ},   β^{(l+1)} = −γ(1−γ)/‖μ^{(l+1)}‖²,

(μ^{(L+1)} = γ e_c), so the natural-basis coefficient matrix C_{cc'} = ⟨b_{cc'}, g̃⟩²/‖g̃‖² is
I_K/K and class c's gradient is ∝ μ_c^{(l+1)} μ_c^{(l)ᵀ} (its own C is e_c e_cᵀ).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dufm_core.alignment import layer_means, predicted_basis
from dufm_core.models import DeepUFM
from dufm_core.propagation import backprop, check_layer, layer_inputs
from dufm_core.store import to_jsonable

__all__ = [
    "eigenbasis_coefficients",
    "gradient_beta",
    "gradient_coefficients",
    "gradient_report",
    "layer_gradient",
    "output_residual",
    "per_class_coefficients",
    "per_class_gradients",
]

Tensor = torch.Tensor
_F64 = torch.float64


def output_residual(model: DeepUFM, loss: str = "mse") -> Tensor:
    """R = ∂L_fit/∂Z as a (K, N) matrix (column i for sample i), float64.

    MSE (L_fit = ‖Z − Y‖²/(2N)): R = (Z − Y)/N. CE (mean cross-entropy): R = (softmax(Z) − Y)/N.
    """
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be mse | ce (got {loss!r})")
    pre, _ = layer_inputs(model)
    Z = pre[-1]  # (K, N)
    Y = torch.nn.functional.one_hot(model.labels.to(Z.device), model.K).to(_F64).T
    P = Z if loss == "mse" else torch.softmax(Z, dim=0)
    return (P - Y) / Z.shape[1]


def _delta_and_input(model: DeepUFM, l: int, loss: str, tau: float) -> tuple[Tensor, Tensor]:
    """(δ_{l+1} (d_out, N), H̃_l (d_in, N)) with ∇_{W_l} L_fit = δ H̃ᵀ."""
    check_layer(model, l)
    delta = backprop(model, l, output_residual(model, loss), tau)
    _, post = layer_inputs(model)
    return delta, post[l - 1]


def layer_gradient(
    model: DeepUFM,
    l: int,
    loss: str = "mse",
    part: str = "fit",
    lam: float | None = None,
    tau: float = 0.0,
) -> Tensor:
    """Full-batch gradient of W_l, shape (d_out, d_in), float64.

    ``part='fit'``: ∇_{W_l} L_fit = δ_{l+1} H̃_lᵀ (module docstring). ``part='total'``: adds the
    regulariser's λ_{W_l} W_l; ``lam`` (= λ_{W_l}) is then required. ``tau`` is σ'(0) for ReLU
    (0 = autograd).
    """
    if part not in ("fit", "total"):
        raise ValueError(f"part must be fit | total (got {part!r})")
    delta, H = _delta_and_input(model, l, loss, tau)
    g = delta @ H.T
    if part == "total":
        if lam is None:
            raise ValueError("part='total' needs lam = λ_{W_l}")
        g = g + float(lam) * model.weights[l - 1].detach().to(_F64)
    return g


def per_class_gradients(model: DeepUFM, l: int, loss: str = "mse", tau: float = 0.0) -> Tensor:
    """Class contributions to the full-batch fit gradient of W_l, shape (K, d_out, d_in):

        g^{(c)} = Σ_{i: class c} δ_{l+1,i} h̃_iᵀ,   Σ_c g^{(c)} = ∇_{W_l} L_fit.

    (Each already carries the 1/N of the full-batch mean; at the MSE optimum
    g^{(c)} = (β/K) μ_c^{(l+1)} μ_c^{(l)ᵀ}.)
    """
    delta, H = _delta_and_input(model, l, loss, tau)
    onehot = torch.nn.functional.one_hot(model.labels.to(H.device), model.K).to(_F64)
    return torch.einsum("ai,bi,ic->cab", delta, H, onehot)


def gradient_coefficients(G: Tensor, basis: Tensor) -> Tensor:
    """Natural-basis coefficient matrix C_{cc'} = ⟨b_{cc'}, g⟩² / ‖g‖², shape (K, K).

    ``G`` is the gradient (d_out, d_in) (or its row-major vec), ``basis`` the unit-Frobenius
    (K, K, d_out, d_in) of :func:`dufm_core.alignment.predicted_basis`. Σ C ≤ 1 when the b's are
    orthonormal, with equality iff g lies in their span. I_K/K at the optimum. NaN for g = 0.
    """
    B = basis.to(_F64)
    g = G.to(_F64).reshape(B.shape[-2], B.shape[-1])
    gn2 = g.square().sum()
    if float(gn2) == 0.0:
        return torch.full(B.shape[:2], math.nan, dtype=_F64, device=B.device)
    return torch.einsum("cdab,ab->cd", B, g).square() / gn2


def per_class_coefficients(grads: Tensor, basis: Tensor) -> Tensor:
    """:func:`gradient_coefficients` of each class gradient, shape (K, K, K): [c] is the K×K
    coefficient matrix of g^{(c)} (e_c e_cᵀ at the optimum)."""
    return torch.stack([gradient_coefficients(g, basis) for g in grads])


def eigenbasis_coefficients(g_vec: Tensor, U_top: Tensor) -> tuple[Tensor, float]:
    """Hessian-eigenbasis coefficients (docs/theory.md §6.3, Table-2 style):

        c_j = ⟨u_j, g⟩² / ‖g‖²  (j = 1..m),   fraction_inside = Σ_j c_j = ‖U_topᵀ g‖²/‖g‖²,

    the fraction of the gradient inside span(U_top) (Gur-Ari's statistic). ``g_vec`` is the
    gradient, as a matrix or row-major vector; ``U_top`` (dim × m) has orthonormal columns.
    NaNs for g = 0.
    """
    g = g_vec.to(_F64).reshape(-1)
    gn2 = g.square().sum()
    if float(gn2) == 0.0:
        c = torch.full((U_top.shape[1],), math.nan, dtype=_F64, device=g.device)
        return c, math.nan
    c = (U_top.to(_F64).T @ g).square() / gn2
    return c, float(c.sum())


def gradient_beta(model: DeepUFM, l: int, loss: str = "mse", tau: float = 0.0) -> float:
    """Measured β^{(l+1)}: with S = Σ_c μ_c^{(l+1)} μ_c^{(l)ᵀ} (measured means; the logit means
    for l = L, i.e. γ e_c at the optimum, and post-activation input means),

        β = K ⟨g̃, S⟩ / ‖S‖_F²,

    the least-squares β in g̃ ≈ (β/K) S; equal to −γ(1−γ)/‖μ^{(l+1)}‖² at the optimum. NaN when
    S = 0.
    """
    g = layer_gradient(model, l, loss, tau=tau)
    M_out, M_in = layer_means(model, l, logit_means=True)
    S = M_out @ M_in.T
    s2 = float(S.square().sum())
    if s2 == 0.0:
        return math.nan
    return model.K * float((g * S).sum()) / s2


def gradient_report(
    model: DeepUFM,
    l: int,
    loss: str = "mse",
    U_top: Tensor | None = None,
    tau: float = 0.0,
) -> dict[str, Any]:
    """JSON-ready gradient structure of layer l (fit gradient):

    ``grad_norm``; ``coefficients`` (K×K natural-basis C); ``diagonal_fraction`` = tr C;
    ``inside_fraction`` = Σ C (fraction in the span of the K² predicted matrices, which are
    orthonormal when the means are orthogonal); ``beta``; ``per_class_coefficients`` (K×K×K);
    ``per_class_norms``; and, with ``U_top``, ``eigenbasis_coefficients`` and
    ``eigenbasis_fraction``.
    """
    g = layer_gradient(model, l, loss, tau=tau)
    basis = predicted_basis(*layer_means(model, l))
    C = gradient_coefficients(g, basis)
    per = per_class_gradients(model, l, loss, tau)
    out: dict[str, Any] = {
        "layer": l,
        "loss": loss,
        "grad_norm": float(g.norm()),
        "coefficients": to_jsonable(C),
        "diagonal_fraction": float(torch.diagonal(C).sum()),
        "inside_fraction": float(C.sum()),
        "beta": gradient_beta(model, l, loss, tau),
        "per_class_coefficients": to_jsonable(per_class_coefficients(per, basis)),
        "per_class_norms": to_jsonable(per.flatten(1).norm(dim=1)),
    }
    if U_top is not None:
        coeffs, inside = eigenbasis_coefficients(g, U_top)
        out["eigenbasis_coefficients"] = to_jsonable(coeffs)
        out["eigenbasis_fraction"] = inside
    return out
