"""The linear UFM's full Hessian restricted to a small subspace that holds its whole range.

Why: the full weight Hessian of docs/theory.md case A at width 256 acts on 262 912 weights, and a
block eigensolver over vectors that long spends most of its time streaming its basis through
memory (docs/benchmarks.md §13.2), not in the closed-form products. Yet the products show that
the Hessian's range is tiny. With the factors X_0 = H_1, X_f = W_f and the notation of
:class:`~dufm_core.curvature.kronecker.LinearHessianOperator`, every block of a product is

    (H V)_f = U_f A_f + B_f S_f,      U_f (r_f × K),  S_f = Γ P_fᵀ (K × c_f),

for some A_f (K × c_f) and B_f (r_f × K), whatever V is, and for the fit, Gauss–Newton and
residual parts alike (MSE or CE). So range(H) ⊆ S = ⊕_f S_f with

    S_f = { Q_a X + Q_p Y B_sᵀ :  X ∈ R^{a × c_f},  Y ∈ R^{(r_f − a) × s} },

where [Q_a Q_p] is a complete orthonormal basis of R^{r_f} whose first a = min(K, r_f) columns
span col(U_f) (Householder QR of U_f: U_f = Q_a R even when U_f is rank-deficient, so the span
is a superset of col(U_f), never a subset), and B_s (c_f × s, s = min(K, c_f)) an orthonormal
basis of a superset of row(S_f). Because ‖Q_a X + Q_p Y B_sᵀ‖_F² = ‖X‖² + ‖Y‖², the map
Q: (X_f, Y_f)_f ↦ (V_f)_f is an isometry, and since H is symmetric with range(H) ⊆ S, also
H (I − QQᵀ) = 0. Hence

* the eigenpairs of H with λ ≠ 0 are those of the small symmetric C = Qᵀ H Q (vectors Q y);
* H has dim − dim S further exact zeros (the complement S^⊥ = ⊕ Q_p ⊗ B_s^⊥);
* tr H = tr C, and H + diag(λ) with a regulariser constant on each block (λ_{W_l}) is
  C + diag(λ) on S and λ_f on the complement's share of block f.

dim S_f = a·c_f + (r_f − a)·s ≤ K(r_f + c_f): at width 256, K = 3 the 65 536 weights of a hidden
layer become 1 527 coordinates, and case A's 262 912 become 6 876 (38× fewer).

The products never build V: C x needs only the thin products of
:meth:`~dufm_core.curvature.kronecker.LinearHessianOperator.thin_inputs`, and in coordinates

    U_fᵀ V_f = (U_fᵀ Q_a) X_f                       (U_fᵀ Q_p = 0)
    S_f V_fᵀ = [S_f X_fᵀ, (S_f B_s) Y_fᵀ] [Q_a Q_p]ᵀ
    V_fᵀ U_f = X_fᵀ (Q_aᵀ U_f)

then the same :meth:`~dufm_core.curvature.kronecker.LinearHessianOperator.factor_terms`, and the
output's coordinates

    X'_f = (Q_aᵀ U_f) A_f + (Q_aᵀ B_f) S_f,     Y'_f = (Q_pᵀ B_f)(S_f B_s)      (Q_pᵀ U_f = 0).

Each costs O(K d²) per layer pair instead of the O(d²) per block of memory traffic of a full
vector, and the eigensolver's basis work shrinks by dim/dim S. The tests compare C with Qᵀ H Q
from the full operator, and H (I − QQᵀ) with 0, on the dense float64 Hessian of small models.
"""

from __future__ import annotations

import torch

from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.kronecker import LinearHessianOperator

__all__ = ["RangeSpaceOperator", "range_space"]

WORTH_IT = 0.5  # use the range space only when it has at most this fraction of the dimension


