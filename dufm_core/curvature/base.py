"""One base for every curvature operator: a symmetric A ∈ R^{dim×dim} known by its products.

The Hessians of the engine are too large to form — the full weight Hessian of docs/theory.md
case A at width 256 has 263 k² entries — but every algorithm here needs only products A V with
a *block* V ∈ R^{dim×m} of vectors: block Krylov for the top eigenpairs, Lanczos for the
spectral density, Rayleigh quotients for the alignment f_cc'. So an operator is one abstract
method and everything else is derived from it:

    matmat(V)          = A V                 V (dim, m) → (dim, m)   (the only abstract method)
    A @ v, A @ V       = matvec / matmat     a vector (dim,) or a block (dim, m)
    dense()            = A [e_1 … e_dim]     identity columns in blocks; small dim only
    diagonal()         = (A_ii)_i            e_iᵀ A e_i, by the same blocks unless a closed form
    trace()            = Σ_i A_ii
    eigenvalues()      = λ_1 ≥ … ≥ λ_dim     eigvalsh of the symmetrised dense(), unless exact
    apply_matrices(M)  = mat(A vec_r M)      the matrix form on a stack of matrices (..., *shape)
                                             with row-major vec: for a layer operator on W_l
                                             (d_out × d_in) the stack is (m, d_out, d_in)

Vectors are flat **row-major** (vec_r W = ``W.reshape(-1)``, docs/theory.md "How to use this
document"), so for the linear-MSE layer block P ⊗ Q the matrix form is M ↦ P M Qᵀ.

Subclasses override the derived methods only where they know better (a closed form, an exact
spectrum); the tests check every override against the generic product path
(``dense_columns``: A applied to identity blocks).

Layering of ``dufm_core.curvature`` (no import cycles): this module (with :class:`DenseOperator`
and :func:`as_operator`) and ``params`` are at the bottom; ``operators`` (autograd Hessians),
``kronecker`` (closed forms of the linear UFM), ``network`` (a real network's Hessian) and
``gauss_newton`` (Papyan's split) derive operators from it; ``eigensolvers`` and ``density``
take any :class:`CurvatureOperator`; ``spectrum`` chooses the operator and the method.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["CurvatureOperator", "DenseOperator", "Operand", "as_operator", "single_thread"]

DEFAULT_MAX_DIM = 8192  # dense() refuses beyond this (dim² entries: 512 MiB in float64)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run small dense linear algebra (k×k eigh, Cholesky, inverses) on one thread.

    For matrices of a few hundred rows the thread pool's start-up and barriers cost more than
    the work, and on a busy 2-core machine an OpenMP barrier waiting for a descheduled thread
    makes a 1 ms ``eigh`` take 50 ms. The big n×k products stay multi-threaded.
    """
    prev = torch.get_num_threads()
    if prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class CurvatureOperator(abc.ABC):
    """A symmetric linear operator A: R^dim → R^dim given by block products (module docstring).

    Subclasses call ``super().__init__(dim, dtype, device)`` and implement :meth:`matmat`.
    ``matvecs`` counts operator–vector products for reports (subclasses that compute products
    increment it); ``chunk_size`` is how many identity columns :meth:`dense_columns` applies
    per product (an autograd operator sets it to its own vmap chunk).
    """

    chunk_size: int = 256

    def __init__(self, dim: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.dim = int(dim)
        self.dtype = dtype
        self.device = torch.device(device)
        self.matvecs = 0

    # ------------------------------------------------------------------ the product
    @abc.abstractmethod
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """A V for a block V of shape (dim, m); returns (dim, m) in the operator's dtype."""

    def _check_block(self, V: torch.Tensor) -> None:
        """ValueError unless V is a (dim, m) block."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(
                f"matmat expects shape ({self.dim}, m): V must have {self.dim} rows, "
                f"got {tuple(V.shape)}"
            )

    # ------------------------------------------------------------------ derived products
    @property
    def shape(self) -> tuple[int, int]:
        """(dim, dim)."""
        return (self.dim, self.dim)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """A v for one vector of length dim (the one-column block)."""
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        """``A @ v`` (a vector (dim,)) or ``A @ V`` (a block (dim, m))."""
        if V.ndim == 1:
            return self.matvec(V)
        if V.ndim == 2:
            return self.matmat(V)
        raise ValueError(f"A @ V needs a vector (dim,) or a block (dim, m), got {tuple(V.shape)}")

    def apply_matrices(self, M: torch.Tensor) -> torch.Tensor:
        """mat(A vec_r M) for each matrix of a stack M (..., *shape) with prod(shape) = dim,
        vec row-major; returns the same shape. For a layer operator the stack is
        (m, d_out, d_in): this is the "hvp on matrices" of the alignment measures."""
        flat = M.reshape(-1, self.dim).T.to(self.dtype)
        return self.matmat(flat).T.reshape(M.shape)

    # ------------------------------------------------------------------ small cases
    def _identity_blocks(self, chunk: int | None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """(a, b, E) with E = [e_a … e_{b−1}] (dim × (b − a)), covering 0..dim in blocks."""
        dim, dtype, device = self.dim, self.dtype, self.device
        step = chunk or max(1, min(dim, self.chunk_size, 512))
        for a in range(0, dim, step):
            b = min(dim, a + step)
            E = torch.zeros(dim, b - a, dtype=dtype, device=device)
            E[torch.arange(a, b, device=device), torch.arange(b - a, device=device)] = 1.0
            yield a, b, E

    def _refuse_dense(self, max_dim: int) -> None:
        if self.dim > max_dim:
            raise ValueError(
                f"refusing to build a dense {self.dim} × {self.dim} matrix (max_dim = {max_dim});"
                " use top_eigenpairs / slq_density, or the Kronecker factors for a linear-MSE "
                "layer"
            )

    def dense_columns(
        self, max_dim: int = DEFAULT_MAX_DIM, chunk: int | None = None
    ) -> torch.Tensor:
        """A = A [e_1 … e_dim], by products with blocks of ``chunk`` identity columns
        (default ``min(chunk_size, 512)``). The generic path, whatever :meth:`dense` does;
        refuses (ValueError) beyond ``max_dim``: a dense matrix has dim² entries."""
        self._refuse_dense(max_dim)
        out = torch.empty(self.dim, self.dim, dtype=self.dtype, device=self.device)
        for a, b, E in self._identity_blocks(chunk):
            out[:, a:b] = self.matmat(E)
        return out

    def dense(self, max_dim: int = DEFAULT_MAX_DIM, chunk: int | None = None) -> torch.Tensor:
        """The dim × dim matrix (by default :meth:`dense_columns`; subclasses with a closed
        form override this). Refuses beyond ``max_dim``."""
        return self.dense_columns(max_dim, chunk)

    def diagonal(self, chunk: int | None = None) -> torch.Tensor:
        """(A_ii)_i = e_iᵀ A e_i, shape (dim,). Generic path: dim products in blocks (memory
        dim × chunk, never dim²); subclasses with a closed form override it."""
        out = torch.empty(self.dim, dtype=self.dtype, device=self.device)
        for a, b, E in self._identity_blocks(chunk):
            out[a:b] = self.matmat(E)[a:b].diagonal()
        return out

    def trace(self) -> float:
        """tr A = Σ_i A_ii = Σ_i λ_i."""
        return float(self.diagonal().sum())

    def eigenvalues(self, max_dim: int = DEFAULT_MAX_DIM) -> torch.Tensor:
        """All dim eigenvalues, descending: ``eigvalsh`` of ½(A + Aᵀ) from :meth:`dense`
        (subclasses with an exact spectrum override it). Refuses beyond ``max_dim``."""
        M = self.dense(max_dim=max_dim)
        M = 0.5 * (M + M.T)
        return torch.linalg.eigvalsh(M).flip(0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, dtype={self.dtype})"


class DenseOperator(CurvatureOperator):
    """A dense symmetric matrix (torch tensor or numpy array) as an operator."""

    def __init__(self, A: torch.Tensor | np.ndarray, dtype: torch.dtype | None = None) -> None:
        A = torch.as_tensor(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"need a square matrix, got shape {tuple(A.shape)}")
        if dtype is not None:
            A = A.to(dtype)
        elif not A.is_floating_point():
            A = A.to(torch.float64)
        super().__init__(int(A.shape[0]), A.dtype, A.device)
        self.A = A

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """A V."""
        self._check_block(V)
        self.matvecs += V.shape[1]
        return self.A @ V.to(dtype=self.dtype, device=self.device)

    def apply_matrices(self, M: torch.Tensor) -> torch.Tensor:
        """Rows times A: (vec_r M)ᵀ A = (A vec_r M)ᵀ for the symmetric A this class holds (no
        transposed copies of the stack)."""
        return (M.reshape(-1, self.dim).to(self.dtype) @ self.A).reshape(M.shape)

    def dense(self, max_dim: int | None = None, chunk: int | None = None) -> torch.Tensor:
        """The matrix itself."""
        return self.A

    def diagonal(self, chunk: int | None = None) -> torch.Tensor:
        """The matrix's diagonal."""
        return self.A.diagonal()


Operand = CurvatureOperator | torch.Tensor | np.ndarray  # what the solvers accept


def as_operator(obj: Operand) -> CurvatureOperator:
    """A :class:`CurvatureOperator` as is; a square matrix wrapped in :class:`DenseOperator`."""
    if isinstance(obj, CurvatureOperator):
        return obj
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return DenseOperator(obj)
    raise TypeError(
        f"cannot use {type(obj).__name__} as an operator: subclass "
        "dufm_core.curvature.base.CurvatureOperator (implement matmat) or pass a matrix"
    )
