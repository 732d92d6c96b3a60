"""Exact layer Hessians of the linear MSE deep UFM as Kronecker products (theory.md §4.1, §9).

For the linear model the logits are Z = A^{(l+1)} W_l H_l with A^{(l+1)} = W_L ⋯ W_{l+1}
(K × d_{l+1}; the identity I_K for l = L), so the fit term (1/(2N))‖Z − Y‖² is quadratic in W_l and
its Hessian is exactly (no Gauss–Newton approximation):

    ∇²_{W_l} F · vec(M) = vec(P M Qᵀ),   P = A^{(l+1)ᵀ} A^{(l+1)}  (d_{l+1} × d_{l+1}),
                                          Q = H_l H_lᵀ / N          (d_l × d_l),

i.e. H = P ⊗ Q with row-major vec (P acts on the output index, Q on the input index). With
P = U diag(p) Uᵀ and Q = V diag(q) Vᵀ the eigenpairs are (p_i q_j, vec(u_i v_jᵀ)): the whole
spectrum of a d_{l+1}d_l × d_{l+1}d_l matrix costs two d×d eigendecompositions, O(d³), and the
d²×d² matrix is never formed. The total Hessian adds λ_{W_l} I, a shift of every eigenvalue.

At the closed-form optimum P and Q have rank K with equal non-zero eigenvalues, so the layer
Hessian has exactly K² equal outliers λ_{W_l}γ/(1−γ) and zeros elsewhere (theory.md §4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["KroneckerSpectrum", "layer_factors"]


def _check_linear(model: nn.Module) -> None:
    if getattr(model, "activation", "linear") != "linear":
        raise ValueError(
            "the Kronecker form P ⊗ Q is exact only for the linear model with MSE; use "
            "HessianOperator (and top_eigenpairs / dense) for ReLU or CE"
        )


def layer_factors(model: nn.Module, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, Q) of the layer-``layer`` fit Hessian (1-based) of a linear DeepUFM with MSE.

    P = A^{(l+1)ᵀ} A^{(l+1)} with A^{(l+1)} = W_L ⋯ W_{l+1} (identity for l = L), and
    Q = H_l H_lᵀ / N with H_l the input of W_l. Both symmetric, in the model's dtype.
    """
    _check_linear(model)
    weights = [w.detach() for w in model.weights]
    L = len(weights)
    if not 1 <= layer <= L:
        raise ValueError(f"layer must be in 1..{L} (layers are 1-based), got {layer}")
    K = weights[-1].shape[0]
    A = torch.eye(K, dtype=weights[0].dtype, device=weights[0].device)
    for j in range(L - 1, layer - 1, -1):  # A ← A W_j for j = L..l+1 (0-based index j)
        A = A @ weights[j]
    P = A.T @ A
    H = model.layer_features().post[layer - 1]
    Q = (H @ H.T) / H.shape[1]
    return 0.5 * (P + P.T), 0.5 * (Q + Q.T)


class KroneckerSpectrum:
    """The operator P ⊗ Q + shift·I (row-major vec) with its exact eigendecomposition.

    Satisfies the operator protocol of the eigensolvers (``dim``, ``dtype``, ``device``,
    ``shape``, ``matmat``), so it can be checked against, or substituted for, a
    :class:`~dufm_core.curvature.operators.HessianOperator` over ``"layer:l"``.
    """

    def __init__(
        self, P: torch.Tensor, Q: torch.Tensor, shift: float = 0.0, layer: int | None = None
    ) -> None:
        if P.ndim != 2 or P.shape[0] != P.shape[1] or Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
            raise ValueError("P and Q must be square matrices")
        self.P = 0.5 * (P + P.T)
        self.Q = 0.5 * (Q + Q.T)
        self.shift = float(shift)
        self.layer = layer
        self.d_out, self.d_in = int(P.shape[0]), int(Q.shape[0])
        self.dim = self.d_out * self.d_in
        self.dtype = P.dtype
        self.device = P.device
        self.shape = (self.dim, self.dim)
        self.p_values, self.p_vectors = torch.linalg.eigh(self.P)
        self.q_values, self.q_vectors = torch.linalg.eigh(self.Q)

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        layer: int,
        part: str = "fit",
        lam_w: Sequence[float] | None = None,
    ) -> KroneckerSpectrum:
        """Layer ``layer`` (1-based) of a linear MSE model; part "fit" or "total" (+λ_{W_l})."""
        if part not in ("fit", "total"):
            raise ValueError(f"part must be fit | total for the Kronecker form (got {part!r})")
        shift = 0.0
        if part == "total":
            if lam_w is None or len(lam_w) < layer:
                raise ValueError("part='total' needs lam_w with one λ_W per layer")
            shift = float(lam_w[layer - 1])
        P, Q = layer_factors(model, layer)
        return cls(P, Q, shift=shift, layer=layer)

    # ------------------------------------------------------------------ spectrum
    def _products(self) -> torch.Tensor:
        """All p_i q_j + shift as a (d_out, d_in) grid (index (i, j))."""
        return self.p_values[:, None] * self.q_values[None, :] + self.shift

    def values(self) -> torch.Tensor:
        """The full spectrum: all d_out·d_in eigenvalues, descending."""
        return torch.sort(self._products().reshape(-1), descending=True).values

    def top(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The m largest eigenvalues (descending) and unit eigen-matrices u_i v_jᵀ.

        Returns (values (m,), matrices (m, d_out, d_in)).

        vec_r of each matrix is an eigenvector of the operator. For a degenerate eigenvalue the
        choice within its eigenspace is arbitrary (compare subspaces, theory.md §9).
        """
        if not 1 <= m <= self.dim:
            raise ValueError(f"m must be in 1..{self.dim} (got {m})")
        vals, flat = torch.topk(self._products().reshape(-1), m)
        i, j = flat // self.d_in, flat % self.d_in
        U = self.p_vectors[:, i].T  # (m, d_out)
        Vq = self.q_vectors[:, j].T  # (m, d_in)
        return vals, U[:, :, None] * Vq[:, None, :]

    def eigen_matrix(self, i: int, j: int) -> torch.Tensor:
        """u_i v_jᵀ for eigenvalue p_i q_j (+shift), indices into the ascending eigh order."""
        return torch.outer(self.p_vectors[:, i], self.q_vectors[:, j])

    # ------------------------------------------------------------------ operator
    def apply(self, M: torch.Tensor) -> torch.Tensor:
        """P M Qᵀ + shift·M for matrices M of shape (..., d_out, d_in)."""
        return self.P @ M @ self.Q.T + self.shift * M

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """(P ⊗ Q + shift I) V for V of shape (dim, m), via P M Qᵀ on each column."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"matmat expects shape ({self.dim}, m), got {tuple(V.shape)}")
        m = V.shape[1]
        M = V.T.to(self.dtype).reshape(m, self.d_out, self.d_in)
        return self.apply(M).reshape(m, self.dim).T

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """(P ⊗ Q + shift I) v."""
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def dense(self, max_dim: int = 8192) -> torch.Tensor:
        """kron(P, Q) + shift I (row-major vec); refuses beyond ``max_dim``."""
        if self.dim > max_dim:
            raise ValueError(
                f"refusing to build a dense {self.dim} × {self.dim} matrix (max_dim = {max_dim})"
            )
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.kron(self.P, self.Q) + self.shift * eye

    def __repr__(self) -> str:
        return (
            f"KroneckerSpectrum(layer={self.layer}, d_out={self.d_out}, d_in={self.d_in}, "
            f"shift={self.shift})"
        )
