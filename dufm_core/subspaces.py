"""Subspaces: orthonormal bases of a column span and the principal angles between two spans.

Model-free linear algebra shared by the alignment measures (:mod:`dufm_core.alignment`), the
weight structure (:mod:`dufm_core.weights`) and Papyan's Gauss–Newton split
(:mod:`dufm_core.curvature.gauss_newton`). Everything is computed in float64.

For A (n × p) and B (n × q) with orthonormal columns, p ≤ q, the principal angles
0 ≤ θ_1 ≤ … ≤ θ_p ≤ π/2 between span(A) and span(B) have

    cos θ_i = σ_i(BᵀA)   (descending),      sin θ_i = σ_{p+1−i}((I − BBᵀ)A),

and each angle is taken from whichever of the two is accurate (Björck & Golub 1973): the sines
for small angles, the cosines for large ones.
"""

from __future__ import annotations

import torch

__all__ = ["orthonormal_basis", "subspace_angles"]

Tensor = torch.Tensor
_F64 = torch.float64


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
