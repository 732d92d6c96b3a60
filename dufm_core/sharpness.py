"""Sharpness during training: the top eigenvalue of the total-loss Hessian over every trained
parameter, measured at log points and compared with the stability limit of the optimiser.

**What is measured.** Full-batch gradient descent θ ← θ − η ∇L(θ) on a quadratic is stable
only while every Hessian eigenvalue is below 2/η, so the quantity that decides stability is

    sharpness = λ_max(∇²L),   L = fit + regulariser (the **total** loss GD descends),

over **all parameters that the optimiser moves**: for the deep UFM these are W_1..W_L *and*
the free features H_1 (``"weights+features"``). The top eigenvalue over the weights alone is
that of a principal submatrix, so by interlacing it is never larger and would understate how
close a run is to instability. Heavy-ball momentum (PyTorch's convention v ← βv + g,
θ ← θ − ηv) is stable on a quadratic while ηλ < 2 + 2β, so its limit is (2 + 2β)/η. Adam has
no such limit on the raw Hessian (its stability is that of the preconditioned Hessian), and
the option is refused for it (:mod:`dufm_core.config`).

**How.** The Krylov solver of :func:`~dufm_core.curvature.eigensolvers.top_eigenpairs` with a
block of one (Lanczos with full reorthogonalisation and restarts) to a relative residual of
:data:`TOL`, started from the previous log point's top Ritz vector plus a random part of norm
:data:`GUARD` (a start that is an exact eigenvector of a lower eigenvalue, as a crossing of the
top two or an exact symmetry of the collapsed point can leave it, would otherwise keep the
solver inside that invariant subspace; the random part lets it see every direction). The first
solve starts from a random vector. Products come from
:func:`~dufm_core.curvature.spectrum.hessian_operator`: closed-form K-row products for the
linear UFM, ``torch.func`` Hessian–vector products otherwise. The vector lives in memory only:
after a resume the first measurement starts cold, so the logged values of a resumed run agree
with an uninterrupted one to the solver's tolerance, not bit for bit. The residual bound puts
the value within TOL (relative) of an eigenvalue; the Ritz value is a lower bound of λ_max.

**Closed form.** For the linear MSE UFM at its collapsed optimum the whole spectrum of the total
Hessian over weights and H_1 is known (:func:`dufm_core.theory.hessian_spectrum`); its top is
:func:`predicted_sharpness`. Away from the optimum, and for ReLU or CE, there is none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dufm_core import theory
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.spectrum import hessian_operator

__all__ = [
    "PARAMS",
    "SharpnessMeter",
    "SharpnessReading",
    "at_edge",
    "metrics_fields",
    "predicted_sharpness",
    "stability_limit",
]

PARAMS = "weights+features"  # every parameter the UFM's optimiser moves
BLOCK = 1  # Lanczos: one product per iteration
GUARD = 0.05  # norm of the random part added to the warm start vector (a unit vector)
TOL = {torch.float64: 1e-7, torch.float32: 1e-5}  # relative residual ‖Hv − θv‖ ≤ tol·|θ|
MAX_ITER = 500
MAX_BASIS = 32  # Lanczos vectors kept (then a thick restart): ~2 × 32 × dim numbers in memory
EDGE_RTOL = 1e-3  # "at the edge": sharpness ≥ (1 − EDGE_RTOL) · limit


def stability_limit(optimizer: str, lr: float, momentum: float = 0.0) -> float | None:
    """The largest Hessian eigenvalue a quadratic tolerates under this optimiser: 2/η for
    gradient descent, (2 + 2β)/η for heavy-ball momentum; None for Adam (no such limit on the
    raw Hessian)."""
    if optimizer == "gd":
        return 2.0 / lr
    if optimizer == "momentum":
        return (2.0 + 2.0 * momentum) / lr
    return None


def at_edge(sharpness: float | None, limit: float | None) -> bool:
    """Whether ``sharpness`` has reached the stability ``limit`` (to within EDGE_RTOL: at the
    edge of stability the sharpness hovers at the limit, a little above or below)."""
    if sharpness is None or limit is None or not math.isfinite(sharpness):
        return False
    return sharpness >= (1.0 - EDGE_RTOL) * limit


def predicted_sharpness(
    K: int,
    n: int,
    lam_ws: list[float],
    lam_h: float,
    widths: list[int],
    activation: str = "linear",
    loss: str = "mse",
) -> float | None:
    """The sharpness at the collapsed optimum in closed form: the top of the total Hessian's
    spectrum over W_1..W_L and H_1 (:func:`dufm_core.theory.hessian_spectrum`). Only for the
    linear MSE UFM with every λ > 0 and every width ≥ K; None otherwise (no closed form)."""
    if activation != "linear" or loss != "mse" or min([*lam_ws, lam_h]) <= 0 or min(widths) < K:
        return None
    spectrum = theory.hessian_spectrum(K, n, lam_ws, lam_h, widths, include_features=True,
                                       total=True)
    return float(max(value for value, _ in spectrum))


@dataclass
class SharpnessReading:
    """One measurement: the top eigenvalue, the Hessian–vector products it took, and whether
    its residual met the tolerance."""

    value: float
    products: int
    converged: bool


class SharpnessMeter:
    """Measures the sharpness of a model at successive states, each solve warm-started from the
    previous one's top Ritz vector (kept in memory; the first solve starts cold).

    Args:
        loss: "mse" or "ce", the run's fit term.
        lam_ws: λ_{W_1}..λ_{W_L}; lam_h: λ_H (the regulariser of the total loss).
        warm: False starts every solve cold (for tests and benchmarks).
        seed: seed of the random start vectors.
    """

    def __init__(
        self, loss: str, lam_ws: list[float], lam_h: float, warm: bool = True, seed: int = 0
    ) -> None:
        self.loss = loss
        self.lam_ws = [float(x) for x in lam_ws]
        self.lam_h = float(lam_h)
        self.warm = warm
        self.seed = seed
        self._vectors: torch.Tensor | None = None  # (dim, 1): the last solve's top vector
        self._solves = 0

    def measure(self, model: nn.Module) -> SharpnessReading:
        """The sharpness of ``model`` at its current parameters (in the model's dtype)."""
        op = hessian_operator(model, PARAMS, self.loss, "total", self.lam_ws, self.lam_h)
        v0 = self._vectors if self.warm else None
        if v0 is not None and (v0.shape[0] != op.dim or v0.dtype != op.dtype):
            v0 = None
        if v0 is not None and GUARD > 0:
            gen = torch.Generator().manual_seed(self.seed + self._solves)
            noise = torch.randn(op.dim, 1, generator=gen, dtype=torch.float64).to(v0)
            v0 = v0 + GUARD * noise / noise.norm()
        self._solves += 1
        tol = TOL.get(op.dtype, 1e-5)
        with torch.no_grad():
            res = top_eigenpairs(op, m=1, block=BLOCK, tol=tol, max_iter=MAX_ITER,
                                 max_basis=MAX_BASIS, seed=self.seed, v0=v0)
        self._vectors = res.vectors[:, :1].detach().clone()
        return SharpnessReading(float(res.values[0]), int(res.matvecs),
                                bool(res.converged[0]))

    def reset(self) -> None:
        """Forget the warm vectors (the next solve starts cold)."""
        self._vectors = None


def metrics_fields(reading: SharpnessReading, limit: float | None) -> dict[str, Any]:
    """The metrics row's sharpness keys (docs/design.md §3.4)."""
    return {
        "sharpness": reading.value,
        "sharpness_products": reading.products,
        "sharpness_limit": limit,
        "edge_of_stability": at_edge(reading.value, limit),
    }
