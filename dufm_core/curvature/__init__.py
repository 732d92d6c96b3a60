"""Curvature engine: one operator base, Hessian operators, exact Kronecker layer blocks, Papyan's
Gauss–Newton split, block eigensolvers, SLQ, and the choice of method per layer.

Every quantity here is explicit about *which* Hessian it is (docs/theory.md §0): the part
("fit" — the default and the object of the theorems —, "gn", "residual", "total") and the
parameter set (``"layer:l"``, ``"layers:1,3"``, ``"weights"``, ``"weights+features"``,
``"features"``). Vectors are flattened row-major (``W.reshape(-1)``).

Layout (imports only go down this list, so there are no cycles):

    base          CurvatureOperator (matmat, @, dense, diagonal, trace, eigenvalues,
                  apply_matrices), DenseOperator, as_operator; params: ParamSet
    operators     HessianOperator (autograd, torch.func), gradient, regulariser_diagonal
    kronecker     KroneckerSpectrum (layer P ⊗ Q), LinearHessianOperator (closed forms)
    range_space   RangeSpaceOperator: the linear UFM's Hessian on a subspace holding its range
    network       NetworkHessianOperator (a real network over its training set)
    eigensolvers  top_eigenpairs → EigResult, full_spectrum, count_outliers
    density       slq_density / slq_log_density → SpectralDensity
    gauss_newton  gn_split → GNSplit (Papyan's class / cross / within parts as operators)
    spectrum      hessian_operator (which products), layer_spectrum → LayerSpectrum (which method)
    trace         exact_trace, hutchinson, hutch_pp → TraceEstimate; full_fit_trace
    bottom        bottom_eigenvalues (shifted block solve) → Bottom; verdict (minimum / saddle)
    attribution   attribution: each outlier cluster's share per parameter block

    from dufm_core.curvature import HessianOperator, top_eigenpairs, KroneckerSpectrum

    op = HessianOperator(model, "weights", loss="mse")          # full weight fit-Hessian
    op = hessian_operator(model, "weights")                      # closed-form products if linear
    res = top_eigenpairs(op, m=9)                                # block Krylov, b ≥ K²
    ks = KroneckerSpectrum.from_model(model, layer=3)            # exact linear-MSE layer block
    dens = slq_density(op, steps=80, probes=8)                   # spectral density
    spec = layer_spectrum(model, 2, loss="mse")                  # the report's layer method
"""

from dufm_core.curvature.base import CurvatureOperator, DenseOperator, Operand, as_operator
from dufm_core.curvature.density import (
    SpectralDensity,
    lanczos_quadrature,
    slq_density,
    slq_log_density,
)
from dufm_core.curvature.eigensolvers import (
    EigResult,
    count_outliers,
    default_block,
    full_spectrum,
    top_eigenpairs,
)
from dufm_core.curvature.gauss_newton import (
    GNPartOperator,
    GNPartSpectrum,
    GNSplit,
    GNSplitParts,
    gn_split,
    gn_split_parts,
)
from dufm_core.curvature.kronecker import KroneckerSpectrum, LinearHessianOperator, layer_factors
from dufm_core.curvature.operators import (
    PARTS,
    HessianOperator,
    gradient,
    regulariser_diagonal,
)
from dufm_core.curvature.params import ParamSet, flatten, param_set, unflatten
from dufm_core.curvature.range_space import RangeSpaceOperator, range_space
from dufm_core.curvature.spectrum import LayerSpectrum, hessian_operator, layer_spectrum

__all__ = [
    "PARTS",
    "CurvatureOperator",
    "DenseOperator",
    "EigResult",
    "GNPartOperator",
    "GNPartSpectrum",
    "GNSplit",
    "GNSplitParts",
    "HessianOperator",
    "KroneckerSpectrum",
    "LayerSpectrum",
    "LinearHessianOperator",
    "Operand",
    "ParamSet",
    "RangeSpaceOperator",
    "SpectralDensity",
    "as_operator",
    "count_outliers",
    "default_block",
    "flatten",
    "full_spectrum",
    "gn_split",
    "gn_split_parts",
    "gradient",
    "hessian_operator",
    "lanczos_quadrature",
    "layer_factors",
    "layer_spectrum",
    "param_set",
    "range_space",
    "regulariser_diagonal",
    "slq_density",
    "slq_log_density",
    "top_eigenpairs",
    "unflatten",
]
