"""Eigenvector alignment and Papyan's Gauss–Newton split for one layer (docs/theory.md §4.1,
§4.2, §6.2).

Conventions (docs/theory.md "How to use this document")
---------------------------------------------------
* Layers are numbered 1..L. W_l has shape (d_{l+1}, d_l) and maps the *input features* H̃_l
  (H_1 for l = 1, the post-activation σ(H_l) for a ReLU model, H_l for a linear one) to the
  pre-activation H_{l+1} = W_l H̃_l; H_{L+1} = Z are the logits.
* vec is ROW-MAJOR: vec(W)[a·d_in + b] = W[a, b], i.e. ``W.reshape(-1)``. A layer operator acting
  on vec W_l is passed around in *matrix form*: a callable mapping a stack (m, d_out, d_in) to a
  stack of the same shape. For a Kronecker product P ⊗ Q (row-major) that is V ↦ P V Qᵀ.
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

plus the principal angles between span{v_{cc'}} and span(U_top).

Papyan's split (docs/theory.md §4.2) of the layer Gauss–Newton matrix
G = (1/N) Σ_{i,c,c'} v v ᵀ with v_{icc'} = ∂z_{ic,c'}/∂vec W_l, computed in factored form
v_{icc'} = g_{ic,c'} ⊗ h̃_{ic} (:func:`gn_split`, :class:`GNSplitParts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dufm_core.collapse import class_means
from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.models import DeepUFM

__all__ = [
    "GNSplitParts",
    "alignment_f",
    "alignment_report",
    "backprop",
    "check_layer",
    "cosine_heatmap",
    "dense_hvp",
    "gn_split",
    "gn_split_parts",
    "layer_inputs",
    "layer_means",
    "orthonormal_basis",
    "predicted_basis",
    "principal_angles",
    "subspace_angles",
    "subspace_capture",
    "to_jsonable",
]

Tensor = torch.Tensor
HVP = Callable[[Tensor], Tensor]
_F64 = torch.float64
GN_PARTS = ("within", "cross", "class", "total")


# --------------------------------------------------------------------------- JSON helper
def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, tuples and nested containers to plain Python types.

    Tensors and arrays become (nested) lists, 0-d ones Python scalars; dict keys become str.
    Non-finite floats stay float (the run store writes JSON with ``allow_nan=True``). Anything
    else (e.g. an operator object) raises TypeError so that it is never silently dropped.
    """
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        return obj.item() if obj.ndim == 0 else obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.item() if obj.ndim == 0 else obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"to_jsonable: cannot convert {type(obj).__name__}")


# --------------------------------------------------------------------------- model access
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


def _weights64(model: DeepUFM) -> list[Tensor]:
    return [W.detach().to(_F64) for W in model.weights]


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
    Ws = _weights64(model)
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
    M_out, M_in = M_out.to(_F64), M_in.to(_F64)
    if M_out.shape[1] != M_in.shape[1]:
        raise ValueError(f"M_out has {M_out.shape[1]} columns but M_in {M_in.shape[1]}")
    no, ni = M_out.norm(dim=0), M_in.norm(dim=0)
    U = M_out / torch.where(no > 0, no, torch.ones_like(no))
    V = M_in / torch.where(ni > 0, ni, torch.ones_like(ni))
    return torch.einsum("ac,bd->cdab", U, V)


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


def alignment_f(hvp: HVP, basis: Tensor) -> Tensor:
    """f_{cc'} = (vᵀHv)² / (‖v‖² ‖Hv‖²), v = vec b_{cc'}, shape (K, K) (docs/theory.md §6.2).

    ``hvp`` maps a stack (m, d_out, d_in) to H applied to each matrix (row-major vec), e.g.
    ``KroneckerSpectrum.apply``
    (V ↦ P V Qᵀ) for linear MSE, :func:`dense_hvp`, or a curvature operator.
    f = 1 iff v is an eigenvector with a non-zero eigenvalue. When Hv = 0 (v in the kernel) or
    v = 0 the cosine is undefined and 0 is returned.
    """
    V = _stack(basis).to(_F64)
    HV = hvp(V).to(_F64).reshape(V.shape)
    num = (V * HV).sum((1, 2)).square()
    den = V.square().sum((1, 2)) * HV.square().sum((1, 2))
    f = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), 0.0)
    return f.reshape(_pair_shape(basis))


