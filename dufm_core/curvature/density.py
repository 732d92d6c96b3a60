"""Spectral density of a symmetric operator by stochastic Lanczos quadrature (SLQ).

For a symmetric A ∈ R^{n×n} with eigenpairs (λ_i, u_i) the spectral density is
φ(t) = (1/n) Σ_i δ(t − λ_i). For a probe v with i.i.d. Rademacher entries scaled to ‖v‖ = 1,
E[(vᵀu_i)²] = 1/n, so φ(t) = E[Σ_i (vᵀu_i)² δ(t − λ_i)]. Running k Lanczos steps from v gives
a tridiagonal T_k = Σ_j θ_j s_j s_jᵀ; the Gauss quadrature nodes θ_j with weights τ_j = (s_j)_1²
(Σ_j τ_j = 1) integrate every polynomial of degree ≤ 2k−1 exactly against that measure
(Golub–Meurant; Lin, Saad & Yang 2016; Ghorbani et al. 2019). Averaging over P probes and
replacing each δ by a Gaussian of width σ:

    φ_σ(t) = (1/P) Σ_p Σ_j τ_pj · N(t; θ_pj, σ²),   ∫ φ_σ = 1.

The Lanczos recurrence runs on all probes at once (one ``matmat`` per step for the whole block
of probes) with full reorthogonalisation of each probe's basis, and stops a probe early when its
β_j vanishes (an invariant subspace: its quadrature is then exact). Probes are processed in groups
that fit a memory budget for the stored bases.

For log-binned histograms (the dashboard's) :func:`slq_log_density` gives the density of
y = log10|λ| from the same nodes and weights: Σ τ_pj N(y; log10 max(|θ_pj|, floor), σ_y²)/P.

Like the eigensolvers, these functions take any
:class:`~dufm_core.curvature.base.CurvatureOperator` (or a dense matrix) and use only its
``matmat``; the result is typed (:class:`SpectralDensity`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from dufm_core.curvature.base import CurvatureOperator, Operand, as_operator, single_thread

__all__ = ["SpectralDensity", "lanczos_quadrature", "slq_density", "slq_log_density"]

DEFAULT_MEMORY_BYTES = 512 << 20  # stored Lanczos bases of one probe group


@dataclass
class SpectralDensity:
    """A smoothed spectral density on a grid, with the quadrature it was built from.

    ``grid``/``density`` (numpy float64) are t and φ_σ(t) (or y = log10|λ| and the density of
    y when ``log`` is True); ``nodes``/``weights`` (probes × steps, zero-padded: weights 0) are
    the Gauss nodes θ_pj and weights τ_pj; ``sigma`` the Gaussian width on the grid's axis.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    log: bool = False
    floor: float = 0.0

    def integral(self) -> float:
        """∫ density over the grid (trapezoid rule); ≈ 1 when the grid covers the support."""
        return float(np.trapezoid(self.density, self.grid))

    def mass(self, lo: float, hi: float) -> float:
        """Quadrature mass of the eigenvalues in [lo, hi] (unsmoothed): the SLQ estimate of
        #{λ_i ∈ [lo, hi]}/n. On the log axis lo/hi are log10|λ| values."""
        x = self._axis_nodes()
        sel = (x >= lo) & (x <= hi)
        return float((self.weights * sel).sum() / self.weights.shape[0])

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Quadrature mass per bin for bin ``edges`` (on the grid's axis); sums to ≤ 1."""
        x = self._axis_nodes().ravel()
        h, _ = np.histogram(x, bins=edges, weights=self.weights.ravel())
        return h / self.weights.shape[0]

    def _axis_nodes(self) -> np.ndarray:
        if not self.log:
            return self.nodes
        return np.log10(np.maximum(np.abs(self.nodes), self.floor))


def lanczos_quadrature(
    op: Operand,
    steps: int = 80,
    probes: int = 8,
    seed: int = 0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    null_dim: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature nodes and weights of P Rademacher probes, each (P, steps).

    Lanczos with full reorthogonalisation; a probe whose β_j falls below 1e-12·‖T‖ stops
    there (its remaining entries have weight 0). ``steps`` is capped at the dimension.

    ``null_dim`` > 0: ``op`` stands for an operator of dimension n' = dim + null_dim whose other
    null_dim eigenvalues are exact zeros (a :class:`~dufm_core.curvature.range_space.
    RangeSpaceOperator`). Its density is (dim/n') φ_op + (null_dim/n') δ_0, so every probe's
    weights are scaled by dim/n' and one more node 0 of weight null_dim/n' is appended (one
    more column): unbiased for the ambient density, with the zeros' mass exact.
    """
    A = as_operator(op)
    n = int(A.dim)
    k = max(1, min(int(steps), n))
    gen = torch.Generator().manual_seed(seed)
    itemsize = torch.empty(0, dtype=A.dtype).element_size()
    group = max(1, min(probes, memory_bytes // max(1, (k + 1) * n * itemsize)))
    nodes = np.zeros((probes, k))
    weights = np.zeros((probes, k))
    small = n * k * min(group, probes) <= (1 << 22) and A.device.type == "cpu"
    with single_thread() if small else contextlib.nullcontext():
        _lanczos_groups(A, n, k, probes, group, gen, nodes, weights)
    if null_dim > 0:
        share = n / (n + int(null_dim))
        nodes = np.hstack([nodes, np.zeros((probes, 1))])
        weights = np.hstack([weights * share, np.full((probes, 1), 1.0 - share)])
    return nodes, weights


def _lanczos_groups(
    A: CurvatureOperator,
    n: int,
    k: int,
    probes: int,
    group: int,
    gen: torch.Generator,
    nodes: np.ndarray,
    weights: np.ndarray,
) -> None:
    """Fill ``nodes``/``weights`` (probes × k) group by group (see lanczos_quadrature)."""
    done = 0
    while done < probes:
        g = min(group, probes - done)
        signs = torch.randint(0, 2, (g, n), generator=gen, dtype=torch.int8)
        v = (signs.to(torch.float64) * 2.0 - 1.0).to(dtype=A.dtype, device=A.device)
        v = v / math.sqrt(n)
        # uninitialised: row j+1 is written before it is read, and a probe that stops early
        # (an invariant subspace, common for low-rank Hessians) never touches the rest, so
        # the k·g·n buffer costs no zero-fill and no page faults beyond the steps run
        basis = torch.empty(k, g, n, dtype=A.dtype, device=A.device)
        alpha = torch.zeros(g, k, dtype=torch.float64)
        beta = torch.zeros(g, k, dtype=torch.float64)
        length = torch.full((g,), k, dtype=torch.long)
        active = torch.ones(g, dtype=torch.bool)
        basis[0] = v
        for j in range(k):
            w = A.matmat(basis[j].T).T  # (g, n)
            a = (w * basis[j]).sum(dim=1)
            alpha[:, j] = a.double().cpu()
            # full reorthogonalisation against this probe's basis (twice: CGS2)
            for _ in range(2):
                coef = torch.einsum("jgn,gn->gj", basis[: j + 1], w)
                w = w - torch.einsum("gj,jgn->gn", coef, basis[: j + 1])
            b = w.norm(dim=1)
            if j + 1 < k:
                tnorm = alpha[:, : j + 1].abs().amax(dim=1)
                if j > 0:
                    tnorm = tnorm + beta[:, :j].abs().amax(dim=1)
                stop = active & (b.double().cpu() <= 1e-12 * tnorm.clamp_min(1e-300))
                length[stop] = j + 1
                active &= ~stop
                beta[:, j] = torch.where(active, b.double().cpu(), torch.zeros_like(beta[:, j]))
                scale = torch.where(active.to(w.device), b, torch.ones_like(b)).clamp_min(1e-300)
                nxt = w / scale[:, None]
                nxt[~active.to(w.device)] = 0.0
                basis[j + 1] = nxt
            if not bool(active.any()):
                break
        for i in range(g):
            m = int(length[i])
            T = torch.diag(alpha[i, :m])
            if m > 1:
                off = beta[i, : m - 1]
                T = T + torch.diag(off, 1) + torch.diag(off, -1)
            with single_thread():
                theta, S = torch.linalg.eigh(T)
            nodes[done + i, :m] = theta.numpy()
            weights[done + i, :m] = (S[0] ** 2).numpy()
        done += g


def _gauss_mix(grid: np.ndarray, x: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """Σ w_i N(grid; x_i, σ²) evaluated in chunks (bounded memory)."""
    out = np.zeros_like(grid)
    x, w = x.ravel(), w.ravel()
    keep = w > 0
    x, w = x[keep], w[keep]
    c = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    for a in range(0, x.size, 256):
        d = (grid[:, None] - x[None, a : a + 256]) / sigma
        out += (np.exp(-0.5 * d * d) * w[None, a : a + 256]).sum(axis=1) * c
    return out


def slq_density(
    op: Operand,
    steps: int = 80,
    probes: int = 8,
    grid_points: int = 1001,
    sigma: float | None = None,
    sigma_rel: float = 0.01,
    grid: np.ndarray | None = None,
    seed: int = 0,
    null_dim: int = 0,
) -> SpectralDensity:
    """SLQ spectral density φ_σ(t) (module docstring), seeded.

    σ defaults to ``sigma_rel`` × (spread of the nodes); the grid defaults to the node range
    widened by 6σ on each side, so ∫ φ_σ ≈ 1 on it. ``null_dim``: see
    :func:`lanczos_quadrature`.
    """
    nodes, weights = lanczos_quadrature(op, steps=steps, probes=probes, seed=seed,
                                        null_dim=null_dim)
    used = nodes[weights > 0]
    lo, hi = float(used.min()), float(used.max())
    spread = max(hi - lo, abs(hi), abs(lo), 1e-300)
    s = float(sigma) if sigma is not None else sigma_rel * spread
    if grid is None:
        grid = np.linspace(lo - 6 * s, hi + 6 * s, grid_points)
    dens = _gauss_mix(np.asarray(grid, dtype=np.float64), nodes, weights, s) / nodes.shape[0]
    return SpectralDensity(np.asarray(grid, dtype=np.float64), dens, nodes, weights, s)


def slq_log_density(
    op: Operand,
    steps: int = 80,
    probes: int = 8,
    grid_points: int = 1001,
    sigma: float = 0.05,
    floor: float | None = None,
    floor_rel: float = 1e-12,
    seed: int = 0,
    null_dim: int = 0,
) -> SpectralDensity:
    """SLQ density of y = log10|λ| (for log-binned histograms), seeded.

    Nodes with |θ| below ``floor`` (default ``floor_rel`` × max|θ|) are placed at log10(floor),
    so exact zeros of a low-rank Hessian show as a peak at the floor. σ is in decades.
    ``null_dim``: see :func:`lanczos_quadrature`.
    """
    nodes, weights = lanczos_quadrature(op, steps=steps, probes=probes, seed=seed,
                                        null_dim=null_dim)
    used = np.abs(nodes[weights > 0])
    fl = float(floor) if floor is not None else floor_rel * max(float(used.max()), 1e-300)
    y = np.log10(np.maximum(np.abs(nodes), fl))
    ylo, yhi = float(y[weights > 0].min()), float(y[weights > 0].max())
    grid = np.linspace(ylo - 6 * sigma, yhi + 6 * sigma, grid_points)
    dens = _gauss_mix(grid, y, weights, sigma) / nodes.shape[0]
    return SpectralDensity(grid, dens, nodes, weights, sigma, log=True, floor=fl)
