"""Top eigenpairs of symmetric operators by a block Krylov method, dense spectra, outlier counts.

Why a block method: at neural collapse the K² Hessian outliers are *exactly* degenerate
(theory.md §4.1, §9). A single-vector Krylov or power method sees one vector of a degenerate
eigenspace per start vector; deflation and restarts then miss or blur the other members. A
block of b ≥ max(m, K²) vectors spans the whole cluster from the first step.

Algorithm (:func:`top_eigenpairs`): block Krylov with full reorthogonalisation and explicit
Rayleigh–Ritz, expanded Davidson-style by the residuals of the current Ritz vectors:

    V ← orth(random n×b);  AV ← A V
    repeat:  T = Vᵀ A V  (kept incrementally);  T S = S Θ;  Y = V S;  R = (AV) S − Y Θ
             stop when ‖r_i‖ ≤ tol · max|θ| for the wanted i = 1..m
             W ← residuals of the unconverged wanted Ritz vectors (≤ b of them),
                 orthogonalised twice against V (classical Gram–Schmidt, CGS2) and QR'd;
                 columns that vanish (an invariant subspace was reached) are replaced by random
                 directions
             V ← [V, W];  AV ← [AV, A W]          (thick restart to the best Ritz vectors when
                                                   the basis would exceed ``max_basis``)

In exact arithmetic span{V, R} = span{V, A Y} is the next block Krylov space, so the method
converges at the block-Lanczos rate; keeping AV makes every residual explicit (AV S is A·Y up to
rounding), so ``residual_norms`` are the true ‖A y − θ y‖ and ``converged`` is never claimed on
the strength of a recurrence alone. Ritz values of a symmetric operator are accurate to
‖r‖²/gap, far better than the residual itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

__all__ = [
    "DenseOperator",
    "EigResult",
    "LinearOperatorLike",
    "as_operator",
    "count_outliers",
    "default_block",
    "full_spectrum",
    "top_eigenpairs",
]


class LinearOperatorLike(Protocol):
    """What the solvers need: a symmetric operator R^dim → R^dim applied to blocks."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor: ...


class DenseOperator:
    """A dense symmetric matrix (torch tensor or numpy array) as an operator."""

    def __init__(self, A: torch.Tensor | np.ndarray, dtype: torch.dtype | None = None) -> None:
        A = torch.as_tensor(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(A.shape)}")
        if dtype is not None:
            A = A.to(dtype)
        elif not A.is_floating_point():
            A = A.to(torch.float64)
        self.A = A
        self.dim = int(A.shape[0])
        self.dtype = A.dtype
        self.device = A.device
        self.shape = (self.dim, self.dim)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """A V."""
        return self.A @ V.to(dtype=self.dtype, device=self.device)

    def dense(self, max_dim: int | None = None) -> torch.Tensor:
        """The matrix itself."""
        return self.A


def as_operator(obj: Any) -> Any:
    """An object with ``matmat``/``dim``/``dtype``/``device`` is returned as is; a matrix is
    wrapped in :class:`DenseOperator`."""
    if hasattr(obj, "matmat") and hasattr(obj, "dim"):
        return obj
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return DenseOperator(obj)
    raise TypeError(f"cannot use {type(obj).__name__} as an operator (needs matmat and dim)")


@dataclass
class EigResult:
    """Eigenpairs from :func:`top_eigenpairs`.

    ``values`` (m,) in descending order of the requested criterion (algebraic for "LA", modulus
    for "LM"); ``vectors`` (dim, m) orthonormal columns; ``residual_norms`` (m,) the explicit
    ‖A v − θ v‖; ``converged`` (m,) bool, residual ≤ tol·max(|θ_max|, tiny); ``iterations``
    Rayleigh–Ritz steps; ``matvecs`` operator-vector products; ``seconds`` wall time.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residual_norms: torch.Tensor
    converged: torch.Tensor
    iterations: int
    matvecs: int
    seconds: float
    method: str
    tol: float = 0.0

    @property
    def all_converged(self) -> bool:
        """True when every requested pair met the tolerance."""
        return bool(self.converged.all())

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no vectors)."""
        return {
            "values": self.values.tolist(),
            "residual_norms": self.residual_norms.tolist(),
            "converged": self.converged.tolist(),
            "iterations": self.iterations,
            "matvecs": self.matvecs,
            "seconds": self.seconds,
            "method": self.method,
            "tol": self.tol,
        }