# --------------------------------------------------------------------------- subspace measures
def orthonormal_basis(X: Tensor, rtol: float = 1e-10) -> Tensor:
    """Orthonormal basis (columns) of the column span of X (dim × r): left singular vectors with
    singular value > rtol · the largest."""
    X = X.to(_F64)
    if X.shape[1] == 0:
        return X
    U, s, _ = torch.linalg.svd(X, full_matrices=False)
    if float(s[0]) == 0.0:
        return U[:, :0]
    return U[:, s > rtol * s[0]]


def subspace_angles(A: Tensor, B: Tensor) -> Tensor:
    """Principal angles (radians, ascending) between span(A) and span(B), A and B with
    orthonormal columns; min(rank) angles. Small angles come from sines (‖(I − BBᵀ)A‖'s singular
    values) and large ones from cosines (svd of BᵀA), accurate at both ends (Björck–Golub)."""
    A, B = A.to(_F64), B.to(_F64)
    if A.shape[1] > B.shape[1]:
        A, B = B, A
    p = A.shape[1]
    if p == 0:
        return torch.zeros(0, dtype=_F64, device=A.device)
    cos = torch.linalg.svdvals(B.T @ A).clamp(0.0, 1.0)  # descending ↔ ascending angle
    sin = torch.linalg.svdvals(A - B @ (B.T @ A)).clamp(0.0, 1.0).flip(0)  # ascending
    small = cos.square() > 0.5
    return torch.where(small, torch.arcsin(sin), torch.arccos(cos))


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
    basis: Tensor, hvp: HVP | None = None, U_top: Tensor | None = None
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


