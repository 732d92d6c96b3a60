"""Where each outlier of the full Hessian comes from: its share in each parameter block.

For a cluster of equal top eigenvalues with orthonormal eigenvectors V (dim × k) the
eigenprojector is Π = V Vᵀ, independent of the basis chosen inside the cluster. Restricted to
the rows of a parameter block b (W_l, or the features) its trace is ‖V_b‖_F², and

    share_b = ‖V_b‖_F² / k,    Σ_b share_b = ‖V‖_F² / k = 1.

So a share is the fraction of the cluster's eigenspace that lies in block b (docs/theory.md §6.6);
at the linear UFM's optimum the full Gauss–Newton eigenvectors stack the layer eigenvectors with
weights w_l ∝ √λ_{W_l}, so with a common λ every layer gets 1/L (docs/theory.md §4.5).

Inside a block the theory names directions: the layer's predicted outlier eigen-matrices
μ_c^{(l+1)} μ_{c'}^{(l)ᵀ}. Given an orthonormal basis Q_b of their span (``predicted``), the
record also holds, per block,

    predicted_b = ‖Q_bᵀ V_b‖_F² / k  ≤ share_b,

the part of the cluster's eigenspace that lies in the block *and* in the predicted directions
(again the trace of the eigenprojector, restricted this time to span Q_b: basis-free). At the
linear UFM's optimum predicted_b = share_b for every block: the outliers are made of the
predicted matrices and nothing else.

Clusters: consecutive eigenvalues (descending) belong together while
|λ_i − λ_{i+1}| ≤ rel_tol · max(|λ_i|, |λ_{i+1}|). A cluster that reaches the last computed
eigenvalue may continue beyond it; it is flagged ``complete: false`` (its share is then that of
the computed part only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["CLUSTER_REL_TOL", "attribution", "clusters"]

CLUSTER_REL_TOL = 1e-6  # relative gap below which two eigenvalues are "equal"


def clusters(values: torch.Tensor, rel_tol: float = CLUSTER_REL_TOL) -> list[tuple[int, int]]:
    """Index ranges [a, b) of clusters of equal values in a descending sequence."""
    v = [float(x) for x in values]
    out, a = [], 0
    for i in range(1, len(v) + 1):
        if i == len(v) or abs(v[i - 1] - v[i]) > rel_tol * max(abs(v[i - 1]), abs(v[i])):
            out.append((a, i))
            a = i
    return out


def attribution(values: torch.Tensor, vectors: torch.Tensor, sizes: Sequence[int],
                rel_tol: float = CLUSTER_REL_TOL, dim: int | None = None,
                usable: int | None = None,
                predicted: Sequence[torch.Tensor | None] | None = None) -> list[dict[str, Any]]:
    """One record per cluster of ``values`` (descending; columns of ``vectors`` orthonormal,
    rows laid out in blocks of ``sizes``): ``{"value", "multiplicity", "layers", "complete"}``.
    ``usable`` limits the clusters to the first ``usable`` values (e.g. the converged ones);
    ``dim`` is the operator's dimension (a cluster ending at the last value is complete only
    when every eigenvalue was computed). ``predicted``: per block an orthonormal basis (rows of
    the block × r) of the theory's directions, or None; the records then gain ``"predicted"``,
    per block the cluster's share inside those directions (None where there is no basis).

    Any coordinates that are an isometry per block serve as well: for the vectors y of a
    :class:`~dufm_core.curvature.range_space.RangeSpaceOperator` pass its ``sizes`` and, per
    block, Q_iᵀP (``compress_block``) instead of P: ‖(Qy)_i‖ = ‖y_i‖ and ‖Pᵀ(Qy)_i‖ =
    ‖(Q_iᵀP)ᵀy_i‖, so the shares are the same numbers."""
    sizes = [int(s) for s in sizes]
    if sum(sizes) != vectors.shape[0]:
        raise ValueError(f"block sizes sum to {sum(sizes)}, vectors have {vectors.shape[0]} rows")
    n = len(values) if usable is None else min(int(usable), len(values))
    V = vectors[:, :n].double()
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    if predicted is not None and len(predicted) != len(sizes):
        raise ValueError(f"{len(predicted)} predicted bases for {len(sizes)} blocks")
    out = []
    for a, b in clusters(values[:n], rel_tol):
        k = b - a
        block = V[:, a:b].contiguous()  # columns of the cluster, one GEMM-friendly block
        shares = [float((block[bounds[i]:bounds[i + 1]] ** 2).sum()) / k
                  for i in range(len(sizes))]
        complete = b < len(values) or (dim is not None and len(values) == dim)
        rec: dict[str, Any] = {"value": float(values[a:b].double().mean()), "multiplicity": k,
                               "layers": shares, "complete": bool(complete)}
        if predicted is not None:
            rec["predicted"] = [
                None if Q is None
                else float(((Q.double().T @ block[bounds[i]:bounds[i + 1]]) ** 2).sum()) / k
                for i, Q in enumerate(predicted)]
        out.append(rec)
    return out