def default_block(m: int) -> int:
    """Default block size for m wanted pairs: m plus a guard of max(2, ⌈m/4⌉) vectors, so the
    convergence rate is set by the gap to λ_{b+1} rather than λ_{m+1}."""
    return m + max(2, math.ceil(m / 4))


def _randn_rows(k: int, n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """k Gaussian rows of length n, drawn on the CPU in float32 (4× faster than float64 draws;
    a start block needs no more precision), then converted to ``like``'s dtype and device."""
    return torch.randn(k, n, generator=gen, dtype=torch.float32).to(like)


def _qr_rows(Wt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of a block stored as rows: W = Wtᵀ = Q B, returns (Qt = Qᵀ, B) with B k×k upper.

    Rows are scaled to unit length, then Cholesky-QR is applied twice (two GEMMs and a k×k
    Cholesky each: several times faster than a Householder QR of an n×k block, and as accurate
    after the second pass); when the scaled Gram matrix is too ill-conditioned for that (nearly
    dependent rows) it falls back to Householder QR. B refers to the unscaled W.
    """
    norms = Wt.norm(dim=1)
    scale = norms.clamp_min(torch.finfo(Wt.dtype).tiny)
    Ws = Wt / scale[:, None]
    G = Ws @ Ws.T
    ev = torch.linalg.eigvalsh(G)
    R1, info = torch.linalg.cholesky_ex(G, upper=True)
    if int(info) != 0 or float(ev[0]) <= 1e-8 * float(ev[-1]) or bool((norms == 0).any()):
        Q, R = torch.linalg.qr(Ws.T)
        return Q.T.contiguous(), R * scale
    Qt = torch.linalg.inv(R1).T @ Ws
    R2 = torch.linalg.cholesky(Qt @ Qt.T, upper=True)
    Qt = torch.linalg.inv(R2).T @ Qt
    return Qt, (R2 @ R1) * scale


def _fill_dependent(
    Vt: torch.Tensor, Qt: torch.Tensor, bad: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Replace the rows ``bad`` of Qt (directions that carried no new information) by random
    unit vectors orthogonal to the rows of Vt and to the good rows of Qt (CGS2 + QR)."""
    if not bool(bad.any()):
        return Qt
    basis = torch.cat([Vt, Qt[~bad]], dim=0)
    fresh = _randn_rows(int(bad.sum()), Qt.shape[1], gen, Qt)
    for _ in range(2):
        for _ in range(2):
            fresh = fresh - (fresh @ basis.T) @ basis
        fresh = torch.linalg.qr(fresh.T)[0].T
    out = Qt.clone()
    out[bad] = fresh
    return out


def _order(theta: torch.Tensor, which: str) -> torch.Tensor:
    key = theta if which == "LA" else theta.abs()
    return torch.argsort(key, descending=True)


def top_eigenpairs(
    op: Any,
    m: int,
    block: int | None = None,
    tol: float = 1e-10,
    max_iter: int = 300,
    which: str = "LA",
    max_basis: int | None = None,
    seed: int = 0,
    v0: torch.Tensor | None = None,
) -> EigResult:
    """The m largest eigenpairs of a symmetric operator (see the module docstring).

    Args:
        op: anything with ``matmat``/``dim``/``dtype``/``device`` (HessianOperator,
            KroneckerSpectrum, DenseOperator) or a dense matrix.
        m: number of wanted pairs.
        block: block size b ≥ m (default :func:`default_block`); use b ≥ K² when the top of the
            spectrum is a K²-fold degenerate cluster.
        tol: relative residual tolerance, ‖A v − θ v‖ ≤ tol · max(|θ_max|, tiny).
        max_iter: maximum number of Rayleigh–Ritz steps (the first uses the start block only).
        which: "LA" largest algebraic (outliers of a Hessian) or "LM" largest modulus.
        max_basis: most basis vectors before a thick restart (default min(dim, max(8·b, 64))).
        seed: seed of the random start block (drawn on the CPU).
        v0: optional start vectors (dim, k), k ≤ b, placed first in the start block.
    """
    A = as_operator(op)
    n = int(A.dim)
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be LA | LM (got {which!r})")
    if not 1 <= m <= n:
        raise ValueError(f"m must be in 1..dim = {n} (got {m})")
    b = default_block(m) if block is None else int(block)
    if b < m:
        raise ValueError(f"block ({b}) must be at least m ({m}): a block method needs b ≥ m")
    b = min(b, n)
    cap = min(n, max(int(max_basis) if max_basis else max(8 * b, 64), 2 * b, m + b))
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    dtype, device = A.dtype, A.device
    like = torch.empty(0, dtype=dtype, device=device)
    tiny = torch.finfo(dtype).tiny
    eps = torch.finfo(dtype).eps

    # Basis V and its image AV stored as rows (Vt = Vᵀ): a new block fills fresh rows only, so
    # memory is touched as it is used, and every block operation is a plain GEMM. The live
    # part is [:p].
    Vt = torch.empty(cap, n, dtype=dtype, device=device)
    AVt = torch.empty(cap, n, dtype=dtype, device=device)
    X = _randn_rows(b, n, gen, like)
    if v0 is not None:
        v0 = v0.reshape(n, -1).to(like)
        X[: min(b, v0.shape[1])] = v0[:, :b].T
    Qt, B0 = _qr_rows(X)
    d0 = B0.diagonal().abs()
    Qt = _fill_dependent(Vt[:0], Qt, d0 < 1e-10 * d0.max(), gen)
    AQt = A.matmat(Qt.T).T
    matvecs = b
    Vt[:b], AVt[:b] = Qt, AQt
    p, last = b, (0, b)  # basis size; row range of the newest block
    T = Qt @ AQt.T
    it = 0
    while True:
        it += 1
        V, AV = Vt[:p], AVt[:p]
        T = 0.5 * (T + T.T)
        theta, S = torch.linalg.eigh(T)
        idx = _order(theta, which)
        theta, S = theta[idx], S[:, idx]
        scale = max(float(theta.abs().max()), tiny)
        k = min(p, max(b, m))
        # The next block: the part of A·(newest block) outside span V (CGS2; the first pass's
        # coefficients are T's columns of that block). With W = Q B, A V = V T + Q B E_lastᵀ,
        # so the residual of the Ritz vector V s is ‖B s_last‖ (s_last: its newest-block rows).
        a0, a1 = last
        Wt = AV[a0:a1] - T[:, a0:a1].T @ V
        Wt = Wt - (Wt @ V.T) @ V
        if p < n:
            Qt, B = _qr_rows(Wt)
            est = (B @ S[a0:a1, :k]).norm(dim=0)
        else:
            Qt, B = Wt[:0], Wt.new_zeros(0, 0)
            est = torch.zeros(k, dtype=dtype, device=device)
        if bool((est[:m] <= tol * scale).all()) or it >= max_iter or p >= n:
            # Explicit residuals of the returned vectors: A y = (AV) s up to rounding.
            Yt = S[:, :m].T @ V
            rn = (S[:, :m].T @ AV - theta[:m, None] * Yt).norm(dim=1)
            conv = rn <= tol * scale
            if bool(conv.all()) or it >= max_iter or p >= n:
                break
        # rows of W with no new direction (an invariant subspace was reached): random instead
        bdiag = B.diagonal().abs()
        colnorm = AV[a0:a1].norm(dim=1).clamp_min(eps * scale)
        room = n - p
        bad = bdiag < 1e-12 * colnorm[: bdiag.numel()]
        Qt = _fill_dependent(V, Qt[:room], bad[:room], gen)
        kb = Qt.shape[0]
        if p + kb > cap:  # thick restart to the best Ritz vectors (Krylov–Schur style)
            keep = max(m, cap - kb)
            Vt[:keep] = S[:, :keep].T @ V
            AVt[:keep] = S[:, :keep].T @ AV
            T = torch.diag(theta[:keep])
            p = keep
            V = Vt[:p]
        AQt = A.matmat(Qt.T).T
        matvecs += kb
        C = V @ AQt.T
        T = torch.cat([torch.cat([T, C], dim=1), torch.cat([C.T, Qt @ AQt.T], dim=1)], dim=0)
        Vt[p : p + kb], AVt[p : p + kb] = Qt, AQt
        last = (p, p + kb)
        p += kb
    return EigResult(
        values=theta[:m].clone(),
        vectors=Yt.T,
        residual_norms=rn,
        converged=conv,
        iterations=it,
        matvecs=matvecs,
        seconds=time.perf_counter() - t_start,
        method=f"block-krylov(b={b}, which={which})",
        tol=tol,
    )


def full_spectrum(op: Any, max_dim: int = 8192) -> torch.Tensor:
    """All eigenvalues (descending) of a symmetric operator or matrix by dense ``eigvalsh``.

    Uses the operator's own ``values()`` when it has an exact one (KroneckerSpectrum), else its
    ``dense(max_dim)`` (or a matrix as given); the dense matrix is symmetrised first.
    """
    if hasattr(op, "values") and callable(op.values):
        return op.values()
    if isinstance(op, (torch.Tensor, np.ndarray)):
        M = torch.as_tensor(op)
        if not M.is_floating_point():
            M = M.to(torch.float64)
        if M.shape[0] > max_dim:
            raise ValueError(f"matrix of size {M.shape[0]} exceeds max_dim = {max_dim}")
    elif hasattr(op, "dense"):
        M = op.dense(max_dim=max_dim)
    else:
        from dufm_core.curvature.operators import _dense_columns

        M = _dense_columns(op, int(op.dim), max_dim, None)
    M = 0.5 * (M + M.T)
    return torch.linalg.eigvalsh(M).flip(0)


def count_outliers(
    values: Any,
    rule: str = "gap",
    m: int | None = None,
    tau_rel: float = 0.05,
    kappa: float = 10.0,
    floor_rel: float = 1e-12,
) -> int:
    """Number of outliers at the top of a spectrum (theory.md §6.1).

    Args:
        values: eigenvalues in any order (sorted descending here).
        rule: "gap" (default, rule (ii)): the position of the largest log-gap
            log λ_k − log λ_{k+1} among the top m values; values below ``floor_rel``·λ_max
            (including zeros and negatives) are clipped to that floor, so an exactly
            low-rank spectrum gives its rank. Pass at least one bulk value beyond the outliers,
            and keep m modest (e.g. K² + K): deep in a bulk of exact zeros the clip makes every
            further gap 0, but a bulk with a few O(λ) values above many zeros would itself show
            a large gap.
            "relative" (rule (i)): the number of λ > tau_rel · λ_max.
            "mad" (rule (iii)): the number of λ > median + kappa·MAD over all given values
            (MAD = median |λ − median|, unscaled); a floor of floor_rel·|λ_max| keeps an
            exactly flat bulk from counting rounding noise.
        m: how many of the top values the gap rule looks at (default: all given).
    """
    v = np.sort(np.asarray(torch.as_tensor(values).detach().cpu(), dtype=np.float64).ravel())[
        ::-1
    ]
    if v.size == 0:
        return 0
    if rule == "relative":
        if v[0] <= 0:
            return 0
        return int(np.sum(v > tau_rel * v[0]))
    if rule == "mad":
        med = float(np.median(v))
        mad = float(np.median(np.abs(v - med)))
        thr = med + max(kappa * mad, floor_rel * abs(float(v[0])))
        return int(np.sum(v > thr))
    if rule != "gap":
        raise ValueError(f"rule must be gap | relative | mad (got {rule!r})")
    top = v[: (v.size if m is None else max(1, int(m)))]
    if top.size < 2 or top[0] <= 0:
        return 0 if top.size == 0 or top[0] <= 0 else 1
    clipped = np.maximum(top, floor_rel * top[0])
    gaps = np.log(clipped[:-1]) - np.log(clipped[1:])
    return int(np.argmax(gaps)) + 1
