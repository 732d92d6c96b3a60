"""Full-batch Hessian operators of the deep UFM, applied to many vectors per pass (torch.func).

For a selection θ of the parameters (a :class:`~dufm_core.curvature.params.ParamSet`, flattened
row-major) and the fit term F(θ) = ℓ(Z(θ)) of docs/theory.md §1.3/§1.5 over all N samples,

    ∇²F = Jᵀ H_ℓ J  +  Σ_{i,k} (∂ℓ/∂z_{ik}) ∇² z_{ik}        ("gn" + "residual" = "fit")

with J = ∂vec(Z)/∂θ the (N·K) × dim Jacobian of the logits and H_ℓ the Hessian of ℓ in the logits:

* MSE, ℓ = ‖Z − Y‖²/(2N):   H_ℓ = I/N                       (so "gn" = JᵀJ/N)
* CE,  ℓ = mean_i −log softmax(z_i)_{y_i}:  H_ℓ = blockdiag_i (diag p_i − p_i p_iᵀ)/N

"total" adds the regulariser's Hessian, which is diagonal: λ_{W_l} on the entries of W_l and λ_H
on those of H_1.

Products are computed with ``torch.func``: a Hessian–matrix product H V is ``vmap`` over the
columns of V of the reverse-over-reverse product vᵀ∇(∇F) (the gradient's graph is built once;
the per-vector second backward passes are batched into one matmul per layer), and the
Gauss–Newton product is vmap of J (jvp) → H_ℓ → Jᵀ (vjp). The ReLU model uses autograd's
σ'(0) = 0.

:class:`HessianOperator` is a :class:`~dufm_core.curvature.base.CurvatureOperator`: it implements
``matmat(V)`` for V of shape (dim, m) and inherits ``@``, ``dense()``, ``diagonal()`` and the
rest; the eigensolvers and the density estimator take it like any other operator. Which
operator suits a model (these autograd products, or the closed-form products of the linear
model) is chosen by :func:`dufm_core.curvature.spectrum.hessian_operator`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.params import ParamSet, flatten, param_set

__all__ = ["LOSSES", "PARTS", "HessianOperator", "gradient", "regulariser_diagonal"]

PARTS = ("fit", "total", "gn", "residual")
LOSSES = ("mse", "ce")
DEFAULT_MEMORY_BYTES = 1 << 30  # budget for the batched tangents of one vmap chunk


def _loss_fn(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Fit term ℓ(Z) for logits Z (N, K) and targets: the one-hot matrix (N, K) for MSE, the
    labels (N,) for CE; as in models.fit_term (the one-hot is precomputed so that the function
    has no data-dependent step and traces cleanly)."""
    if loss == "mse":

        def mse(z: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
            return (z - onehot).square().sum() / (2 * z.shape[0])

        return mse
    if loss == "ce":

        def ce(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(z, labels)

        return ce
    raise ValueError(f"loss must be one of {' | '.join(LOSSES)} (got {loss!r})")


def regulariser_diagonal(
    pset: ParamSet,
    lam_w: Sequence[float] | None,
    lam_h: float | None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Diagonal of the regulariser's Hessian over ``pset``: λ_{W_l} on W_l's entries, λ_H on
    H_1's. Raises ValueError when a needed λ is missing."""
    parts = []
    for name, size in zip(pset.names, pset.sizes, strict=True):
        if name == "features":
            if lam_h is None:
                raise ValueError("part='total' over H_1 needs lam_h (λ_H)")
            lam = float(lam_h)
        elif name.startswith("weights."):
            i = int(name.split(".", 1)[1])
            if lam_w is None or i >= len(lam_w):
                raise ValueError(
                    f"part='total' over W_{i + 1} needs lam_w with one λ_W per layer (got {lam_w})"
                )
            lam = float(lam_w[i])
        else:
            raise ValueError(f"no regulariser is defined for parameter {name!r}")
        parts.append(torch.full((size,), lam, dtype=dtype, device=device))
    return torch.cat(parts)


def _auto_chunk(dim: int, itemsize: int, memory_bytes: int) -> int:
    """Columns per vmap chunk so that the batched intermediates (budgeted at 16 dim-sized
    buffers per column, a generous bound for these models) stay within ``memory_bytes``."""
    return int(max(1, min(1024, memory_bytes // max(1, 16 * dim * itemsize))))


class _Functional:
    """The model as a pure function of the selected parameter tensors (everything else fixed).

    Functions take the selected tensors as a tuple (one per name of the ParamSet) rather than
    one flat θ: slicing a flat vector inside a differentiated function makes autograd build a
    full-length zero tensor per slice in the backward pass, which costs more memory traffic
    than the Hessian product itself at large widths. Flattening happens once per block instead.
    """

    def __init__(self, model: nn.Module, pset: ParamSet, loss: str) -> None:
        self.model = model
        self.pset = pset
        self.loss = loss
        self.ell = _loss_fn(loss)
        self.base = {k: v.detach() for k, v in model.named_parameters()}
        self.buffers = {k: v for k, v in model.named_buffers()}
        labels = getattr(model, "labels", None)
        if labels is None:
            raise ValueError("the model must expose .labels (the class of every sample)")
        self.labels = labels
        self.params0 = tuple(t.clone() for t in pset.tensors(model))
        self.theta0 = flatten(self.params0)
        K = int(self.logits(*self.params0).shape[1])
        self.target = (
            torch.nn.functional.one_hot(labels, K).to(self.theta0.dtype)
            if loss == "mse"
            else labels
        )

    def logits(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Logits Z of all N samples, shape (N, K), with the selected tensors replaced."""
        values = dict(self.base)
        values.update(zip(self.pset.names, tensors, strict=True))
        values.update(self.buffers)
        return functional_call(self.model, values, ())

    def fit(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Full-batch fit term F."""
        return self.ell(self.logits(*tensors), self.target)

    def split_rows(self, Vr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A block stored as rows (m, dim) → per-parameter tangents (m, *shape) (views when
        the rows are contiguous)."""
        off = self.pset.offsets
        m = Vr.shape[0]
        return tuple(
            Vr[:, off[i] : off[i + 1]].reshape(m, *s) for i, s in enumerate(self.pset.shapes)
        )

    def join_rows(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-parameter blocks (m, *shape) → rows (m, dim)."""
        m = parts[0].shape[0]
        return torch.cat([t.reshape(m, -1) for t in parts], dim=1)


class HessianOperator(CurvatureOperator):
    """Hessian (or one of its parts) of the full-batch loss w.r.t. a parameter set, as an operator.

    Args:
        model: a DeepUFM-like module (``forward()`` gives all N logits, ``.labels``).
        params: a spec string (see :func:`~dufm_core.curvature.params.param_set`) or ParamSet.
        loss: "mse" or "ce" (the model does not record which loss it was trained with).
        part: "fit" (default; the Hessian of the theorems), "gn" (Jᵀ H_ℓ J), "residual"
            (fit − gn) or "total" (fit + regulariser, needs ``lam_w``/``lam_h``).
        lam_w, lam_h: λ_{W_1..W_L} and λ_H, only used by part="total".
        chunk_size: columns per vmap chunk (memory bound); None = automatic.

    The operator is evaluated at the model's parameters at construction time (a snapshot).
    """

    def __init__(
        self,
        model: nn.Module,
        params: str | ParamSet = "weights",
        loss: str = "mse",
        part: str = "fit",
        lam_w: Sequence[float] | None = None,
        lam_h: float | None = None,
        chunk_size: int | None = None,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        if part not in PARTS:
            raise ValueError(f"part must be one of {' | '.join(PARTS)} (got {part!r})")
        self.pset = param_set(model, params)
        self.part = part
        self.loss = loss
        self.lam_w = None if lam_w is None else [float(x) for x in lam_w]
        self.lam_h = None if lam_h is None else float(lam_h)
        self._f = _Functional(model, self.pset, loss)
        theta0 = self._f.theta0
        super().__init__(self.pset.dim, theta0.dtype, theta0.device)
        self.chunk_size = chunk_size or _auto_chunk(self.dim, theta0.element_size(), memory_bytes)
        self._reg = (
            regulariser_diagonal(self.pset, self.lam_w, self.lam_h, self.dtype, self.device)
            if part == "total"
            else None
        )
        self._fit_mm: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._gn_mm: Callable[[torch.Tensor], torch.Tensor] | None = None

    # ------------------------------------------------------------------ building blocks
    def _fit_rows(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Rows (m, dim) ↦ rows of (∇²F V): vmap over vectors of the reverse-over-reverse
        product vᵀ∇(∇F) = (∇²F)ᵀ v = ∇²F v.

        The gradient ∇F and the graph of its computation are built once (``vjp`` of ``grad``)
        and every block reuses them; only the second backward pass runs per vector, batched by
        ``vmap``. Measured ~30 % faster than the forward-over-reverse jvp(∇F; v), which
        re-runs the primal forward and backward for every block (docs/benchmarks_hessian.md).
        """
        if self._fit_mm is None:
            f = self._f
            params0 = f.params0
            g = grad(f.fit, argnums=tuple(range(len(params0))))
            _, vjp_fn = vjp(g, *params0)

            def hvp(*v: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return vjp_fn(v)

            batched = vmap(hvp, chunk_size=self.chunk_size)

            def rows(Vr: torch.Tensor) -> torch.Tensor:
                return f.join_rows(batched(*f.split_rows(Vr)))

            self._fit_mm = rows
        return self._fit_mm

    def _gn_rows(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Rows (m, dim) ↦ rows of Jᵀ H_ℓ J V: vmap over vectors of jvp → H_ℓ → vjp."""
        if self._gn_mm is None:
            f = self._f
            params0 = f.params0
            z0, vjp_fn = vjp(f.logits, *params0)
            N = z0.shape[0]
            if self.loss == "mse":

                def h_ell(u: torch.Tensor) -> torch.Tensor:
                    return u / N

            else:
                p = torch.softmax(z0.detach(), dim=1)

                def h_ell(u: torch.Tensor) -> torch.Tensor:
                    return (p * u - p * (p * u).sum(dim=1, keepdim=True)) / N

            def gnvp(*v: torch.Tensor) -> tuple[torch.Tensor, ...]:
                jz = jvp(f.logits, params0, v)[1]
                return vjp_fn(h_ell(jz))

            batched = vmap(gnvp, chunk_size=self.chunk_size)

            def rows(Vr: torch.Tensor) -> torch.Tensor:
                return f.join_rows(batched(*f.split_rows(Vr)))

            self._gn_mm = rows
        return self._gn_mm

    # ------------------------------------------------------------------ the product
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V for a block V of shape (dim, m); returns (dim, m) in the operator's dtype.

        Internally the block is handled as rows (m, dim); passing V as the transpose of a
        row-major (m, dim) tensor (as the eigensolvers do) avoids a copy, and the result is
        likewise the transpose of a row-major (m, dim) tensor.
        """
        self._check_block(V)
        Vr = V.to(dtype=self.dtype, device=self.device).T.contiguous()
        self.matvecs += Vr.shape[0]
        if Vr.shape[0] == 0:
            return Vr.T.clone()
        if self.part == "fit":
            out = self._fit_rows()(Vr)
        elif self.part == "gn":
            out = self._gn_rows()(Vr)
        elif self.part == "residual":
            out = self._fit_rows()(Vr) - self._gn_rows()(Vr)
        else:
            assert self._reg is not None
            out = self._fit_rows()(Vr) + self._reg * Vr
        return out.T

    def block(
        self, rows: str | ParamSet, cols: str | ParamSet, max_dim: int = 8192
    ) -> torch.Tensor:
        """Dense cross block ∂²/∂θ_rows ∂θ_cols of the same part (shape rows.dim × cols.dim).

        Built from an operator over rows ∪ cols applied to the identity columns of ``cols``;
        for part="total" the regulariser appears only where a row and a column are the same
        entry. E.g. ``op.block("layer:2", "layer:3")`` is the W_2–W_3 block of the fit Hessian.
        """
        model = self._f.model
        r = param_set(model, rows)
        c = param_set(model, cols)
        if c.dim > max_dim or r.dim > max_dim:
            raise ValueError(
                f"block {r.dim} × {c.dim} exceeds max_dim = {max_dim}; raise max_dim knowingly"
            )
        union = r.union(c)
        sub = HessianOperator(
            model, union, self.loss, self.part, self.lam_w, self.lam_h, self.chunk_size
        )
        col_idx = c.index_in(union).to(self.device)
        row_idx = r.index_in(union).to(self.device)
        out = torch.empty(r.dim, c.dim, dtype=self.dtype, device=self.device)
        step = max(1, min(self.chunk_size, 512))
        for a in range(0, c.dim, step):
            b = min(c.dim, a + step)
            E = torch.zeros(union.dim, b - a, dtype=self.dtype, device=self.device)
            E[col_idx[a:b], torch.arange(b - a, device=self.device)] = 1.0
            out[:, a:b] = sub.matmat(E)[row_idx]
        self.matvecs += sub.matvecs
        return out

    def __repr__(self) -> str:
        return (
            f"HessianOperator(params={self.pset.spec or self.pset.names}, loss={self.loss!r}, "
            f"part={self.part!r}, dim={self.dim}, dtype={self.dtype})"
        )


def gradient(
    model: nn.Module,
    params: str | ParamSet = "weights",
    loss: str = "mse",
    part: str = "fit",
    lam_w: Sequence[float] | None = None,
    lam_h: float | None = None,
) -> torch.Tensor:
    """Full-batch gradient over a parameter set, flattened row-major (shape (dim,)).

    part="fit" (default) is ∇F, the g̃ of docs/theory.md §4.3/§6.3; part="total" adds λ·θ.
    """
    if part not in ("fit", "total"):
        raise ValueError(f"gradient part must be fit | total (got {part!r})")
    pset = param_set(model, params)
    f = _Functional(model, pset, loss)
    g = flatten(grad(f.fit, argnums=tuple(range(len(f.params0))))(*f.params0))
    if part == "total":
        g = g + regulariser_diagonal(pset, lam_w, lam_h, g.dtype, g.device) * f.theta0
    return g.detach()

