"""Eigenvector alignment of a layer's Hessian with the predicted eigen-matrices (docs/theory.md
§4.1, §6.2).

Conventions (docs/theory.md "How to use this document")
---------------------------------------------------
* Layers are numbered 1..L. W_l has shape (d_{l+1}, d_l) and maps the *input features* H̃_l
  (H_1 for l = 1, the post-activation σ(H_l) for a ReLU model, H_l for a linear one) to the
  pre-activation H_{l+1} = W_l H̃_l; H_{L+1} = Z are the logits (:mod:`dufm_core.propagation`).
* vec is ROW-MAJOR: vec(W)[a·d_in + b] = W[a, b], i.e. ``W.reshape(-1)``. A layer operator acting
  on vec W_l is used in *matrix form*: a map from a stack (m, d_out, d_in) to a stack of the
  same shape — a :class:`~dufm_core.curvature.base.CurvatureOperator` (its ``apply_matrices``;
  for a Kronecker product P ⊗ Q that is V ↦ P V Qᵀ) or any such callable.
* The layer-l predicted "eigen-matrices" are μ_c^{(l+1)} μ_{c'}^{(l)ᵀ} (c, c' = 1..K), with
  μ^{(l+1)} the class means of the pre-activation output H_{l+1} = W_l H̃_l, μ^{(l)} the class
  means of the input H̃_l (post-activation for ReLU), and e_c in place of μ_c^{(L+1)} for l = L.
  Stacks of them have shape (K, K, d_out, d_in) with index [c, c'] and are flattened row-major
  over (c, c') wherever a list of K² vectors is needed.
* Everything is computed in float64, whatever the model's dtype.

Measures (docs/theory.md §6.2), with v = vec(b_{cc'}):

    f_{cc'} = (vᵀHv)² / (‖v‖² ‖Hv‖²)                (squared cosine between v and Hv)
    π_{cc'} = ‖U_topᵀ v‖² / ‖v‖²                     (subspace capture; basis-invariant)
    heat[(c,c'), j] = |⟨v̂_{cc'}, u_j⟩|               (per-vector cosines; basis-dependent)

plus the principal angles between span{v_{cc'}} and span(U_top) (:mod:`dufm_core.subspaces`).
Papyan's Gauss–Newton split of the same layer is in :mod:`dufm_core.curvature.gauss_newton`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dufm_core.collapse import class_means
from dufm_core.curvature.base import CurvatureOperator
from dufm_core.models import DeepUFM
from dufm_core.propagation import check_layer, layer_inputs
from dufm_core.store import to_jsonable
from dufm_core.subspaces import orthonormal_basis, subspace_angles

__all__ = [
    "alignment_f",
    "alignment_report",
    "cosine_heatmap",
    "dense_hvp",
    "layer_means",
    "predicted_basis",
    "predicted_span",
    "principal_angles",
    "subspace_capture",
]

Tensor = torch.Tensor
HVP = Callable[[Tensor], Tensor]
_F64 = torch.float64


# --------------------------------------------------------------------------- class means
def layer_means(model: DeepUFM, l: int, logit_means: bool = False) -> tuple[Tensor, Tensor]:
    """Class means around W_l: (M_out (d_{l+1} × K), M_in (d_l × K)), float64.

    M_in holds μ̃_c^{(l)}, the means of the input H̃_l of W_l (post-activation for ReLU layers
    l ≥ 2; H_1 for l = 1). M_out holds μ_c^{(l+1)}, the means of the pre-activation output
    H_{l+1} = W_l H̃_l (so M_out = W_l M_in); for l = L it is I_K (the e_c of the predicted basis)
    unless ``logit_means`` is True, in which case it is the measured logit means (γ I_K at the
    MSE optimum).
    """
    check_layer(model, l)
    pre, post = layer_inputs(model)
    labels = model.labels.to(pre[0].device)
    M_in = class_means(post[l - 1], labels, model.K)
    if l == model.depth and not logit_means:
        M_out = torch.eye(model.K, dtype=_F64, device=M_in.device)
    else:
        M_out = class_means(pre[l], labels, model.K)
    return M_out, M_in


# --------------------------------------------------------------------------- predicted basis
def predicted_basis(M_out: Tensor, M_in: Tensor) -> Tensor:
    """Unit-Frobenius predicted eigen-matrices, shape (K, K, d_out, d_in):

        b_{cc'} = μ_c^{(l+1)} μ_{c'}^{(l)ᵀ} / (‖μ_c^{(l+1)}‖ ‖μ_{c'}^{(l)}‖)

    (‖u vᵀ‖_F = ‖u‖‖v‖). A pair with a zero mean gives the zero matrix (the measures below then
    return NaN or 0 for it, as documented there).
    """
    U, V = _unit_columns(M_out, M_in)
    return torch.einsum("ac,bd->cdab", U, V)


def _unit_columns(M_out: Tensor, M_in: Tensor) -> tuple[Tensor, Tensor]:
    """The class means with unit-norm columns (zero columns stay zero), float64."""
    M_out, M_in = M_out.to(_F64), M_in.to(_F64)
    if M_out.shape[1] != M_in.shape[1]:
        raise ValueError(f"M_out has {M_out.shape[1]} columns but M_in {M_in.shape[1]}")
    no, ni = M_out.norm(dim=0), M_in.norm(dim=0)
    return (M_out / torch.where(no > 0, no, torch.ones_like(no)),
            M_in / torch.where(ni > 0, ni, torch.ones_like(ni)))


def predicted_span(M_out: Tensor, M_in: Tensor, rtol: float = 1e-10) -> Tensor:
    """An orthonormal basis (d_out·d_in × r, row-major vec) of span{b_cc'} of
    :func:`predicted_basis`, keeping directions above ``rtol`` of the largest singular value.

    vec_r b_cc' = u_c ⊗ v_c' are the columns of U ⊗ V (the unit-norm means), whose singular
    values are the products σ_i τ_j of U's and V's and whose left singular vectors are
    p_i ⊗ r_j. So two d × K SVDs give the same subspace as ``orthonormal_basis`` of the
    d_out·d_in × K² stack, without forming or decomposing it (collapsed, rank-deficient means
    drop out by the same rule)."""
    U, V = _unit_columns(M_out, M_in)
    P, s, _ = torch.linalg.svd(U, full_matrices=False)
    R, t, _ = torch.linalg.svd(V, full_matrices=False)
    prod = (s[:, None] * t[None, :]).reshape(-1)
    basis = torch.einsum("ai,bj->abij", P, R).reshape(U.shape[0] * V.shape[0], -1)
    if prod.numel() == 0 or float(prod.max()) == 0.0:
        return basis[:, :0]
    return basis[:, prod > rtol * float(prod.max())]


def _stack(basis: Tensor) -> Tensor:
    """(K, K, d_out, d_in) → (K², d_out, d_in), pairs (c, c') in row-major order."""
    if basis.ndim == 4:
        return basis.reshape(-1, basis.shape[-2], basis.shape[-1])
    if basis.ndim == 3:
        return basis
    raise ValueError(f"basis must have shape (K, K, d_out, d_in) (got {tuple(basis.shape)})")


def _pair_shape(basis: Tensor) -> tuple[int, ...]:
    return tuple(basis.shape[:2]) if basis.ndim == 4 else (basis.shape[0],)


# --------------------------------------------------------------------------- operators
def dense_hvp(H: Tensor) -> HVP:
    """Operator of a dense (d_out·d_in)² matrix H acting on row-major vec: V ↦ mat(H vec V)."""
    H = H.to(_F64)

    def apply(V: Tensor) -> Tensor:
        V = V.to(_F64)
        flat = V.reshape(-1, H.shape[1])
        return (flat @ H.T).reshape(V.shape)

    return apply


def alignment_f(hvp: HVP | CurvatureOperator, basis: Tensor) -> Tensor:
    """f_{cc'} = (vᵀHv)² / (‖v‖² ‖Hv‖²), v = vec b_{cc'}, shape (K, K) (docs/theory.md §6.2).

    ``hvp`` is a curvature operator on vec W_l (its matrix form ``apply_matrices`` is used; for
    a :class:`~dufm_core.curvature.kronecker.KroneckerSpectrum` that is V ↦ P V Qᵀ) or a
    callable mapping a stack (m, d_out, d_in) to H applied to each matrix, e.g.
    :func:`dense_hvp`. f = 1 iff v is an eigenvector with a non-zero eigenvalue. When Hv = 0
    (v in the kernel) or v = 0 the cosine is undefined and 0 is returned.
    """
    if isinstance(hvp, CurvatureOperator):
        hvp = hvp.apply_matrices
    V = _stack(basis).to(_F64)
    HV = hvp(V).to(_F64).reshape(V.shape)
    num = (V * HV).sum((1, 2)).square()
    den = V.square().sum((1, 2)) * HV.square().sum((1, 2))
    f = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), 0.0)
    return f.reshape(_pair_shape(basis))


# --------------------------------------------------------------------------- subspace measures
def _flat_basis(basis: Tensor) -> Tensor:
    V = _stack(basis).to(_F64)
    return V.reshape(V.shape[0], -1)


def subspace_capture(U_top: Tensor, basis: Tensor) -> Tensor:
    """π_{cc'} = ‖U_topᵀ v‖² / ‖v‖², v = vec_r b_{cc'}; shape (K, K) (docs/theory.md §6.2).

    U_top (dim × m) must have orthonormal columns (row-major vec of the layer's matrices). π is
    invariant under any rotation of U_top within its span, so it is the right measure inside a
    degenerate eigenspace. NaN for a zero v.
    """
    V = _flat_basis(basis)
    proj = V @ U_top.to(_F64)
    nv = V.square().sum(1)
    pi = proj.square().sum(1) / nv
    pi = torch.where(nv > 0, pi, torch.full_like(pi, math.nan))
    return pi.reshape(_pair_shape(basis))


def principal_angles(U_top: Tensor, basis: Tensor, rtol: float = 1e-10) -> Tensor:
    """Principal angles (radians, ascending) between span{v_{cc'}} (numerical rank, ``rtol``) and
    span(U_top); min(rank, m) of them. All ~0 when the predicted space lies inside span(U_top)."""
    Qb = orthonormal_basis(_flat_basis(basis).T, rtol)
    Qu = orthonormal_basis(U_top, rtol)
    return subspace_angles(Qb, Qu)


def cosine_heatmap(U_top: Tensor, basis: Tensor) -> Tensor:
    """|cos(v̂_{cc'}, u_j)|, shape (K², m), rows in (c, c') row-major order (docs/theory.md §6.2).

    Basis-dependent inside a degenerate eigenspace: look for block structure, not for a
    permutation matrix. Row (c, c')'s squared norm equals π_{cc'} when U_top is orthonormal.
    """
    V = _flat_basis(basis)
    U = U_top.to(_F64)
    nv = V.norm(dim=1, keepdim=True)
    nu = U.norm(dim=0, keepdim=True)
    return ((V @ U) / (nv * nu)).abs()


def alignment_report(
    basis: Tensor, hvp: HVP | CurvatureOperator | None = None, U_top: Tensor | None = None
) -> dict[str, Any]:
    """JSON-ready bundle: ``alignment_f`` (K×K, if ``hvp``), and, if ``U_top``,
    ``subspace_capture`` (K×K), ``principal_angles`` (ascending), ``max_principal_angle``,
    ``cosine_heatmap`` (K² × m)."""
    out: dict[str, Any] = {}
    if hvp is not None:
        out["alignment_f"] = to_jsonable(alignment_f(hvp, basis))
    if U_top is not None:
        angles = principal_angles(U_top, basis)
        out["subspace_capture"] = to_jsonable(subspace_capture(U_top, basis))
        out["principal_angles"] = to_jsonable(angles)
        out["max_principal_angle"] = float(angles.max()) if angles.numel() else math.nan
        out["cosine_heatmap"] = to_jsonable(cosine_heatmap(U_top, basis))
    return out
