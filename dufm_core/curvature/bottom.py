"""The bottom of a Hessian's spectrum and the minimum / saddle verdict (docs/theory.md §6.6).

:func:`bottom_eigenvalues` gives the m smallest eigenvalues of a symmetric operator, ascending:
from an exact or dense spectrum when one is at hand (free), otherwise by the block eigensolver on
the shifted operator σI − A with σ ≥ λ_max(A), whose *largest* eigenvalues σ − λ belong to A's
*smallest* λ. The shift keeps the operator positive semi-definite, so the solver's "largest
algebraic" search is the right one, and its cost is bounded by ``max_iter`` block steps (the
result says whether it converged).

:func:`verdict` classifies a point from the total Hessian's smallest eigenvalue and the gradient
norm (the rule and its tolerances are in docs/theory.md §6.6 and in the record it returns):

* ``"undetermined"`` when ‖∇L‖ > grad_tol (not a critical point, so neither a minimum nor a
  saddle), or when the bottom solve did not converge;
* ``"saddle"`` when λ_min < −curv_tol (a direction of negative curvature at a critical point);
* ``"minimum"`` otherwise: the second-order necessary condition holds (no eigenvalue below
  −curv_tol). Zero modes (the rotation symmetries of the hidden layers make many) leave the
  test degenerate; ``near_zero`` counts the computed eigenvalues within ±curv_tol so that a
  reader can tell a flat valley from a strict minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dufm_core.curvature.base import CurvatureOperator, Operand, as_operator
from dufm_core.curvature.eigensolvers import top_eigenpairs

__all__ = ["BOTTOM_M", "Bottom", "PlusDiagonal", "ShiftedOperator", "bottom_eigenvalues",
           "verdict", "with_known_values"]

BOTTOM_M = 3  # smallest eigenvalues the report keeps (the contract asks for at least 3)
BOTTOM_MAX_ITER = 60  # block steps of a shifted bottom solve: bounded cost
CURV_TOL_REL = 1e-6  # curvature tolerance relative to λ_max of the total Hessian
GRAD_TOL_REL = 1e-6  # gradient tolerance relative to λ_max · max(‖θ‖, 1)


class ShiftedOperator(CurvatureOperator):
    """σI − A for a symmetric operator A (products through A's ``matmat``)."""

    def __init__(self, A: CurvatureOperator, sigma: float) -> None:
        super().__init__(A.dim, A.dtype, A.device)
        self.A = A
        self.sigma = float(sigma)
        self.chunk_size = A.chunk_size

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """σV − AV."""
        self._check_block(V)
        V = V.to(dtype=self.dtype, device=self.device)
        self.matvecs += V.shape[1]
        return self.sigma * V - self.A.matmat(V)


class PlusDiagonal(CurvatureOperator):
    """A + diag(d): e.g. the total Hessian as the fit Hessian plus the regulariser's diagonal
    (``operators.regulariser_diagonal``), reusing an operator already built for the fit part."""

    def __init__(self, A: CurvatureOperator, d: torch.Tensor) -> None:
        super().__init__(A.dim, A.dtype, A.device)
        if d.shape != (A.dim,):
            raise ValueError(f"the diagonal must have shape ({A.dim},), got {tuple(d.shape)}")
        self.A = A
        self.d = d.to(dtype=A.dtype, device=A.device)
        self.chunk_size = A.chunk_size

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """AV + d ⊙ V (row-wise)."""
        self._check_block(V)
        V = V.to(dtype=self.dtype, device=self.device)
        self.matvecs += V.shape[1]
        return self.A.matmat(V) + self.d[:, None] * V


@dataclass(frozen=True)
class Bottom:
    """The m smallest eigenvalues (ascending), how they were found, and their convergence."""

    values: torch.Tensor
    method: str
    converged: bool
    matvecs: int
    residual_max: float | None


def bottom_eigenvalues(op: Operand, m: int = BOTTOM_M, spectrum: torch.Tensor | None = None,
                       sigma: float | None = None, tol: float = 1e-8,
                       max_iter: int = BOTTOM_MAX_ITER, seed: int = 0,
                       v0: torch.Tensor | None = None, block: int | None = None) -> Bottom:
    """The ``m`` smallest eigenvalues of ``op``, ascending (module docstring).

    ``spectrum`` is the whole spectrum when known (any order): then it is simply sorted. Else
    ``sigma`` (an upper bound on λ_max, e.g. the top eigenvalue already computed) shifts the
    operator; without it λ_max is found first (a few products). ``tol`` is the solver's relative
    residual tolerance on σI − A (so relative to σ). ``v0``/``block``: start vectors and block
    size of the shifted solve (default a random block of max(2m, 8)); the result is the same to
    ``tol``, only the number of products changes."""
    A = as_operator(op)
    m = min(int(m), A.dim)
    if spectrum is not None and spectrum.numel() == A.dim:
        vals = torch.sort(spectrum.detach().double()).values[:m]
        return Bottom(vals, "from the exact spectrum", True, 0, 0.0)
    before = A.matvecs
    if sigma is None:
        sigma = float(top_eigenpairs(A, 1, block=4, tol=1e-6, max_iter=max_iter).values[0])
    sigma = abs(float(sigma)) * (1.0 + 1e-6) + 1e-300  # σ ≥ λ_max, σI − A ⪰ 0
    shifted = ShiftedOperator(A, sigma)
    res = top_eigenpairs(shifted, m, block=max(2 * m, 8) if block is None else max(block, m),
                         tol=tol, max_iter=max_iter, seed=seed, v0=v0)
    vals = torch.sort(sigma - res.values.double()).values
    worst = float(res.residual_norms.max())
    return Bottom(vals, f"block solve on σI − H (σ = {sigma:.4g}, ≤ {max_iter} steps)",
                  bool(res.converged.all()), A.matvecs - before,
                  worst if math.isfinite(worst) else None)


def with_known_values(bottom: Bottom, known: torch.Tensor, note: str) -> Bottom:
    """``bottom`` merged with eigenvalues known exactly without a solve (e.g. the regulariser's
    λ_f on the complement of a :class:`~dufm_core.curvature.range_space.RangeSpaceOperator`'s
    subspace, where the fit Hessian is zero): the same number of smallest values, ascending,
    from both. ``note`` says where the known values come from (appended to the method)."""
    m = bottom.values.numel()
    merged = torch.sort(torch.cat([bottom.values.double(), known.double().reshape(-1)])).values
    return Bottom(merged[:m], f"{bottom.method}; {note}", bottom.converged, bottom.matvecs,
                  bottom.residual_max)


def verdict(bottom: Bottom, lam_max: float, grad_norm: float, theta_norm: float,
            curv_tol_rel: float = CURV_TOL_REL, grad_tol_rel: float = GRAD_TOL_REL
            ) -> tuple[str, dict[str, Any]]:
    """("minimum" | "saddle" | "undetermined", detail) from the *total* Hessian's bottom, its
    λ_max, the total-loss gradient norm and ‖θ‖ (module docstring). The detail records every
    number and tolerance the decision used."""
    scale = abs(float(lam_max))
    curv_tol = curv_tol_rel * scale
    grad_tol = grad_tol_rel * scale * max(float(theta_norm), 1.0)
    vals = bottom.values.double()
    lam_min = float(vals[0])
    negative = int((vals < -curv_tol).sum())
    near_zero = int((vals.abs() <= curv_tol).sum())
    if not bottom.converged:
        v, why = "undetermined", "the bottom eigensolve did not converge"
    elif grad_norm > grad_tol:
        v, why = "undetermined", "the gradient is not zero up to grad_tol: not a critical point"
    elif lam_min < -curv_tol:
        v, why = "saddle", "a direction of negative curvature at a critical point"
    else:
        v, why = "minimum", ("no eigenvalue below −curv_tol at a critical point (second-order "
                             "test; near-zero eigenvalues leave it degenerate)")
    detail = {
        "lambda_min": lam_min, "lambda_max": float(lam_max), "grad_norm": float(grad_norm),
        "theta_norm": float(theta_norm), "curv_tol": curv_tol, "grad_tol": grad_tol,
        "curv_tol_rule": f"{curv_tol_rel:g} × λ_max", "grad_tol_rule":
            f"{grad_tol_rel:g} × λ_max × max(‖θ‖, 1)",
        "negative_directions": negative,
        "negative_directions_lower_bound": negative == vals.numel(),
        "near_zero": near_zero, "eigenvalues_checked": int(vals.numel()),
        "bottom_converged": bottom.converged, "reason": why,
    }
    return v, detail
