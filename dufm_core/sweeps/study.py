"""What a sweep's table can show: the studies it supports and the theory curves beside them.

The Sweeps page draws one figure per study (docs/sweeps.md §5): ``phase`` (γ and the outlier
count against λ/λ_crit), ``sensitivity`` (ReLU or CE members over λ), ``depth`` and ``width``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dufm_core import theory


def studies(rows: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> list[str]:
    """Which studies a sweep's table supports: ``phase`` (a λ axis), ``depth``, ``width``,
    ``sensitivity`` (ReLU or CE members over λ)."""
    out = []
    lam_axes = {"lam", "lam_over_crit", "lam_w", "lam_h"}
    if lam_axes & set(axes):
        if any(r.get("loss") == "mse" and r.get("activation") == "linear" for r in rows):
            out.append("phase")
        if any(r.get("activation") == "relu" or r.get("loss") == "ce" for r in rows):
            out.append("sensitivity")
    if "depth" in axes:
        out.append("depth")
    if "width" in axes:
        out.append("width")
    return out


def phase_curves(rows: Sequence[Mapping[str, Any]], points: int = 400) -> list[dict[str, Any]]:
    """Theory curves for the phase diagram, one per (K, n, L) among the linear MSE rows:
    λ/λ_crit on a log grid, γ(λ) (jumping from (L−1)/L to 0 at 1) and the predicted outlier
    count (K² below λ_crit, 0 above)."""
    groups = sorted(
        {
            (int(r["K"]), int(r["n"]), int(r["depth"]))
            for r in rows
            if r.get("loss") == "mse"
            and r.get("activation") == "linear"
            and r.get("lam_over_crit") is not None
        }
    )
    ratios = [r["lam_over_crit"] for r in rows if r.get("lam_over_crit")]
    if not groups or not ratios:
        return []
    lo, hi = math.log10(min(ratios)) - 0.3, math.log10(max(ratios)) + 0.3
    out = []
    for K, n, L in groups:
        lam_c = theory.lambda_crit(K, n, L)
        xs = [10 ** (lo + (hi - lo) * i / (points - 1)) for i in range(points)]
        xs = sorted({*xs, 1.0 - 1e-9, 1.0 + 1e-9})
        gammas = [theory.gamma(K, n, x * lam_c, x * lam_c, L) for x in xs]
        out.append(
            {
                "K": K,
                "n": n,
                "L": L,
                "lambda_crit": lam_c,
                "x": xs,
                "gamma": gammas,
                "count": [K * K if g > 0 else 0 for g in gammas],
                "gamma_crit": (L - 1) / L,
            }
        )
    return out
