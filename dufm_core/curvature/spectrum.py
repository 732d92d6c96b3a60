"""Which operator for a Hessian: the choice made once for every Hessian the reports measure.

:func:`hessian_operator` picks the products for a parameter set: the closed-form
:class:`~dufm_core.curvature.kronecker.LinearHessianOperator` for the linear UFM (every product
through a K-row matrix, ~10–30× fewer flops) or the autograd
:class:`~dufm_core.curvature.operators.HessianOperator` otherwise. Both are exact. It lives
above both operator modules, so neither imports the other's chooser (no import cycle).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from dufm_core.curvature.kronecker import LinearHessianOperator
from dufm_core.curvature.operators import HessianOperator
from dufm_core.curvature.params import ParamSet

__all__ = ["hessian_operator"]


def hessian_operator(
    model: nn.Module,
    params: str | ParamSet = "weights",
    loss: str = "mse",
    part: str = "fit",
    lam_w: Sequence[float] | None = None,
    lam_h: float | None = None,
    structured: bool | None = None,
) -> HessianOperator | LinearHessianOperator:
    """The best operator for ``model``: :class:`~dufm_core.curvature.kronecker.
    LinearHessianOperator` (closed-form products, ~10–30× cheaper) for the linear model,
    :class:`~dufm_core.curvature.operators.HessianOperator` (autograd) otherwise.
    ``structured`` forces the choice (True raises for a ReLU model). Both have the same
    layout and parts, and both are :class:`~dufm_core.curvature.base.CurvatureOperator` s."""
    linear = getattr(model, "activation", None) == "linear" and hasattr(model, "features")
    if structured is None:
        structured = linear
    if structured:
        return LinearHessianOperator(model, params, loss, part, lam_w, lam_h)
    return HessianOperator(model, params, loss, part, lam_w, lam_h)
