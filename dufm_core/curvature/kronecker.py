"""Exact layer Hessians of the linear MSE deep UFM as Kronecker products (docs/theory.md §4.1, §9).

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
Hessian has exactly K² equal outliers λ_{W_l}γ/(1−γ) and zeros elsewhere (docs/theory.md §4.1).

Both classes here are :class:`~dufm_core.curvature.base.CurvatureOperator` s:
:class:`KroneckerSpectrum` (one layer block P ⊗ Q, with its exact eigendecomposition, dense
matrix, diagonal and matrix form M ↦ P M Qᵀ) and :class:`LinearHessianOperator` (closed-form
products over any parameter subset of the linear model, any part, MSE or CE).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dufm_core.curvature.base import DEFAULT_MAX_DIM, CurvatureOperator, single_thread
from dufm_core.curvature.operators import LOSSES, PARTS, regulariser_diagonal
from dufm_core.curvature.params import ParamSet, param_set
from dufm_core.propagation import downstream_product

__all__ = ["KroneckerSpectrum", "LinearHessianOperator", "layer_factors"]


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
    L = len(model.weights)
    if not 1 <= layer <= L:
        raise ValueError(f"layer must be in 1..{L} (layers are 1-based), got {layer}")
    A = downstream_product(model, layer)
    P = A.T @ A
    H = model.layer_features().post[layer - 1]
    Q = (H @ H.T) / H.shape[1]
    return 0.5 * (P + P.T), 0.5 * (Q + Q.T)


class KroneckerSpectrum(CurvatureOperator):
    """The operator P ⊗ Q + shift·I (row-major vec) with its exact eigendecomposition.

    A :class:`~dufm_core.curvature.base.CurvatureOperator` with closed forms for everything
    the base derives from products: ``dense`` = kron(P, Q) + shift·I, ``diagonal`` =
    diag P ⊗ diag Q + shift, ``eigenvalues`` = all p_i q_j + shift, ``apply_matrices`` =
    P M Qᵀ + shift·M. It can be checked against, or substituted for, a
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
        super().__init__(self.d_out * self.d_in, P.dtype, P.device)
        # LAPACK's threaded eigh is slower than its serial one up to d ~ 2000 on the 2-core
        # machine (and erratic when the other core is busy): measured, benchmarks_hessian.md
        with single_thread():
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

    def eigenvalues(self, max_dim: int | None = None) -> torch.Tensor:
        """The exact spectrum (:meth:`values`); no dense matrix, so no size limit."""
        return self.values()

    def top(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The m largest eigenvalues (descending) and unit eigen-matrices u_i v_jᵀ.

        Returns (values (m,), matrices (m, d_out, d_in)).

        vec_r of each matrix is an eigenvector of the operator. For a degenerate eigenvalue the
        choice within its eigenspace is arbitrary (compare subspaces, docs/theory.md §9).
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

    def apply_matrices(self, M: torch.Tensor) -> torch.Tensor:
        """The matrix form is :meth:`apply`: P M Qᵀ + shift·M on each (d_out, d_in) matrix
        (a stack of another shape with the same row-major vec is reshaped, and back)."""
        if M.shape[-2:] == (self.d_out, self.d_in):
            return self.apply(M)
        return self.apply(M.reshape(-1, self.d_out, self.d_in)).reshape(M.shape)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """(P ⊗ Q + shift I) V for V of shape (dim, m), via P M Qᵀ on each column."""
        self._check_block(V)
        m = V.shape[1]
        self.matvecs += m
        M = V.T.to(self.dtype).reshape(m, self.d_out, self.d_in)
        return self.apply(M).reshape(m, self.dim).T

    def dense(self, max_dim: int = DEFAULT_MAX_DIM, chunk: int | None = None) -> torch.Tensor:
        """kron(P, Q) + shift I (row-major vec); refuses beyond ``max_dim``."""
        self._refuse_dense(max_dim)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.kron(self.P, self.Q) + self.shift * eye

    def diagonal(self, chunk: int | None = None) -> torch.Tensor:
        """diag(P ⊗ Q) + shift = (P_aa Q_bb + shift) at index a·d_in + b."""
        return (self.P.diagonal()[:, None] * self.Q.diagonal()[None, :]).reshape(-1) + self.shift

    def trace(self) -> float:
        """tr(P ⊗ Q + shift I) = tr P · tr Q + shift · dim."""
        return float(self.P.trace() * self.Q.trace()) + self.shift * self.dim

    def __repr__(self) -> str:
        return (
            f"KroneckerSpectrum(layer={self.layer}, d_out={self.d_out}, d_in={self.d_in}, "
            f"shift={self.shift})"
        )


class LinearHessianOperator(CurvatureOperator):
    """Exact Hessian products of the *linear* deep UFM in closed form (any parameter subset).

    Write the factors as X_0 = H_1, X_f = W_f (f = 1..L), so Z = X_L ⋯ X_1 X_0, with
    U_f = (X_L ⋯ X_{f+1})ᵀ (r_f × K), P_f = X_{f−1} ⋯ X_0 (the input of X_f, c_f × N; the
    identity for f = 0) and M_{f,g} = X_{f−1} ⋯ X_{g+1} for f > g (identity when f = g + 1).
    A perturbation V = (V_f) moves the logits by dZ = Σ_f U_fᵀ V_f P_f and, to second order, by
    2 Σ_{f>g} U_fᵀ V_f M_{f,g} V_g P_g. With ℓ's gradient Γ = ∂ℓ/∂Z (K × N) and its Hessian H_ℓ:

        (H v)_f = U_f H_ℓ[dZ] P_fᵀ                                   (Gauss–Newton part)
                + Σ_{g<f} U_f (S_g V_gᵀ M_{f,g}ᵀ) + Σ_{g>f} M_{g,f}ᵀ (V_gᵀ U_g) S_f   (residual)

    with S_g = Γ P_gᵀ (K × c_g). MSE: Γ = (Z − Y)/N, H_ℓ[dZ] = dZ/N; CE: Γ = (softmax(Z) − Y)/N,
    H_ℓ[dZ] = (p ⊙ dz − p (pᵀ dz))/N per sample. Every product goes through a K-row matrix, so
    one Hessian–vector product costs O(L² K d² + L K d N) instead of the O(L d² N) of autograd's
    double backward: ~10–30× fewer flops at the paper's scales. Same flat layout, parts and
    protocol as :class:`~dufm_core.curvature.operators.HessianOperator`, which the tests compare
    it with; only the linear model is accepted.
    """

    def __init__(
        self,
        model: nn.Module,
        params: str | ParamSet = "weights",
        loss: str = "mse",
        part: str = "fit",
        lam_w: Sequence[float] | None = None,
        lam_h: float | None = None,
    ) -> None:
        _check_linear(model)
        if part not in PARTS:
            raise ValueError(f"part must be one of {' | '.join(PARTS)} (got {part!r})")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {' | '.join(LOSSES)} (got {loss!r})")
        self.pset = param_set(model, params)
        self.part, self.loss = part, loss
        X = [model.features.detach(), *[w.detach() for w in model.weights]]
        self.n_factors = len(X)
        self.factor_of = {}
        for name in self.pset.names:
            if name == "features":
                self.factor_of[name] = 0
            elif name.startswith("weights."):
                self.factor_of[name] = int(name.split(".", 1)[1]) + 1
            else:
                raise ValueError(f"unsupported parameter {name!r} for the linear UFM operator")
        super().__init__(self.pset.dim, X[0].dtype, X[0].device)
        sel = sorted(set(self.factor_of.values()))
        self._sel = sel
        # prefix products P_f (inputs of each factor) and U_f = (X_L ⋯ X_{f+1})ᵀ
        prefix: list[torch.Tensor | None] = [None]  # P_0 = I_N (never materialised)
        h = X[0]
        for f in range(1, self.n_factors):
            prefix.append(h)
            h = X[f] @ h
        Z = h  # K × N
        K, N = Z.shape
        U: list[torch.Tensor] = [torch.empty(0)] * self.n_factors
        acc = torch.eye(K, dtype=self.dtype, device=self.device)
        for f in range(self.n_factors - 1, -1, -1):
            U[f] = acc.T.contiguous()
            acc = acc @ X[f]
        self.U, self.prefix = U, prefix
        labels = model.labels
        Y = torch.nn.functional.one_hot(labels, K).to(self.dtype).T
        if loss == "mse":
            self.gamma = (Z - Y) / N
            self.p = None
        else:
            self.p = torch.softmax(Z, dim=0)
            self.gamma = (self.p - Y) / N
        self.N = N
        self.S = {g: (self.gamma if g == 0 else self.gamma @ prefix[g].T) for g in sel}
        # M_{f,g} = X_{f-1} ⋯ X_{g+1} for selected f > g + 1
        self.M: dict[tuple[int, int], torch.Tensor] = {}
        for g in sel:
            prod = None
            for f in range(g + 1, self.n_factors):
                if f > g + 1:
                    prod = X[f - 1] if prod is None else X[f - 1] @ prod
                if f in sel and f > g + 1:
                    assert prod is not None
                    self.M[(f, g)] = prod
        self._reg = (
            regulariser_diagonal(self.pset, lam_w, lam_h, self.dtype, self.device)
            if part == "total"
            else None
        )

    def _mid(self, f: int, g: int) -> torch.Tensor | None:
        """M_{f,g} (None for the identity, f = g + 1)."""
        return self.M.get((f, g))

    def factor_terms(
        self,
        ut: dict[int, torch.Tensor] | None,
        sv: dict[int, torch.Tensor] | None,
        vu: dict[int, torch.Tensor] | None,
    ) -> dict[int, tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Per selected factor f the low-rank pieces of (H V)_f = U_f A_f + B_f S_f.

        The direction V enters only through three thin products per selected factor g (see
        :meth:`thin_inputs`): ``ut[g]`` = U_gᵀ V_g (b, K, c_g) for the Gauss–Newton term,
        ``sv[g]`` = S_g V_gᵀ (b, K, r_g) and ``vu[g]`` = V_gᵀ U_g (b, c_g, K) for the residual
        terms (None: that part is not wanted). A_f (b, K, c_f) collects the Gauss–Newton term
        H_ℓ[dZ] P_fᵀ and the residual terms S_g V_gᵀ M_{f,g}ᵀ (g < f); B_f (b, r_f, K) collects
        M_{g,f}ᵀ V_gᵀ U_g (g > f). Summing the thin factors first means each output block is
        formed by one rank-2K product — and the same terms serve the range-space operator
        (:mod:`dufm_core.curvature.range_space`), which forms the thin products from its own
        coordinates without ever building V.
        """
        sel = self._sel
        A: dict[int, torch.Tensor | None] = dict.fromkeys(sel)
        Bm: dict[int, torch.Tensor | None] = dict.fromkeys(sel)
        if ut is not None:
            dZ = None
            for g in sel:
                t = ut[g]  # (b, K, c_g)
                if g > 0:
                    t = t @ self.prefix[g]  # (b, K, N)
                dZ = t if dZ is None else dZ + t
            assert dZ is not None
            if self.loss == "mse":
                hz = dZ / self.N
            else:
                p = self.p
                hz = (p * dZ - p * (p * dZ).sum(dim=1, keepdim=True)) / self.N
            for f in sel:
                A[f] = hz if f == 0 else hz @ self.prefix[f].T
        if sv is not None and vu is not None:
            K = self.gamma.shape[0]
            b = next(iter(sv.values())).shape[0]
            for f in sel:
                for g in sel:
                    if g < f:
                        mid = self._mid(f, g)
                        t = sv[g] if mid is None else (sv[g].reshape(b * K, -1) @ mid.T).reshape(
                            b, K, -1
                        )
                        A[f] = t if A[f] is None else A[f] + t
                    elif g > f:
                        mid = self._mid(g, f)
                        if mid is None:
                            t = vu[g]
                        else:
                            t = (mid.T @ vu[g].transpose(0, 1).reshape(mid.shape[0], -1))
                            t = t.reshape(-1, b, K).transpose(0, 1)
                        Bm[f] = t if Bm[f] is None else Bm[f] + t
        return {f: (A[f], Bm[f]) for f in sel}

    def wants(self) -> tuple[bool, bool]:
        """(Gauss–Newton term wanted, residual terms wanted) for this operator's part; the
        residual terms couple different factors, so one factor alone has none."""
        return self.part != "residual", self.part != "gn" and len(self._sel) > 1

    def thin_inputs(
        self, Vs: dict[int, torch.Tensor]
    ) -> tuple[dict | None, dict | None, dict | None]:
        """(U_gᵀV_g, S_gV_gᵀ, V_gᵀU_g) per selected factor g for a stack of directions V_g
        (b, r_g, c_g); None where :meth:`wants` says that part is not needed."""
        gn, res = self.wants()
        ut = {g: self.U[g].T @ Vs[g] for g in self._sel} if gn else None
        sv = {g: self.S[g] @ Vs[g].transpose(1, 2) for g in self._sel} if res else None
        vu = {g: Vs[g].transpose(1, 2) @ self.U[g] for g in self._sel} if res else None
        return ut, sv, vu

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V for V of shape (dim, m) (row-major layout of the ParamSet), returns (dim, m)."""
        self._check_block(V)
        Vr = V.to(dtype=self.dtype, device=self.device).T
        b = Vr.shape[0]
        self.matvecs += b
        off = self.pset.offsets
        Vs = {}
        for i, (name, shape) in enumerate(zip(self.pset.names, self.pset.shapes, strict=True)):
            Vs[self.factor_of[name]] = Vr[:, off[i] : off[i + 1]].reshape(b, *shape)
        terms = self.factor_terms(*self.thin_inputs(Vs))
        rows = torch.empty(b, self.dim, dtype=self.dtype, device=self.device)
        for i, (name, shape) in enumerate(zip(self.pset.names, self.pset.shapes, strict=True)):
            f = self.factor_of[name]
            A_f, B_f = terms[f]
            left, right = [], []
            if A_f is not None:
                left.append(self.U[f].expand(b, -1, -1))
                right.append(A_f)
            if B_f is not None:
                left.append(B_f)
                right.append(self.S[f].expand(b, -1, -1))
            dest = rows[:, off[i] : off[i + 1]].view(b, *shape)
            if not left:
                dest.zero_()
                continue
            Lf = left[0] if len(left) == 1 else torch.cat(left, dim=2)
            Rf = right[0] if len(right) == 1 else torch.cat(right, dim=1)
            torch.bmm(Lf, Rf, out=dest)
        if self._reg is not None:
            rows.addcmul_(self._reg.expand(b, -1), Vr)
        return rows.T

    def __repr__(self) -> str:
        return (
            f"LinearHessianOperator(params={self.pset.spec or self.pset.names}, "
            f"loss={self.loss!r}, part={self.part!r}, dim={self.dim})"
        )