# --------------------------------------------------------------------------- Gauss–Newton split
@dataclass
class GNSplitParts:
    """Factored Papyan split of the layer-l Gauss–Newton matrix (docs/theory.md §4.2).

    Per-sample vectors v_{i,k} = g_{i,k} ⊗ h̃_i (row-major vec of g_{i,k} h̃_iᵀ), i = 1..N (class
    ordered; sample i has class c(i)), k = 1..K the logit (or, with softmax weighting, the
    "pretend label") index. With v_{ck} = Av_{i∈c} v_{i,k} and v_c = Av_k v_{ck}:

        G_total  = (1/N) Σ_{i,k} v_{ik} v_{ik}ᵀ
        G_class  = Σ_c v_c v_cᵀ
        G_cross  = (1/K) Σ_{c,k} (v_{ck} − v_c)(v_{ck} − v_c)ᵀ
        G_within = (1/N) Σ_{i,k} (v_{ik} − v_{c(i)k})(v_{ik} − v_{c(i)k})ᵀ

    and G_total = G_class + G_cross + G_within exactly (the mixed terms vanish because the
    deviations average to zero). Nothing of size dim² is formed except by :meth:`dense`.
    Attributes: ``g`` (N, K, d_out), ``h`` (N, d_in), ``labels`` (N,), ``V`` = v_{ck} as matrices
    (K, K, d_out, d_in), ``Vc`` = v_c (K, d_out, d_in).
    """

    layer: int
    K: int
    n: int
    g: Tensor
    h: Tensor
    labels: Tensor
    V: Tensor
    Vc: Tensor
    weighting: str
    tau: float

    @property
    def N(self) -> int:
        """Number of samples."""
        return self.h.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(d_out, d_in) of W_l."""
        return self.g.shape[2], self.h.shape[1]

    @property
    def dim(self) -> int:
        """d_out · d_in, the size of vec W_l."""
        return self.g.shape[2] * self.h.shape[1]

    def part_vectors(self, part: str) -> Tensor:
        """The vectors x_j of a part as matrices (r, d_out, d_in), scaled so G_part = Σ_j x_j x_jᵀ.
        ``within`` and ``total`` have N·K of them (index i·K + k)."""
        K, N = self.K, self.N
        if part == "class":
            return self.Vc
        if part == "cross":
            return (self.V - self.Vc[:, None]).reshape(K * K, *self.shape) / math.sqrt(K)
        outer = self.g[:, :, :, None] * self.h[:, None, None, :]  # (N, K, d_out, d_in)
        if part == "within":
            outer = outer - self.V[self.labels]
        elif part != "total":
            raise ValueError(f"part must be one of {', '.join(GN_PARTS)} (got {part!r})")
        return outer.reshape(N * K, *self.shape) / math.sqrt(N)

    def apply(self, part: str, M: Tensor) -> Tensor:
        """G_part applied to M (d_out, d_in) or a stack (m, d_out, d_in), in matrix form."""
        single = M.ndim == 2
        M = (M[None] if single else M).to(_F64)
        if part in ("class", "cross"):
            X = self.part_vectors(part)
            coeff = torch.einsum("rab,mab->mr", X, M)
            out = torch.einsum("mr,rab->mab", coeff, X)
        elif part in ("within", "total"):
            # y_{m,i,k} = ⟨g_{ik} h_iᵀ, M_m⟩ (minus ⟨v_{c(i)k}, M_m⟩ for within). For within the
            # v_{ck} term of the outer product drops out because Σ_{i∈c} (y_{ik}) = 0.
            T = torch.einsum("mab,ib->mia", M, self.h)
            y = torch.einsum("mia,ika->mik", T, self.g)
            if part == "within":
                y = y - torch.einsum("ckab,mab->mck", self.V, M)[:, self.labels]
            S = torch.einsum("mik,ika->mia", y, self.g)
            out = torch.einsum("mia,ib->mab", S, self.h) / self.N
        else:
            raise ValueError(f"part must be one of {', '.join(GN_PARTS)} (got {part!r})")
        return out[0] if single else out

    @property
    def operators(self) -> dict[str, HVP]:
        """{part: stack ↦ G_part stack} for within, cross, class and total."""
        return {p: (lambda M, p=p: self.apply(p, M)) for p in GN_PARTS}

    def dense(self, part: str, max_dim: int = 4096) -> Tensor:
        """Dense (dim × dim) matrix of a part (row-major vec); refuses dim > ``max_dim``.
        within/total are accumulated over chunks of samples (memory dim² + chunk·K·dim)."""
        if self.dim > max_dim:
            raise ValueError(f"dense GN part of dim {self.dim} > max_dim {max_dim}: use apply()")
        if part in ("class", "cross"):
            X = self.part_vectors(part).reshape(-1, self.dim)
            return X.T @ X
        if part not in ("within", "total"):
            raise ValueError(f"part must be one of {', '.join(GN_PARTS)} (got {part!r})")
        G = torch.zeros(self.dim, self.dim, dtype=_F64, device=self.h.device)
        chunk = max(1, 2_000_000 // max(1, self.K * self.dim))
        for s in range(0, self.N, chunk):
            idx = slice(s, s + chunk)
            outer = self.g[idx, :, :, None] * self.h[idx, None, None, :]
            if part == "within":
                outer = outer - self.V[self.labels[idx]]
            X = outer.reshape(-1, self.dim)
            G += X.T @ X
        return G / self.N

    def gram(self, part: str) -> Tensor:
        """Gram matrix [⟨x_j, x_k⟩] of a part's vectors (same non-zero eigenvalues as G_part).

        class/cross: K × K and K² × K² from the explicit vectors. within/total: (NK) × (NK) from
        the Kronecker identity ⟨g ⊗ h, g' ⊗ h'⟩ = ⟨g, g'⟩⟨h, h'⟩ (a Hadamard product of the two
        Gram matrices), centred per class for within: never a dim × dim matrix.
        """
        if part in ("class", "cross"):
            X = self.part_vectors(part).reshape(-1, self.dim)
            return X @ X.T
        if part not in ("within", "total"):
            raise ValueError(f"part must be one of {', '.join(GN_PARTS)} (got {part!r})")
        N, K = self.N, self.K
        gf = self.g.reshape(N * K, -1)
        Gh = self.h @ self.h.T  # (N, N)
        Gamma = (gf @ gf.T).reshape(N, K, N, K) * Gh[:, None, :, None]
        if part == "within":
            onehot = torch.nn.functional.one_hot(self.labels, K).to(_F64)
            avg = (onehot / onehot.sum(0).clamp_min(1)) @ onehot.T  # class-mean operator
            C = torch.eye(N, dtype=_F64, device=gf.device) - avg
            Gamma = torch.einsum("ij,jkJl->ikJl", C, Gamma)
            Gamma = torch.einsum("ikjl,Jj->ikJl", Gamma, C)
        return Gamma.reshape(N * K, N * K) / N


def gn_split_parts(
    model: DeepUFM,
    l: int,
    loss: str = "mse",
    weighting: str | None = None,
    tau: float = 0.0,
    kink_rtol: float = 0.0,
) -> GNSplitParts:
    """Factored Papyan split of the layer-l GN matrix (see :func:`gn_split` for the maths).

    g_{i,c'} = ∂z_{i,c'}/∂h_i^{(l+1)} (pre-activation output of W_l) comes from :func:`backprop`
    (the chain rule through W_{l+1}..W_L and the ReLU masks with σ'(0) = ``tau``; ``tau`` = 0 is
    exactly what autograd computes; ``kink_rtol`` as there), and h̃_i is column i of H̃_l.
    """
    check_layer(model, l)
    if loss not in ("mse", "ce"):
        raise ValueError(f"loss must be mse | ce (got {loss!r})")
    weighting = weighting or "identity"
    if weighting not in ("identity", "softmax"):
        raise ValueError(f"weighting must be identity | softmax (got {weighting!r})")
    if weighting == "softmax" and loss != "ce":
        raise ValueError("weighting='softmax' is the CE Gauss–Newton; use loss='ce'")
    K, N = model.K, model.N
    pre, post = layer_inputs(model)
    device = pre[0].device
    eye = torch.eye(K, dtype=_F64, device=device)
    E = eye[:, :, None].expand(K, K, N)  # E[c'] = e_{c'} 1ᵀ
    delta = backprop(model, l, E, tau, kink_rtol)  # (K, d_out, N): delta[c', :, i] = g_{i,c'}
    g = delta.permute(2, 0, 1).contiguous()  # (N, K, d_out)
    if weighting == "softmax":
        p = torch.softmax(pre[-1].T, dim=1)  # (N, K)
        gbar = torch.einsum("ik,ika->ia", p, g)
        g = p.sqrt()[:, :, None] * (g - gbar[:, None, :])
    h = post[l - 1].T.contiguous()  # (N, d_in)
    labels = model.labels.to(device)
    onehot = torch.nn.functional.one_hot(labels, K).to(_F64)
    counts = onehot.sum(0)
    V = torch.einsum("ic,ika,ib->ckab", onehot, g, h) / counts[:, None, None, None]
    Vc = V.mean(1)
    return GNSplitParts(
        layer=l, K=K, n=model.n, g=g, h=h, labels=labels, V=V, Vc=Vc,
        weighting=weighting, tau=float(tau),
    )  # fmt: skip


class _PartOperator(CurvatureOperator):
    """A GN part as a symmetric operator on row-major vec W_l (for the block Krylov solver)."""

    def __init__(self, parts: GNSplitParts, part: str) -> None:
        super().__init__(parts.dim, _F64, parts.h.device)
        self.parts, self.part = parts, part

    def matmat(self, V: Tensor) -> Tensor:
        M = V.T.reshape(V.shape[1], *self.parts.shape)
        return self.parts.apply(self.part, M).reshape(V.shape[1], -1).T


def _part_top(parts: GNSplitParts, part: str, m: int) -> Tensor:
    """The m largest eigenvalues (descending) of a part, matrix-free."""
    res = top_eigenpairs(_PartOperator(parts, part), m, block=m, tol=1e-8)
    return res.values.double().sort(descending=True).values


def _part_spectrum(parts: GNSplitParts, part: str, space: str, max_dim: int) -> Tensor:
    """All eigenvalues (descending) of the Gram or dense form of a part (same non-zero ones)."""
    if part in ("class", "cross") or space == "gram":
        M = parts.gram(part)
    else:
        M = parts.dense(part, max_dim=max_dim)
    return torch.linalg.eigvalsh(M).flip(0)


def gn_split(
    model: DeepUFM,
    l: int,
    loss: str = "mse",
    weighting: str | None = None,
    tau: float = 0.0,
    kink_rtol: float = 0.0,
    rtol: float = 1e-9,
    return_parts: bool = False,
    max_size: int = 6000,
    partial_top: int | None = None,
) -> dict[str, Any]:
    """Papyan's split G = G_class + G_cross + G_within of the layer-l Gauss–Newton matrix.

    Definitions (docs/theory.md §4.2): v_{icc'} = ∂z_{ic,c'}/∂vec W_l = g_{ic,c'} ⊗ h̃_{ic}, with
    g = ∂z/∂(pre-activation output h^{(l+1)}) and h̃ the (post-activation) input of W_l;
    v_{cc'} = Av_i v_{icc'}, v_c = Av_{c'} v_{cc'};

        G_class = Σ_c v_c v_cᵀ,   G_cross = (1/K) Σ_{c,c'} (v_{cc'} − v_c)(v_{cc'} − v_c)ᵀ,
        G_within = (1/N) Σ_{i,c,c'} (v_{icc'} − v_{cc'})(v_{icc'} − v_{cc'})ᵀ,

    summing to G = (1/N) Σ v v ᵀ = JᵀJ/N, the layer Gauss–Newton matrix for MSE (equal to the
    fit Hessian for the linear model). At the linear MSE optimum the ranks are 0 / K(K−1) / K,
    all non-zero eigenvalues λ_{W_l}γ/(1−γ), and the images of G_class and G_cross orthogonal.

    Loss and weighting:
    * ``loss='mse'`` (``weighting`` identity): the split of JᵀJ/N above.
    * ``loss='ce'``, ``weighting='identity'`` (default): the same **MSE-form** split of JᵀJ/N
      (it ignores the softmax; it is *not* the CE Gauss–Newton matrix).
    * ``loss='ce'``, ``weighting='softmax'``: the split of the CE Gauss–Newton matrix
      (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i, using Papyan's per-sample vectors
      ṽ_{i,k} = √p_{ik} J_iᵀ(e_k − p_i) = √p_{ik} ∂ℓ(z_i, label k)/∂vec W_l (k plays the role of
      c'); Σ_k ṽ_{ik} ṽ_{ik}ᵀ = J_iᵀ (diag p_i − p_i p_iᵀ) J_i, so the three parts sum to it.

    ReLU: g uses σ'(0) = ``tau`` (default 0, autograd's convention) and ``kink_rtol`` (default 0:
    only exact zeros are kinks, as in autograd); see :func:`backprop`.

    Eigenvalues come from Gram matrices of the factored vectors (K×K, K²×K², and NK×NK via
    ⟨g⊗h, g'⊗h'⟩ = ⟨g,g'⟩⟨h,h'⟩), or from the dense dim×dim part when dim = d_out·d_in < NK.
    When both exceed ``max_size`` (a real network's head over thousands of samples), the full
    eigendecompositions of within/total would cost O(min(NK, dim)³): then only their top
    ``partial_top`` (default K² + K) eigenvalues are computed, by the block Krylov solver on
    the matrix-free products :meth:`GNSplitParts.apply`, their ``rank`` is None and
    ``partial`` is True (class and cross stay exact: their Gram matrices are K × K and K² × K²).

    Returns a JSON-ready dict: ``layer``, ``loss``, ``weighting``, ``tau``, ``kink_rtol``,
    ``dim``, ``space``
    ("gram" | "dense"), ``rtol``, ``tolerance`` (= rtol · λ_max(G)), for each of ``within``,
    ``cross``, ``class``, ``total`` a dict {``rank``, ``eigenvalues`` (non-zero, i.e.
    > tolerance, descending)}, ``ranks`` = [within, cross, class] (the order of
    theory.Prediction.gn_split_ranks),
    ``orthogonality_error`` = ‖G_class G_cross‖_F / (‖G_class‖_F ‖G_cross‖_F) and
    ``orthogonality_max_cosine`` = largest cosine between the two images (0 when orthogonal).
    With ``return_parts`` the key ``parts`` holds the :class:`GNSplitParts` (operators via
    ``.operators`` / ``.apply``, dense matrices via ``.dense`` for dim ≤ 4096); it is not
    JSON-serialisable, so pop it before storing the dict.
    """
    parts = gn_split_parts(model, l, loss, weighting, tau, kink_rtol)
    NK = parts.N * parts.K
    space = "gram" if parts.dim >= NK else "dense"
    partial = min(NK, parts.dim) > max_size
    if partial:  # within/total too large for a full eigendecomposition: top values only
        space = "iterative"
        top = min(partial_top or parts.K**2 + parts.K, parts.dim)
        spectra = {p: _part_top(parts, p, top) for p in ("within", "total")}
        spectra.update({p: _part_spectrum(parts, p, "gram", 0) for p in ("class", "cross")})
    else:
        spectra = {p: _part_spectrum(parts, p, space, max(parts.dim, 1)) for p in GN_PARTS}
    lam_max = max(float(spectra[p][0]) if spectra[p].numel() else 0.0 for p in GN_PARTS)
    tol = rtol * lam_max if lam_max > 0 else 0.0
    out: dict[str, Any] = {
        "layer": l, "loss": loss, "weighting": parts.weighting, "tau": float(tau),
        "kink_rtol": float(kink_rtol),
        "dim": parts.dim, "space": space, "rtol": rtol, "tolerance": tol, "partial": partial,
    }  # fmt: skip
    for p in GN_PARTS:
        nz = spectra[p][spectra[p] > tol] if lam_max > 0 else spectra[p][:0]
        rank = None if partial and p in ("within", "total") else int(nz.numel())
        out[p] = {"rank": rank, "eigenvalues": to_jsonable(nz)}
    out["ranks"] = [out["within"]["rank"], out["cross"]["rank"], out["class"]["rank"]]
    out.update(_orthogonality(parts, rtol))
    if return_parts:
        out["parts"] = parts
    return out


def _orthogonality(parts: GNSplitParts, rtol: float) -> dict[str, float]:
    """‖G_a G_b‖_F / (‖G_a‖_F ‖G_b‖_F) and the largest cosine between the images of
    G_a = G_class and G_b = G_cross, from the K and K² part vectors only:
    with G_a = X_aᵀX_a, ‖G_a G_b‖_F² = tr(Mᵀ Γ_a M Γ_b), M = X_a X_bᵀ, Γ = X Xᵀ."""
    Xa = parts.part_vectors("class").reshape(parts.K, -1)
    Xb = parts.part_vectors("cross").reshape(parts.K * parts.K, -1)
    Ga, Gb, M = Xa @ Xa.T, Xb @ Xb.T, Xa @ Xb.T
    na, nb = torch.linalg.matrix_norm(Ga), torch.linalg.matrix_norm(Gb)
    if float(na) == 0.0 or float(nb) == 0.0:
        return {"orthogonality_error": 0.0, "orthogonality_max_cosine": 0.0}
    prod2 = torch.trace(M.T @ Ga @ M @ Gb).clamp_min(0.0)
    Qa, Qb = orthonormal_basis(Xa.T, rtol), orthonormal_basis(Xb.T, rtol)
    cos = torch.linalg.svdvals(Qa.T @ Qb)
    return {
        "orthogonality_error": float(prod2.sqrt() / (na * nb)),
        "orthogonality_max_cosine": float(cos.max()) if cos.numel() else 0.0,
    }
