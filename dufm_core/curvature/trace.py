"""Traces of curvature operators: exact where the structure gives them, estimated otherwise.

The trace of a Hessian is the sum of its eigenvalues, i.e. its mean curvature times the
dimension; per layer it says how much curvature a block holds, the outliers and the bulk together.

Exact traces (docs/theory.md §6.6):

* a linear-MSE layer's fit Hessian is P ⊗ Q, so tr = tr P · tr Q
  (:meth:`~dufm_core.curvature.kronecker.KroneckerSpectrum.trace`);
* a dense matrix: the sum of its diagonal;
* the full fit Hessian over a parameter set: the sum of the traces of its diagonal blocks (the
  off-diagonal blocks do not enter the trace), and each diagonal block over W_l *is* layer l's
  fit Hessian. With the features H_1 of the linear model, the H_1 block is
  (1/N) I_N ⊗ A^{(1)ᵀ}A^{(1)} (docs/theory.md §4.1), of trace ‖A^{(1)}‖_F² with
  A^{(1)} = W_L ⋯ W_1. :func:`full_fit_trace` adds these up.

Estimates, for operators known only through products (real networks, large ReLU layers):

* :func:`hutchinson`: mean of zᵀAz over Rademacher probes z (unbiased), with the standard error
  of that mean (sample standard deviation / √probes);
* :func:`hutch_pp`: Hutch++ (Meyer, Musco, Musco, Woodruff 2021): a third of the product budget
  sketches the top of the range, Q = orth(A S); tr(QᵀAQ) is exact on that range and Hutchinson
  on (I − QQᵀ)A(I − QQᵀ) estimates the rest. The standard error is that of the residual part
  (the range part is exact). With a few large outliers (a Hessian's K² of them) the variance
  drops by orders of magnitude at equal cost.

All products go through ``matmat`` in blocks, so an autograd operator batches them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dufm_core.curvature.base import CurvatureOperator, Operand, as_operator
from dufm_core.curvature.kronecker import layer_factors
from dufm_core.curvature.params import param_set

__all__ = ["TraceEstimate", "exact_trace", "full_fit_trace", "hutch_pp", "hutchinson"]

PROBE_BLOCK = 64  # probes per matmat call


@dataclass(frozen=True)
class TraceEstimate:
    """A trace with its standard error (0 for an exact value), the number of operator–vector
    products it cost, and how it was obtained (the report's ``*_trace_method``)."""

    value: float
    stderr: float
    matvecs: int
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        """The JSON record: value, stderr, matvecs, method."""
        return {"value": self.value, "stderr": self.stderr, "matvecs": self.matvecs,
                "method": self.method}


def _rademacher(dim: int, k: int, gen: torch.Generator, like: CurvatureOperator) -> torch.Tensor:
    """k Rademacher (±1) probes as a (dim, k) block in the operator's dtype and device."""
    z = torch.randint(0, 2, (dim, k), generator=gen, dtype=torch.int8)
    return (2.0 * z.to(torch.float64) - 1.0).to(dtype=like.dtype, device=like.device)


def _quadratic_forms(A: CurvatureOperator, Z: torch.Tensor) -> torch.Tensor:
    """(z_iᵀ A z_i)_i for the columns of Z, products in blocks of PROBE_BLOCK."""
    out = []
    for a in range(0, Z.shape[1], PROBE_BLOCK):
        B = Z[:, a:a + PROBE_BLOCK]
        out.append((B * A.matmat(B)).sum(dim=0).double())
    return torch.cat(out)


def _mean_stderr(samples: torch.Tensor) -> tuple[float, float]:
    """(mean, sample std / √n) of a 1-D tensor; stderr is NaN for one sample."""
    n = samples.numel()
    mean = float(samples.mean())
    if n < 2:
        return mean, math.nan
    return mean, float(samples.std(unbiased=True)) / math.sqrt(n)


def exact_trace(op: Operand) -> TraceEstimate:
    """tr A from the operator's own ``trace`` (closed form for Kronecker and dense operators;
    otherwise dim products with identity blocks)."""
    A = as_operator(op)
    before = A.matvecs
    value = float(A.trace())
    return TraceEstimate(value, 0.0, A.matvecs - before, f"exact ({type(A).__name__}.trace)")


def hutchinson(op: Operand, probes: int = 64, seed: int = 0) -> TraceEstimate:
    """Hutchinson's estimator mean(zᵀAz) over ``probes`` Rademacher vectors z, with its
    standard error. Costs ``probes`` products."""
    A = as_operator(op)
    if probes < 2:
        raise ValueError(f"probes must be at least 2 for a standard error (got {probes})")
    gen = torch.Generator().manual_seed(seed)
    samples = _quadratic_forms(A, _rademacher(A.dim, probes, gen, A))
    value, err = _mean_stderr(samples)
    return TraceEstimate(value, err, probes, f"Hutchinson, {probes} Rademacher probes")


def hutch_pp(op: Operand, matvecs: int = 96, seed: int = 0) -> TraceEstimate:
    """Hutch++ with a budget of ``matvecs`` products (at least 6): k = budget/3 sketch vectors S,
    Q = orth(A S), the exact tr(QᵀAQ) (k products) and Hutchinson with k probes on the
    deflated operator (I − QQᵀ)A(I − QQᵀ). When 2k ≥ dim the sketch spans everything and the
    result is exact up to rounding."""
    A = as_operator(op)
    k = int(matvecs) // 3
    if k < 2:
        raise ValueError(f"matvecs must be at least 6 for Hutch++ (got {matvecs})")
    gen = torch.Generator().manual_seed(seed)
    S = _rademacher(A.dim, min(k, A.dim), gen, A)
    Q, _ = torch.linalg.qr(A.matmat(S).double())
    Q = Q.to(A.dtype)
    top = float((Q * A.matmat(Q)).sum())
    G = _rademacher(A.dim, k, gen, A)
    G = G - Q @ (Q.T @ G)  # probes of the complement: zᵀ(I−QQᵀ)A(I−QQᵀ)z = gᵀAg
    samples = _quadratic_forms(A, G)
    rest, err = _mean_stderr(samples)
    used = S.shape[1] + Q.shape[1] + k
    return TraceEstimate(top + rest, err, used, f"Hutch++, {used} products (sketch {Q.shape[1]})")


def full_fit_trace(model: nn.Module, params: str = "weights", loss: str = "mse",
                   layer_traces: list[float] | None = None) -> float | None:
    """The exact trace of the full fit Hessian over ``params`` ("weights" or
    "weights+features") as the sum of its diagonal blocks' traces (module docstring).

    ``layer_traces`` are the layers' fit-Hessian traces when already known (the report has
    them); otherwise they are computed exactly for a linear-MSE model, and None is returned for
    any other model (whose layer traces the caller must supply). With features, the H_1 block
    is added in closed form for the linear-MSE model and is None otherwise."""
    pset = param_set(model, params)
    linear_mse = getattr(model, "activation", None) == "linear" and loss == "mse"
    if layer_traces is None:
        if not linear_mse:
            return None
        # tr(P ⊗ Q) = tr P · tr Q: the factors suffice, no eigendecomposition
        layer_traces = [float(P.trace() * Q.trace()) for P, Q in
                        (layer_factors(model, l) for l in range(1, len(model.weights) + 1))]
    total = float(sum(layer_traces))
    if "features" in pset.names:
        if not linear_mse:
            return None
        with torch.no_grad():
            A1 = model.weights[-1].double()
            for W in reversed(list(model.weights)[:-1]):
                A1 = A1 @ W.double()
            total += float((A1 * A1).sum())
    return total
