"""Top eigenpairs of symmetric operators by a block Krylov method, dense spectra, outlier counts.

Why a block method: at neural collapse the K² Hessian outliers are *exactly* degenerate
(docs/theory.md §4.1, §9). A single-vector Krylov or power method sees one vector of a degenerate
eigenspace per start vector; deflation and restarts then miss or blur the other members. A
block of b ≥ max(m, K²) vectors spans the whole cluster from the first step. Where the wanted
eigenvalues are simple (a trained network's top-k) the opposite holds: a small block (down to one
vector) builds a Krylov space of higher degree per product and needs about ARPACK's products
(docs/benchmarks.md §16), so ``block`` may be smaller than m there.

Algorithm (:func:`top_eigenpairs`): block Lanczos / block Krylov with full
reorthogonalisation, explicit Rayleigh–Ritz and thick restarts (Krylov–Schur style):

    V ← orth(random n×b);  store A V
    repeat:  T = Vᵀ A V (built from explicit projections);  T S = S Θ  (Ritz pairs, sorted)
             W ← A·(newest block) − V c, c = its column of T; a second Gram–Schmidt pass only
                 where the first cancelled (DGKS: ‖w‖ < ‖Aq‖/√2); W = Q B (Cholesky-QR, twice
                 when ill-conditioned; rows that carry no new direction are replaced by random
                 ones, so an exactly low-rank or invariant case keeps going)
             residual estimate ‖A y − θ y‖ = ‖B s_last‖ (A V = V T + Q B E_lastᵀ)
             once every wanted estimate is ≤ tol·max|θ|: Y = V S, A Y = (A V) S and the
                 residuals R = A Y − Y Θ are computed explicitly; stop if they pass too
             V ← [V, Q];  store A Q                  (restart to the best Ritz vectors when the
                                                      basis would exceed ``max_basis``)

Because A V is kept, the reported ``residual_norms`` are the explicit ‖A y − θ y‖ (up to the
rounding of (AV)s versus A(Vs)) and ``converged`` is never claimed on the recurrence alone.
Ritz values of a symmetric operator are accurate to ‖r‖²/gap, far better than the residual.
The cost per step is b operator products plus a few passes over the basis; on a 2-core CPU at
n ≈ 263k the passes over memory, not the flops, dominate (docs/benchmarks_hessian.md).

The solvers take any :class:`~dufm_core.curvature.base.CurvatureOperator` (or a dense matrix,
wrapped in :class:`~dufm_core.curvature.base.DenseOperator`): they use only ``matmat``,
``dim``, ``dtype`` and ``device`` (and :func:`full_spectrum` the operator's ``eigenvalues``).
Results are typed (:class:`EigResult`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dufm_core.curvature.base import CurvatureOperator, Operand, as_operator, single_thread

__all__ = [
    "EigResult",
    "count_outliers",
    "default_block",
    "full_spectrum",
    "top_eigenpairs",
]


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


SMALL_WORK = 1 << 21  # dim × basis size below which the solver runs single-threaded


def default_block(m: int) -> int:
    """Default block size for m wanted pairs: m plus a guard of max(2, ⌈m/4⌉) vectors, so the
    convergence rate is set by the gap to λ_{b+1} rather than λ_{m+1}."""
    return m + max(2, math.ceil(m / 4))


def _randn_rows(k: int, n: int, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """k Gaussian rows of length n, drawn on the CPU in float32 (4× faster than float64 draws;
    a start block needs no more precision), then converted to ``like``'s dtype and device."""
    return torch.randn(k, n, generator=gen, dtype=torch.float32).to(like)


