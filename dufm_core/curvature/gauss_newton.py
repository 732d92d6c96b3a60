"""Papyan's split of a layer's Gauss–Newton matrix into class, cross-class and within-class parts
(docs/theory.md §4.2).

For layer l write the per-sample Jacobian vectors v_{i,k} = ∂z_{i,k}/∂vec W_l = g_{i,k} ⊗ h̃_i,
with g_{i,k} = ∂z_{i,k}/∂h_i^{(l+1)} (through W_{l+1}..W_L and the ReLU masks,
:func:`dufm_core.propagation.backprop`) and h̃_i the (post-activation) input of W_l. With the
class means v_{ck} = Av_{i∈c} v_{i,k} and v_c = Av_k v_{ck}:

    G_total  = (1/N) Σ_{i,k} v_{ik} v_{ik}ᵀ                                (= JᵀJ/N)
    G_class  = Σ_c v_c v_cᵀ
    G_cross  = (1/K) Σ_{c,k} (v_{ck} − v_c)(v_{ck} − v_c)ᵀ
    G_within = (1/N) Σ_{i,k} (v_{ik} − v_{c(i)k})(v_{ik} − v_{c(i)k})ᵀ

and G_total = G_class + G_cross + G_within exactly (the mixed terms vanish because the deviations
average to zero). At the linear MSE optimum the ranks are 0 / K(K−1) / K, every non-zero
eigenvalue is λ_{W_l}γ/(1−γ), and the images of G_class and G_cross are orthogonal.

Nothing of size dim² is formed unless asked for: the vectors are kept factored
(:class:`GNSplitParts`), each part is a :class:`~dufm_core.curvature.base.CurvatureOperator`
(:class:`GNPartOperator`), and the spectra come from Gram matrices of the factored vectors,
⟨g ⊗ h, g' ⊗ h'⟩ = ⟨g, g'⟩⟨h, h'⟩ (K×K, K²×K², NK×NK), from the dense dim×dim part when that is
smaller, or from the block eigensolver when both are too large. :func:`gn_split` returns a typed
:class:`GNSplit`; its :meth:`GNSplit.to_dict` is the report's ``gn_split`` block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.models import DeepUFM
from dufm_core.propagation import backprop, check_layer, layer_inputs
from dufm_core.subspaces import orthonormal_basis

__all__ = [
    "GN_PARTS",
    "GNPartOperator",
    "GNPartSpectrum",
    "GNSplit",
    "GNSplitParts",
    "gn_split",
    "gn_split_parts",
]

Tensor = torch.Tensor
_F64 = torch.float64
GN_PARTS = ("within", "cross", "class", "total")


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

    def operator(self, part: str) -> GNPartOperator:
        """G_part as a :class:`~dufm_core.curvature.base.CurvatureOperator` on vec_r W_l."""
        return GNPartOperator(self, part)

    @property
    def operators(self) -> dict[str, Any]:
        """{part: stack ↦ G_part stack} (the matrix form) for within, cross, class and total."""
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

    g_{i,c'} = ∂z_{i,c'}/∂h_i^{(l+1)} (pre-activation output of W_l) comes from
    :func:`~dufm_core.propagation.backprop`
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


class GNPartOperator(CurvatureOperator):
    """A GN part G_part as a symmetric operator on row-major vec W_l (for the block Krylov
    solver): products through the factored vectors (:meth:`GNSplitParts.apply`), the dense
    matrix from :meth:`GNSplitParts.dense`."""

    def __init__(self, parts: GNSplitParts, part: str) -> None:
        if part not in GN_PARTS:
            raise ValueError(f"part must be one of {', '.join(GN_PARTS)} (got {part!r})")
        super().__init__(parts.dim, _F64, parts.h.device)
        self.parts, self.part = parts, part

    def matmat(self, V: Tensor) -> Tensor:
        """G_part V for V (dim, m)."""
        self._check_block(V)
        self.matvecs += V.shape[1]
        M = V.T.reshape(V.shape[1], *self.parts.shape)
        return self.parts.apply(self.part, M).reshape(V.shape[1], -1).T

    def apply_matrices(self, M: Tensor) -> Tensor:
        """G_part on a stack of (d_out, d_in) matrices."""
        return self.parts.apply(self.part, M)

    def dense(self, max_dim: int = 4096, chunk: int | None = None) -> Tensor:
        """The dense part from the factored vectors (:meth:`GNSplitParts.dense`)."""
        return self.parts.dense(self.part, max_dim=max_dim)


@dataclass
class GNPartSpectrum:
    """The non-zero eigenvalues (> the split's tolerance, descending) of one part and their
    number; ``rank`` is None when only the top of the spectrum was computed (``partial``)."""

    rank: int | None
    eigenvalues: Tensor

    def to_dict(self) -> dict[str, Any]:
        """{"rank", "eigenvalues"} as plain JSON values."""
        return {"rank": self.rank, "eigenvalues": self.eigenvalues.detach().cpu().tolist()}


@dataclass
class GNSplit:
    """Result of :func:`gn_split` (see there for the fields' meaning).

    ``spectra`` maps each of within, cross, class, total to its :class:`GNPartSpectrum`;
    ``parts`` keeps the factored vectors (:class:`GNSplitParts`: operators, dense parts, Gram
    matrices). :meth:`to_dict` gives the JSON form of the report (no ``parts``).
    """

    layer: int
    loss: str
    weighting: str
    tau: float
    kink_rtol: float
    dim: int
    space: str
    rtol: float
    tolerance: float
    partial: bool
    spectra: dict[str, GNPartSpectrum]
    orthogonality_error: float
    orthogonality_max_cosine: float
    parts: GNSplitParts

    @property
    def ranks(self) -> list[int | None]:
        """[within, cross, class] ranks, the order of theory.Prediction.gn_split_ranks."""
        return [self.spectra[p].rank for p in ("within", "cross", "class")]

    def eigenvalues(self, part: str) -> Tensor:
        """The non-zero eigenvalues of ``part`` (descending)."""
        return self.spectra[part].eigenvalues

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict: ``layer``, ``loss``, ``weighting``, ``tau``, ``kink_rtol``,
        ``dim``, ``space``, ``rtol``, ``tolerance``, ``partial``, {``rank``, ``eigenvalues``}
        for each part, ``ranks``, ``orthogonality_error``, ``orthogonality_max_cosine``."""
        out: dict[str, Any] = {
            "layer": self.layer, "loss": self.loss, "weighting": self.weighting,
            "tau": self.tau, "kink_rtol": self.kink_rtol, "dim": self.dim, "space": self.space,
            "rtol": self.rtol, "tolerance": self.tolerance, "partial": self.partial,
        }  # fmt: skip
        for p in GN_PARTS:
            out[p] = self.spectra[p].to_dict()
        out["ranks"] = self.ranks
        out["orthogonality_error"] = self.orthogonality_error
        out["orthogonality_max_cosine"] = self.orthogonality_max_cosine
        return out


def _part_top(parts: GNSplitParts, part: str, m: int) -> Tensor:
    """The m largest eigenvalues (descending) of a part, matrix-free."""
    res = top_eigenpairs(GNPartOperator(parts, part), m, block=m, tol=1e-8)
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
    max_size: int = 6000,
    partial_top: int | None = None,
) -> GNSplit:
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
    only exact zeros are kinks, as in autograd); see :func:`~dufm_core.propagation.backprop`.

    Eigenvalues come from Gram matrices of the factored vectors (K×K, K²×K², and NK×NK via
    ⟨g⊗h, g'⊗h'⟩ = ⟨g,g'⟩⟨h,h'⟩), or from the dense dim×dim part when dim = d_out·d_in < NK.
    When both exceed ``max_size`` (a real network's head over thousands of samples), the full
    eigendecompositions of within/total would cost O(min(NK, dim)³): then only their top
    ``partial_top`` (default K² + K) eigenvalues are computed, by the block Krylov solver on
    the matrix-free products :meth:`GNSplitParts.apply`, their ``rank`` is None and
    ``partial`` is True (class and cross stay exact: their Gram matrices are K × K and K² × K²).

    Returns a :class:`GNSplit`: ``layer``, ``loss``, ``weighting``, ``tau``, ``kink_rtol``,
    ``dim``, ``space`` ("gram" | "dense" | "iterative"), ``rtol``, ``tolerance``
    (= rtol · λ_max(G)), ``partial``, for each of within, cross, class, total a
    :class:`GNPartSpectrum` (``rank``, ``eigenvalues``: non-zero, i.e. > tolerance,
    descending), ``ranks`` = [within, cross, class] (the order of
    theory.Prediction.gn_split_ranks), ``orthogonality_error`` =
    ‖G_class G_cross‖_F / (‖G_class‖_F ‖G_cross‖_F), ``orthogonality_max_cosine`` = largest
    cosine between the two images (0 when orthogonal), and ``parts`` (the
    :class:`GNSplitParts`: operators via ``.operator(part)`` / ``.apply``, dense matrices via
    ``.dense`` for dim ≤ 4096). ``to_dict()`` is its JSON form.
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
    nonzero = {}
    for p in GN_PARTS:
        nz = spectra[p][spectra[p] > tol] if lam_max > 0 else spectra[p][:0]
        rank = None if partial and p in ("within", "total") else int(nz.numel())
        nonzero[p] = GNPartSpectrum(rank, nz)
    orth_error, orth_cos = _orthogonality(parts, rtol)
    return GNSplit(
        layer=l, loss=loss, weighting=parts.weighting, tau=float(tau),
        kink_rtol=float(kink_rtol), dim=parts.dim, space=space, rtol=rtol, tolerance=tol,
        partial=partial, spectra=nonzero, orthogonality_error=orth_error,
        orthogonality_max_cosine=orth_cos, parts=parts,
    )  # fmt: skip


def _orthogonality(parts: GNSplitParts, rtol: float) -> tuple[float, float]:
    """‖G_a G_b‖_F / (‖G_a‖_F ‖G_b‖_F) and the largest cosine between the images of
    G_a = G_class and G_b = G_cross, from the K and K² part vectors only:
    with G_a = X_aᵀX_a, ‖G_a G_b‖_F² = tr(Mᵀ Γ_a M Γ_b), M = X_a X_bᵀ, Γ = X Xᵀ."""
    Xa = parts.part_vectors("class").reshape(parts.K, -1)
    Xb = parts.part_vectors("cross").reshape(parts.K * parts.K, -1)
    Ga, Gb, M = Xa @ Xa.T, Xb @ Xb.T, Xa @ Xb.T
    na, nb = torch.linalg.matrix_norm(Ga), torch.linalg.matrix_norm(Gb)
    if float(na) == 0.0 or float(nb) == 0.0:
        return 0.0, 0.0
    prod2 = torch.trace(M.T @ Ga @ M @ Gb).clamp_min(0.0)
    Qa, Qb = orthonormal_basis(Xa.T, rtol), orthonormal_basis(Xb.T, rtol)
    cos = torch.linalg.svdvals(Qa.T @ Qb)
    return float(prod2.sqrt() / (na * nb)), float(cos.max()) if cos.numel() else 0.0
