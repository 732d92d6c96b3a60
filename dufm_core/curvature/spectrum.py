"""Which operator and which method: the choices made once for every Hessian the reports measure.

:func:`hessian_operator` picks the products for a parameter set: the closed-form
:class:`~dufm_core.curvature.kronecker.LinearHessianOperator` for the linear UFM (every product
through a K-row matrix, ~10–30× fewer flops) or the autograd
:class:`~dufm_core.curvature.operators.HessianOperator` otherwise. Both are exact.

:func:`layer_spectrum` gives the top eigenpairs of one layer's fit Hessian ∇²_{W_l} F with the
cheapest exact method (docs/theory.md §4.1, §9):

* linear model, MSE: the Hessian is exactly P ⊗ Q with P = A^{(l+1)ᵀ}A^{(l+1)}, Q = H_lH_lᵀ/N,
  so the *whole* spectrum is {p_i q_j} from two d×d eigendecompositions (O(d³)), eigenvectors
  vec_r(u_i v_jᵀ) — method ``"kronecker (exact, docs/theory.md §4.1)"``;
* otherwise, d_out·d_in ≤ ``dense_max``: the dense Hessian from products with identity blocks,
  symmetrised, and ``eigh`` — the whole spectrum, method ``"dense autograd Hessian + eigh"``;
* otherwise: the block Krylov solver on Hessian–matrix products for the top m pairs, with a
  block of at least K² + K (the K² outliers are degenerate at collapse) and convergence
  required of the leading K² — method ``"block-krylov(…) on Hessian–matrix products (n
  products)"``; only the top m eigenvalues are known.

The result is a typed :class:`LayerSpectrum` (values, vectors, the computed spectrum, the
operator for further products, the method string and convergence) that the analysis report
turns into its layer keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dufm_core.curvature.base import CurvatureOperator, DenseOperator
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.kronecker import KroneckerSpectrum, LinearHessianOperator
from dufm_core.curvature.operators import HessianOperator
from dufm_core.curvature.params import ParamSet

__all__ = ["DENSE_MAX", "LayerSpectrum", "hessian_operator", "layer_spectrum"]

DENSE_MAX = 4096  # layers with at most this many weights get a dense autograd Hessian
METHOD_KRONECKER = "kronecker (exact, docs/theory.md §4.1)"
METHOD_DENSE = "dense autograd Hessian + eigh"


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
    linear = linear and not getattr(model, "has_biases", False)  # closed forms are bias-free
    if structured is None:
        structured = linear
    if structured:
        return LinearHessianOperator(model, params, loss, part, lam_w, lam_h)
    return HessianOperator(model, params, loss, part, lam_w, lam_h)


@dataclass
class LayerSpectrum:
    """The top of one layer's fit-Hessian spectrum (:func:`layer_spectrum`).

    ``values`` (m,) descending and ``vectors`` (d_out·d_in, m) orthonormal eigenvectors
    (row-major vec of W_l), float64; ``spectrum`` every eigenvalue computed, descending (the
    whole spectrum when ``exact_spectrum``, else the top m); ``operator`` the layer Hessian as
    an operator (its ``apply_matrices`` is the product on (d_out, d_in) matrices, e.g. for the
    alignment f_cc'); ``method`` how it was computed (the report's ``hessian_method``);
    ``seconds`` the wall time; ``converged`` and ``residual_max`` (max ‖Hu − λu‖ of the
    leading K², 0 for the direct methods, None when not finite).
    """

    layer: int
    values: torch.Tensor
    vectors: torch.Tensor
    spectrum: torch.Tensor
    operator: CurvatureOperator
    method: str
    seconds: float
    converged: bool
    residual_max: float | None

    @property
    def exact_spectrum(self) -> bool:
        """True when ``spectrum`` holds all d_out·d_in eigenvalues."""
        return self.spectrum.numel() == self.operator.dim


def layer_spectrum(
    model: nn.Module,
    layer: int,
    loss: str = "mse",
    m: int | None = None,
    tol: float = 1e-10,
    dense_max: int = DENSE_MAX,
    v0: torch.Tensor | None = None,
) -> LayerSpectrum:
    """Top-m eigenpairs of the layer-``layer`` (1-based) fit Hessian by the cheapest exact method
    (module docstring). ``model`` is a DeepUFM-like module (``weights``, ``activation``, ``K``,
    ``labels``, ``layer_features()``); m defaults to min(K² + K, d_out·d_in); ``tol`` is the
    relative residual tolerance of the iterative method. ``v0`` (d_out·d_in, k), optional: the
    iterative method's start vectors (e.g. the previous checkpoint's, a warm start); the direct
    methods do not need them."""
    d_out, d_in = model.weights[layer - 1].shape
    dim = d_out * d_in
    K2 = int(model.K) ** 2
    m = min(K2 + int(model.K), dim) if m is None else int(m)
    t0 = time.perf_counter()
    residual_max: float | None = 0.0
    converged = True
    operator: CurvatureOperator
    if model.activation == "linear" and loss == "mse":
        spec = KroneckerSpectrum.from_model(model, layer)
        spectrum = spec.values()
        values, mats = spec.top(m)
        vectors = mats.reshape(mats.shape[0], -1).T
        operator, method = spec, METHOD_KRONECKER
    else:
        op = hessian_operator(model, f"layer:{layer}", loss=loss, part="fit")
        if dim <= dense_max:
            H = op.dense(max_dim=dense_max).double()
            H = 0.5 * (H + H.T)
            evals, evecs = torch.linalg.eigh(H)
            spectrum = evals.flip(0)
            values, vectors = spectrum[:m], evecs.flip(1)[:, :m]
            operator, method = DenseOperator(H), METHOD_DENSE
        else:
            res = top_eigenpairs(op, m, block=max(m, K2 + int(model.K)), tol=tol,
                                 need=min(K2, m), v0=v0)
            values, vectors = res.values.double(), res.vectors.double()
            spectrum = values
            operator = op
            method = f"{res.method} on Hessian–matrix products ({res.matvecs} products)"
            worst = float(res.residual_norms[:K2].max())
            residual_max = worst if math.isfinite(worst) else None
            converged = bool(res.converged[:K2].all())
    return LayerSpectrum(
        layer=layer, values=values.double(), vectors=vectors.double(),
        spectrum=spectrum.double(), operator=operator, method=method,
        seconds=time.perf_counter() - t0, converged=converged, residual_max=residual_max,
    )  # fmt: skip
