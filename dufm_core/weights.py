"""Weight structure of one layer (docs/theory.md §2.1 DNC3, §4.4, §6.4).

At the linear MSE optimum (and the ReLU DNC optimum)

    W_l = σ_l Σ_c μ̂_c^{(l+1)} μ̂_c^{(l)ᵀ},   σ_l² = γ(1−γ)/(K λ_{W_l}),

so W_l has K equal singular values σ_l and no others, its right singular vectors span
span{μ_c^{(l)}} (input means, post-activation for ReLU), its left ones span{μ_c^{(l+1)}}
(e_c for l = L), and W_lᵀW_l has the K-fold eigenvalue σ_l². :func:`weight_report` measures how
close a weight matrix is to this.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dufm_core.alignment import layer_means
from dufm_core.collapse import effective_rank, nc3, stable_rank, threshold_rank
from dufm_core.models import DeepUFM
from dufm_core.store import to_jsonable
from dufm_core.subspaces import orthonormal_basis, subspace_angles

__all__ = ["layer_weight_report", "weight_esd", "weight_report"]

Tensor = torch.Tensor
_F64 = torch.float64


def _capture(vectors: Tensor, basis: Tensor) -> Tensor:
    """‖P v‖² / ‖v‖² for each column v, P the projector onto span(basis) (orthonormal columns)."""
    proj = basis.T @ vectors
    return proj.square().sum(0) / vectors.square().sum(0)


def weight_report(
    W: Tensor,
    M_in: Tensor,
    M_out: Tensor,
    K: int,
    threshold: float = 1e-6,
    rtol: float = 1e-10,
) -> dict[str, Any]:
    """Singular structure of W (d_out × d_in) against the class means M_in (d_in × K, the input
    means μ̃^{(l)}) and M_out (d_out × K, μ^{(l+1)}, or I_K for the last layer). JSON-ready keys:

    * ``singular_values``: all, descending; ``frobenius_norm``;
    * ``right_capture`` / ``left_capture``: for each of the top-K right (left) singular vectors v,
      ‖P_{M_in} v‖² (‖P_{M_out} u‖²), P the orthogonal projector onto the span of the means;
      1 at the optimum. (Per-vector values are well defined even when σ_1..σ_K are equal,
      because the whole top-K space lies in the span.)
    * ``right_angles`` / ``left_angles``: principal angles (radians, ascending) between the span of
      the top-K right (left) singular vectors and span(M_in) (span(M_out));
    * ``effective_rank`` (Roy–Vetterli), ``stable_rank`` ‖W‖_F²/‖W‖_2², ``threshold_rank``
      (#σ > ``threshold``), from :mod:`dufm_core.collapse`;
    * ``dnc3_cos`` = cos(vec W, vec Σ_c μ̂_c^{out} μ̂_c^{inᵀ}) (signed; 1 at the optimum);
    * ``nc3`` = ‖W(I − P_{M_in})‖_F²/‖W‖_F² (collapse.nc3, orthogonal frame);
    * ``gram_eigenvalues``: the top K+1 eigenvalues of WᵀW (σ_i², zero-padded), descending.

    ``rtol`` is the relative tolerance for the numerical rank of the mean spans.
    """
    W, M_in, M_out = W.detach().to(_F64), M_in.to(_F64), M_out.to(_F64)
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    k = min(K, s.numel())
    P_in, P_out = orthonormal_basis(M_in, rtol), orthonormal_basis(M_out, rtol)
    right, left = Vh[:k].T, U[:, :k]

    def unit(M: Tensor) -> Tensor:
        nrm = M.norm(dim=0)
        return M / torch.where(nrm > 0, nrm, torch.ones_like(nrm))

    target = unit(M_out) @ unit(M_in).T  # Σ_c μ̂_c^{out} μ̂_c^{in ᵀ}
    wn, tn = float(W.norm()), float(target.norm())
    dnc3_cos = float((W * target).sum()) / (wn * tn) if wn > 0 and tn > 0 else math.nan
    gram = torch.zeros(K + 1, dtype=_F64, device=s.device)
    m = min(K + 1, s.numel())
    gram[:m] = s[:m].square()
    return {
        "singular_values": to_jsonable(s),
        "frobenius_norm": wn,
        "right_capture": to_jsonable(_capture(right, P_in)),
        "left_capture": to_jsonable(_capture(left, P_out)),
        "right_angles": to_jsonable(subspace_angles(right, P_in)),
        "left_angles": to_jsonable(subspace_angles(left, P_out)),
        "effective_rank": effective_rank(s),
        "stable_rank": stable_rank(s),
        "threshold_rank": threshold_rank(s, threshold),
        "dnc3_cos": dnc3_cos,
        "nc3": nc3(W, M_in),
        "gram_eigenvalues": to_jsonable(gram),
    }


def layer_weight_report(model: DeepUFM, l: int, threshold: float = 1e-6) -> dict[str, Any]:
    """:func:`weight_report` of W_l with the means of :func:`dufm_core.alignment.layer_means`
    (post-activation input means; I_K as output means for l = L), plus ``layer``."""
    M_out, M_in = layer_means(model, l)
    rep = weight_report(model.weights[l - 1], M_in, M_out, model.K, threshold)
    return {"layer": l, **rep}


def weight_esd(W: Tensor, K: int) -> dict[str, Any]:
    """The empirical spectral density of a weight matrix W (d_out × d_in) against a random one:
    all singular values (descending), a Marchenko–Pastur bulk edge and the spikes above it.

    For a d_out × d_in matrix of i.i.d. entries of variance σ², the singular values fill
    [σ|√d_out − √d_in|, σ(√d_out + √d_in)] as the sizes grow (Marchenko–Pastur), and the mean
    squared singular value is σ²·max(d_out, d_in). The noise scale σ is estimated from the
    **bulk**, i.e. all singular values but the K largest (a trained classifier's head carries
    about K (MSE) or K−1 (CE) signal directions, docs/theory.md §4.4):
    σ̂² = mean_{i > K} s_i² / max(d_out, d_in). The edge is σ̂(√d_out + √d_in); ``spikes`` counts
    the singular values above it, to be read against K. Where min(d_out, d_in) ≤ K no bulk is
    left and the edge, σ̂ and the spike count are None."""
    W = W.detach().to(_F64)
    s = torch.linalg.svdvals(W)
    d_out, d_in = W.shape
    bulk = s[K:]
    out: dict[str, Any] = {"singular_values": to_jsonable(s), "K": int(K), "noise_scale": None,
                           "bulk_edge": None, "spikes": None,
                           "method": "σ̂² = mean of the squared singular values below the top "
                                     "K / max(d_out, d_in); edge σ̂(√d_out + √d_in)"}
    if bulk.numel() == 0:
        return out
    sigma = math.sqrt(float(bulk.square().mean()) / max(d_out, d_in))
    edge = sigma * (math.sqrt(d_out) + math.sqrt(d_in))
    out.update(noise_scale=sigma, bulk_edge=edge, spikes=int((s > edge).sum()))
    return out
