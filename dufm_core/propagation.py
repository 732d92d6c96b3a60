"""Signals through the layers of a deep UFM: features forward, cotangents back (docs/theory.md §1).

These describe the model, whatever is measured on it; the alignment measures, the gradients,
the weight structure, the Kronecker factors and Papyan's Gauss–Newton split all use them.

Conventions (docs/theory.md "How to use this document"): layers are numbered 1..L; W_l has shape
(d_{l+1}, d_l) and maps the *input features* H̃_l (H_1 for l = 1, the post-activation σ(H_l) for a
ReLU model, H_l for a linear one) to the pre-activation H_{l+1} = W_l H̃_l; H_{L+1} = Z are the
logits (K × N, one column per sample).

* forward: :func:`layer_inputs` gives every H_j and H̃_j in float64;
* downstream: :func:`downstream_product` is A^{(l+1)} = W_L ⋯ W_{l+1} (K × d_{l+1}, I_K for
  l = L), so that the linear model's logits are Z = A^{(l+1)} W_l H_l;
* backward: :func:`backprop` carries output cotangents E (K per sample) to the pre-activation
  H_{l+1}: δ_{l+1} = D_{l+1} ⊙ W_{l+1}ᵀ(⋯ D_L ⊙ W_Lᵀ E), D_j = σ'(H_j) entrywise.
"""

from __future__ import annotations

import torch

from dufm_core.models import DeepUFM

__all__ = ["backprop", "check_layer", "downstream_product", "layer_inputs"]

Tensor = torch.Tensor
_F64 = torch.float64


def check_layer(model: DeepUFM, l: int) -> None:
    """Raise ValueError unless l is a layer number 1..L of ``model``."""
    if isinstance(l, bool) or int(l) != l or not 1 <= l <= model.depth:
        raise ValueError(f"layer l must be an integer in 1..{model.depth} (got {l!r})")


def layer_inputs(model: DeepUFM) -> tuple[list[Tensor], list[Tensor]]:
    """(pre, post) features in float64: ``pre[j-1]`` = H_j (j = 1..L+1, the last is Z, (K, N)),
    ``post[j-1]`` = H̃_j, the input of W_j (j = 1..L). Shapes (d_j, N); no autograd graph."""
    feats = model.layer_features()
    pre = [t.detach().to(_F64) for t in feats.pre]
    post = [t.detach().to(_F64) for t in feats.post[: model.depth]]
    return pre, post


def downstream_product(model: DeepUFM, l: int) -> Tensor:
    """A^{(l+1)} = W_L ⋯ W_{l+1} (K × d_{l+1}; I_K for l = L), in the model's dtype, no graph.

    Accumulated as A ← A W_j for j = L..l+1, starting from I_K. For the linear model the
    logits are Z = A^{(l+1)} W_l H_l, and the layer-l fit Hessian of MSE is
    P ⊗ Q with P = A^{(l+1)ᵀ} A^{(l+1)} (:mod:`dufm_core.curvature.kronecker`).
    """
    check_layer(model, l)
    weights = [w.detach() for w in model.weights]
    K = weights[-1].shape[0]
    A = torch.eye(K, dtype=weights[0].dtype, device=weights[0].device)
    for j in range(len(weights) - 1, l - 1, -1):  # A ← A W_j for j = L..l+1 (0-based index j)
        A = A @ weights[j]
    return A


def backprop(model: DeepUFM, l: int, E: Tensor, tau: float = 0.0, kink_rtol: float = 0.0) -> Tensor:
    """Back-propagate output cotangents E (..., K, N) (one K-vector per sample) to the
    pre-activation output H_{l+1} = W_l H̃_l of layer l: returns δ (..., d_{l+1}, N) with

        δ_{l+1} = D_{l+1} ⊙ W_{l+1}ᵀ (D_{l+2} ⊙ W_{l+2}ᵀ ( ⋯ D_L ⊙ W_Lᵀ E)),

    D_j = σ'(H_j) entrywise (ReLU: 1 where H_j > 0, ``tau`` where H_j = 0, 0 below; linear: 1).
    ``tau`` is the convention σ'(0) = τ of docs/theory.md §1.4: 0 is PyTorch/JAX autograd, ½ the
    smoothed-ReLU limit, 1 the linear extension. ``kink_rtol`` > 0 treats every |H_j| ≤
    kink_rtol · max|H_j| as exactly on the kink: a constructed DNC point has ±1e-17 rounding
    noise where the pre-activations should be 0, and autograd (``kink_rtol`` = 0) then opens or
    closes those units by the sign of the noise. For l = L, δ = E. Per sample, the map E_i ↦ δ_i
    is the transpose of the Jacobian ∂z_i/∂h_i^{(l+1)}, so with E = e_{c'} 1ᵀ the columns of δ
    are g_{i,c'} = ∂z_{i,c'}/∂h_i^{(l+1)}.
    """
    check_layer(model, l)
    pre, _ = layer_inputs(model)
    Ws = [W.detach().to(_F64) for W in model.weights]
    delta = E.to(_F64)
    for j in range(model.depth, l, -1):  # W_j for j = L..l+1, then σ'(H_j)
        delta = Ws[j - 1].T @ delta
        if model.activation == "relu":
            H = pre[j - 1]
            if kink_rtol > 0:
                H = torch.where(H.abs() <= kink_rtol * H.abs().max(), 0.0, H)
            mask = (H > 0).to(_F64) + float(tau) * (H == 0).to(_F64)
            delta = delta * mask
    return delta