def _qr_rows(
    Wt: torch.Tensor,
    out: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    one_pass_cond: float = 100.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR of a block stored as rows: W = Wtᵀ = Q B; returns (Qt = Qᵀ, B), B k×k upper.

    Cholesky-QR: with G = W Wᵀ scaled to unit diagonal (D G D = R₁ᵀR₁), Q₁ = R₁⁻ᵀ D W. Its
    loss of orthogonality is ≈ eps·cond(D G D), so a second pass (the same on Q₁, "CholQR2")
    runs only when that condition number exceeds ``one_pass_cond`` (then Q is orthonormal to
    eps). Each pass is one Gram GEMM and one k×k-by-k×n GEMM over the block — several times
    less memory traffic than a Householder QR of an n×k block. When cond(D G D) > 1e8 (nearly
    dependent rows) it falls back to Householder QR. B refers to the unscaled W.
    """
    G = Wt @ Wt.T if gram is None else gram
    with single_thread():
        d = G.diagonal().clamp_min(0.0).sqrt()
        dinv = torch.where(d > 0, 1.0 / d.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(d))
        Gs = dinv[:, None] * G * dinv[None, :]
        Gs = 0.5 * (Gs + Gs.T)
        ev = torch.linalg.eigvalsh(Gs)
        cond = float(ev[-1]) / max(float(ev[0]), 1e-300)
        R1, info = torch.linalg.cholesky_ex(Gs, upper=True)
        ill = int(info) != 0 or bool((d == 0).any()) or float(ev[0]) <= 1e-8 * float(ev[-1])
        if not ill:
            M1 = torch.linalg.inv(R1).T * dinv[None, :]
    if ill:
        Q, R = torch.linalg.qr((Wt * dinv[:, None]).T)
        Qt = Q.T
        if out is not None:
            out.copy_(Qt)
            Qt = out
        return Qt, R * d[None, :]
    if cond <= one_pass_cond:
        Qt = torch.mm(M1, Wt, out=out) if out is not None else M1 @ Wt
        return Qt, R1 * d[None, :]
    Q1 = M1 @ Wt
    G2 = Q1 @ Q1.T
    with single_thread():
        R2 = torch.linalg.cholesky(0.5 * (G2 + G2.T), upper=True)
        M2 = torch.linalg.inv(R2).T
        B = (R2 @ R1) * d[None, :]
    Qt = torch.mm(M2, Q1, out=out) if out is not None else M2 @ Q1
    return Qt, B


def _fill_dependent(
    Vt: torch.Tensor, Qt: torch.Tensor, bad: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Replace the rows ``bad`` of Qt (directions that carried no new information) by random
    unit vectors orthogonal to the rows of Vt and to the good rows of Qt (CGS2 + QR); in place
    when possible."""
    if not bool(bad.any()):
        return Qt
    basis = torch.cat([Vt, Qt[~bad]], dim=0)
    fresh = _randn_rows(int(bad.sum()), Qt.shape[1], gen, Qt)
    for _ in range(2):
        for _ in range(2):
            fresh = fresh - (fresh @ basis.T) @ basis
        fresh = torch.linalg.qr(fresh.T)[0].T
    Qt[bad] = fresh
    return Qt


def _order(theta: torch.Tensor, which: str) -> torch.Tensor:
    key = theta if which == "LA" else theta.abs()
    return torch.argsort(key, descending=True)


def _combine(S: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
    """Sᵀ [B_1; B_2; ...] for row blocks B_j stacked along the first axis (no concatenation)."""
    out = None
    r = 0
    for blk in blocks:
        k = blk.shape[0]
        if out is None:
            out = S[r : r + k].T @ blk
        else:
            out.addmm_(S[r : r + k].T, blk)
        r += k
    assert out is not None
    return out


class _Float64Basis(CurvatureOperator):
    """A lower-precision operator (float32 products: 4–6× faster for a network on the CPU)
    seen by the solver in float64: each block is cast down for the product and its image cast
    back, so the Krylov basis, its orthogonalisation and the Rayleigh–Ritz steps keep float64.
    Kept in float32, the basis loses orthogonality at ~1e-7 and the Ritz values stall near
    1e-4 relative on a network's Hessian (docs/benchmarks.md §15); in float64 they reach the
    products' own accuracy (~1e-6)."""

    def __init__(self, A: CurvatureOperator) -> None:
        super().__init__(A.dim, torch.float64, A.device)
        self.A = A
        self.chunk_size = A.chunk_size

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """A V in A's dtype, returned in float64."""
        self.matvecs += V.shape[1]
        return self.A.matmat(V.to(self.A.dtype)).to(torch.float64)


def top_eigenpairs(
    op: Operand,
    m: int,
    block: int | None = None,
    tol: float = 1e-10,
    max_iter: int = 300,
    which: str = "LA",
    max_basis: int | None = None,
    seed: int = 0,
    v0: torch.Tensor | None = None,
    need: int | None = None,
) -> EigResult:
    """The m largest eigenpairs of a symmetric operator (see the module docstring).

    Args:
        op: a :class:`~dufm_core.curvature.base.CurvatureOperator` (HessianOperator,
            LinearHessianOperator, KroneckerSpectrum, NetworkHessianOperator, DenseOperator,
            ...) or a dense matrix.
        m: number of wanted pairs.
        block: block size b (default :func:`default_block`, b > m); use b ≥ K² when the top of
            the spectrum is a K²-fold degenerate cluster. b < m is allowed when the wanted
            eigenvalues are known to be simple (a trained network's top-k, not the UFM's
            degenerate outliers): for the same products a small block builds a Krylov space of
            higher degree, so it needs fewer products (one vector: about as few as ARPACK's
            Lanczos, docs/benchmarks.md §16), at the cost of the block products' batching; an
            exactly degenerate eigenvalue is then found with multiplicity at most b.
        tol: relative residual tolerance, ‖A v − θ v‖ ≤ tol · max(|θ_max|, tiny).
        max_iter: maximum number of Rayleigh–Ritz steps (the first uses the start block only).
        which: "LA" largest algebraic (outliers of a Hessian) or "LM" largest modulus.
        max_basis: most basis vectors before a thick restart (default min(dim, max(8·b, 64))).
        seed: seed of the random start block (drawn on the CPU).
        v0: optional start vectors (dim, k), k ≤ b, placed first in the start block.
        need: stop once the leading ``need`` ≤ m pairs have converged (default m). The other
            m − need pairs are returned as they stand, with honest residuals and flags — e.g.
            K² outliers to 1e-10 plus a few bulk Ritz values, whose tight clusters would
            otherwise take hundreds of iterations.
    """
    A = as_operator(op)
    if A.dtype in (torch.float32, torch.float16, torch.bfloat16):
        A = _Float64Basis(A)  # products in A's dtype, the basis in float64
    n = int(A.dim)
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be LA | LM (got {which!r})")
    if not 1 <= m <= n:
        raise ValueError(f"m must be in 1..dim = {n} (got {m})")
    b = default_block(m) if block is None else int(block)
    if b < 1:
        raise ValueError(f"block must be at least 1 (got {b})")
    b = min(b, n)
    cap = min(n, max(int(max_basis) if max_basis else max(8 * b, 64), 2 * b, m + b))
    # Small problems run on one thread: there the thread pool costs more than it saves, and on
    # a busy machine its barriers make timings erratic (see single_thread).
    small = n * cap <= SMALL_WORK and A.device.type == "cpu"
    need = m if need is None else int(need)
    if not 1 <= need <= m:
        raise ValueError(f"need must be in 1..m = {m} (got {need})")
    with single_thread() if small else contextlib.nullcontext():
        return _block_krylov(A, n, m, b, cap, tol, max_iter, which, seed, v0, need)


def _block_krylov(
    A: CurvatureOperator,
    n: int,
    m: int,
    b: int,
    cap: int,
    tol: float,
    max_iter: int,
    which: str,
    seed: int,
    v0: torch.Tensor | None,
    need: int,
) -> EigResult:
    """The iteration of :func:`top_eigenpairs` (arguments already checked)."""
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    dtype, device = A.dtype, A.device
    like = torch.empty(0, dtype=dtype, device=device)
    tiny = torch.finfo(dtype).tiny
    eps = torch.finfo(dtype).eps

    # The basis V is stored as rows (Vt = Vᵀ) in one buffer: a new block fills fresh rows, so
    # memory is touched as it is used and every block operation is a plain GEMM; the live part
    # is Vt[:p]. The images A V are kept as the list of blocks the operator returned (no
    # copies), in the order of V's rows.
    Vt = torch.empty(cap, n, dtype=dtype, device=device)
    X = _randn_rows(b, n, gen, like)
    if v0 is not None:
        v0 = v0.reshape(n, -1).to(like)
        X[: min(b, v0.shape[1])] = v0[:, :b].T
    Qt, B0 = _qr_rows(X, out=Vt[:b])
    d0 = B0.diagonal().abs()
    _fill_dependent(Vt[:0], Qt, d0 < 1e-10 * d0.max(), gen)
    AQ = A.matmat(Vt[:b].T).T
    av_blocks = [AQ]
    matvecs = b
    p, last = b, (0, b)  # basis size; row range of the newest block
    T = Vt[:b] @ AQ.T
    wbuf: torch.Tensor | None = None
    it = 0
    while True:
        it += 1
        V = Vt[:p]
        T = 0.5 * (T + T.T)
        with single_thread():
            theta, S = torch.linalg.eigh(T)
            idx = _order(theta, which)
            theta, S = theta[idx], S[:, idx]
        scale = max(float(theta.abs().max()), tiny)
        k = min(p, max(b, m))
        # The next block: the part of A·(newest block) outside span V. First Gram–Schmidt pass
        # with the known coefficients c = T[:, newest]; a second pass only where the first one
        # cancelled (DGKS criterion ‖w‖ < ‖Aq‖/√2, with ‖Aq‖² = ‖c‖² + ‖w‖²). With W = Q B,
        # A V = V T + Q B E_lastᵀ, so the residual of the Ritz vector V s is ‖B s_last‖.
        a0, a1 = last
        c = T[:, a0:a1]
        if wbuf is None or wbuf.shape != AQ.shape:  # one work block, reused (no fresh pages)
            wbuf = torch.empty_like(AQ)
        Wt = wbuf
        Wt.copy_(AQ)
        Wt.addmm_(c.T, V, alpha=-1.0)
        G = Wt @ Wt.T
        w2 = G.diagonal()
        c2 = c.square().sum(dim=0)
        if bool((w2 < c2).any()):
            Wt.addmm_(Wt @ V.T, V, alpha=-1.0)
            G = Wt @ Wt.T
        aq = (c2 + w2).sqrt()  # ‖A q‖ of each newest direction (before projection)
        room = n - p
        if room > 0:
            kb = min(Wt.shape[0], room)
            dest = Vt[p : p + kb] if p + kb <= cap else None
            Qt, B = _qr_rows(Wt[:kb], out=dest, gram=G[:kb, :kb])
            est = (B @ S[a0 : a0 + kb, :k]).norm(dim=0)
        else:
            kb, dest = 0, None
            Qt, B = Wt[:0], Wt.new_zeros(0, 0)
            est = torch.zeros(k, dtype=dtype, device=device)
        enough = p >= m  # a small block (b < m) first grows the basis to m Ritz pairs
        if (enough and bool((est[:need] <= tol * scale).all())) or it >= max_iter or p >= n:
            # Explicit residuals of the returned vectors: A y = (AV) s up to rounding.
            Sm = S[:, :m]
            Yt = Sm.T @ V
            Rt = _combine(Sm, av_blocks)  # A Y, then A Y − Y Θ in place
            rn = Rt.addcmul_(theta[:m, None], Yt, value=-1.0).norm(dim=1)
            conv = rn <= tol * scale
            if (enough and bool(conv[:need].all())) or it >= max_iter or p >= n:
                break
        # A row of W much shorter than A q is mostly cancellation noise: two Gram–Schmidt passes
        # leave it orthogonal to V only to ~eps/ratio, so it gets one more pass (the noise is a
        # valid new direction once orthogonal). Rows that are numerically zero (an invariant
        # subspace was reached) are replaced by random directions.
        ratio = B.diagonal().abs() / aq[:kb].clamp_min(eps * scale)
        if bool((ratio < 1e-6).any()):
            Qt = torch.addmm(Qt, Qt @ V.T, V, alpha=-1.0)
            Qt, _ = _qr_rows(Qt, out=dest, one_pass_cond=1.0)
        _fill_dependent(V, Qt, ratio < 1e-14, gen)
        if dest is None:  # thick restart to the best Ritz vectors (Krylov–Schur style)
            # a wide block restarts rarely and keeps all it can; a small block (b < m) would
            # restart at every step that way, so it keeps half the basis (ARPACK-like)
            keep = max(m, cap - kb) if b >= m else max(m + 1, cap // 2)
            Sk = S[:, :keep]
            new_av = _combine(Sk, av_blocks)
            Vt[:keep] = Sk.T @ V
            av_blocks = [new_av]
            T = torch.diag(theta[:keep])
            p = keep
            Vt[p : p + kb] = Qt
        AQ = A.matmat(Vt[p : p + kb].T).T
        av_blocks.append(AQ)
        matvecs += kb
        CT = Vt[: p + kb] @ AQ.T  # [C; Qᵀ A Q] in one pass over the basis
        C = CT[:p]
        T = torch.cat([torch.cat([T, C], dim=1), CT.T], dim=0)
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


def full_spectrum(op: Operand, max_dim: int = 8192) -> torch.Tensor:
    """All eigenvalues (descending) of a symmetric operator or matrix.

    An operator gives its :meth:`~dufm_core.curvature.base.CurvatureOperator.eigenvalues`:
    exact where it has a closed form (KroneckerSpectrum), else ``eigvalsh`` of its symmetrised
    ``dense(max_dim)``; a matrix as given is symmetrised and ``eigvalsh``'d.
    """
    if isinstance(op, CurvatureOperator):
        return op.eigenvalues(max_dim=max_dim)
    M = torch.as_tensor(op)
    if not M.is_floating_point():
        M = M.to(torch.float64)
    if M.shape[0] > max_dim:
        raise ValueError(f"matrix of size {M.shape[0]} exceeds max_dim = {max_dim}")
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
    """Number of outliers at the top of a spectrum (docs/theory.md §6.1).

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
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())[::-1]
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