class RangeSpaceOperator(CurvatureOperator):
    """C = Qᵀ H Q for a :class:`LinearHessianOperator` H (part fit, gn or residual) on the
    coordinates of the subspace S ⊇ range(H) of the module docstring.

    ``dim`` is dim S; ``ambient_dim`` is H's dimension, and ``null_dim`` = ambient − dim the
    number of exact zero eigenvalues of H outside S. :meth:`expand` maps coordinates to H's
    flat vectors (Q y), :meth:`compress` back (Qᵀ v); :meth:`block_null_dims` is each
    parameter block's share of the complement (for a per-block regulariser's eigenvalues).
    """

    def __init__(self, op: LinearHessianOperator) -> None:
        if op.part == "total":
            raise ValueError("RangeSpaceOperator takes part fit | gn | residual; add the "
                             "regulariser on the coordinates (diagonal_in_range)")
        self.op = op
        self.blocks: list[dict[str, torch.Tensor | int]] = []
        sizes = []
        for name, shape in zip(op.pset.names, op.pset.shapes, strict=True):
            f = op.factor_of[name]
            r, c = int(shape[0]), int(shape[1])
            U, S = op.U[f], op.S[f]  # (r, K), (K, c)
            Qr = torch.linalg.qr(U, mode="complete").Q  # (r, r)
            a = min(U.shape[1], r)
            Bs = torch.linalg.qr(S.T, mode="reduced").Q  # (c, min(K, c))
            s = Bs.shape[1]
            self.blocks.append({
                "f": f, "r": r, "c": c, "a": a, "s": s, "Qr": Qr, "Bs": Bs,
                "UQa": U.T @ Qr[:, :a],  # (K, a)
                "SB": S @ Bs,  # (K, s)
                "size": a * c + (r - a) * s,
            })
            sizes.append(a * c + (r - a) * s)
        self.sizes = sizes
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        super().__init__(self.offsets[-1], op.dtype, op.device)
        self.ambient_dim = op.dim
        self.null_dim = op.dim - self.dim
        self.chunk_size = op.chunk_size

    # ------------------------------------------------------------------ coordinates
    def _split(self, Xc: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Rows (b, dim) → per block (X (b, a, c), Y (b, r − a, s))."""
        b = Xc.shape[0]
        out = []
        for blk, o0 in zip(self.blocks, self.offsets, strict=False):
            a, c, r, s = blk["a"], blk["c"], blk["r"], blk["s"]
            X = Xc[:, o0 : o0 + a * c].reshape(b, a, c)
            Y = Xc[:, o0 + a * c : o0 + blk["size"]].reshape(b, r - a, s)
            out.append((X, Y))
        return out

    def expand(self, coords: torch.Tensor) -> torch.Tensor:
        """Q y: coordinates (dim, m) → H's flat vectors (ambient_dim, m), row-major per block."""
        Xc = coords.to(dtype=self.dtype, device=self.device).reshape(self.dim, -1).T
        b = Xc.shape[0]
        rows = torch.empty(b, self.ambient_dim, dtype=self.dtype, device=self.device)
        off = self.op.pset.offsets
        for i, (blk, (X, Y)) in enumerate(zip(self.blocks, self._split(Xc), strict=True)):
            a = blk["a"]
            Qr = blk["Qr"]
            V = Qr[:, :a] @ X
            if Y.shape[1]:  # (Q_p Y) B_sᵀ: two thin products, never r × r × c
                V = V + (Qr[:, a:] @ Y) @ blk["Bs"].T
            rows[:, off[i] : off[i + 1]] = V.reshape(b, -1)
        return rows.T

    def compress(self, vectors: torch.Tensor) -> torch.Tensor:
        """Qᵀ v: H's flat vectors (ambient_dim, m) → coordinates (dim, m) (the orthogonal
        projection onto S, in coordinates)."""
        V = vectors.to(dtype=self.dtype, device=self.device).reshape(self.ambient_dim, -1)
        off = self.op.pset.offsets
        return torch.cat([self.compress_block(i, V[off[i] : off[i + 1]])
                          for i in range(len(self.blocks))], dim=0)

    def compress_block(self, i: int, M: torch.Tensor) -> torch.Tensor:
        """Q_iᵀ M for the rows of parameter block i (n_i × m, row-major vec of its matrices):
        the block's coordinates (sizes[i] × m). With Q block-diagonal, (Qy)_i = Q_i y_i, so
        e.g. ‖Pᵀ(Qy)_i‖ = ‖(Q_iᵀP)ᵀ y_i‖ for any basis P of the block's space."""
        blk = self.blocks[i]
        a, r, c = blk["a"], blk["r"], blk["c"]
        V = M.to(dtype=self.dtype, device=self.device).T.reshape(-1, r, c)
        Qr = blk["Qr"]
        X = (Qr[:, :a].T @ V).reshape(V.shape[0], -1)
        Y = (Qr[:, a:].T @ (V @ blk["Bs"])).reshape(V.shape[0], -1)
        return torch.cat([X, Y], dim=1).T

    def block_null_dims(self) -> list[int]:
        """Per parameter block, how many of H's exact zero directions (outside S) it holds."""
        return [int(n) - s for n, s in zip(self.op.pset.sizes, self.sizes, strict=True)]

    def diagonal_in_range(self, diag: torch.Tensor) -> torch.Tensor:
        """A per-block constant diagonal of H's space (e.g. ``regulariser_diagonal``) in the
        coordinates of S: it commutes with Q because S is a direct sum of per-block subspaces.
        Raises ValueError when the diagonal is not constant on a block."""
        out = torch.empty(self.dim, dtype=self.dtype, device=self.device)
        off = self.op.pset.offsets
        for i in range(len(self.blocks)):
            d = diag[off[i] : off[i + 1]]
            if d.numel() and not bool((d == d[0]).all()):
                raise ValueError(f"the diagonal is not constant on block {self.op.pset.names[i]}")
            out[self.offsets[i] : self.offsets[i + 1]] = d[0] if d.numel() else 0.0
        return out

    # ------------------------------------------------------------------ the product
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """C V = Qᵀ H Q V for coordinates V (dim, m), without forming Q V (module docstring)."""
        self._check_block(V)
        Xc = V.to(dtype=self.dtype, device=self.device).T
        b = Xc.shape[0]
        self.matvecs += b
        op = self.op
        gn, res = op.wants()
        parts = self._split(Xc)
        ut: dict[int, torch.Tensor] | None = {} if gn else None
        sv: dict[int, torch.Tensor] | None = {} if res else None
        vu: dict[int, torch.Tensor] | None = {} if res else None
        for blk, (X, Y) in zip(self.blocks, parts, strict=True):
            f = blk["f"]
            if ut is not None:
                ut[f] = blk["UQa"] @ X  # (b, K, c)
            if sv is not None and vu is not None:
                S = op.S[f]
                left = torch.cat([S @ X.transpose(1, 2), blk["SB"] @ Y.transpose(1, 2)], dim=2)
                sv[f] = left @ blk["Qr"].T  # (b, K, r)
                vu[f] = X.transpose(1, 2) @ blk["UQa"].T  # (b, c, K)
        terms = op.factor_terms(ut, sv, vu)
        out = torch.empty(b, self.dim, dtype=self.dtype, device=self.device)
        for blk, o0 in zip(self.blocks, self.offsets, strict=False):
            f, a, c, r, s = blk["f"], blk["a"], blk["c"], blk["r"], blk["s"]
            A_f, B_f = terms[f]
            Xo = out[:, o0 : o0 + a * c].view(b, a, c)
            Yo = out[:, o0 + a * c : o0 + blk["size"]].view(b, r - a, s)
            if A_f is not None:
                Xo.copy_(blk["UQa"].T @ A_f)
            else:
                Xo.zero_()
            if B_f is not None:
                QB = blk["Qr"].T @ B_f  # (b, r, K)
                Xo.add_(QB[:, :a] @ op.S[f])
                Yo.copy_(QB[:, a:] @ blk["SB"])
            else:
                Yo.zero_()
        return out.T

    def __repr__(self) -> str:
        return (f"RangeSpaceOperator(dim={self.dim} of {self.ambient_dim}, "
                f"{self.op!r})")


def range_space(op: CurvatureOperator, worth_it: float = WORTH_IT) -> RangeSpaceOperator | None:
    """The range-space operator of ``op`` when it is a :class:`LinearHessianOperator` of part
    fit, gn or residual and S has at most ``worth_it`` of its dimension; else None (use ``op``
    itself: an autograd operator, or a small model where S is most of the space)."""
    if not isinstance(op, LinearHessianOperator) or op.part == "total":
        return None
    rs = RangeSpaceOperator(op)
    return rs if rs.dim <= worth_it * op.dim else None
