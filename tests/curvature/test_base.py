"""The operator base (dufm_core.curvature.base): every operator class is a CurvatureOperator,
its derived methods (``@``, dense, diagonal, trace, eigenvalues, apply_matrices) agree with its
own products on identity columns, and the solvers accept any subclass.

The reference for every operator is ``dense_columns()``, the base's generic A [e_1 … e_dim]
built from the operator's ``matmat`` only; closed-form overrides (Kronecker, dense matrices, GN
parts) must equal it to rounding, and the generic paths exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dufm_core.config import RunConfig
from dufm_core.curvature import (
    CurvatureOperator,
    DenseOperator,
    GNPartOperator,
    HessianOperator,
    KroneckerSpectrum,
    LinearHessianOperator,
    as_operator,
    count_outliers,
    full_spectrum,
    gn_split_parts,
    lanczos_quadrature,
    layer_factors,
    slq_density,
    top_eigenpairs,
)
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.models import build_model
from dufm_core.networks import RealNetwork, init_network

F64 = torch.float64


def _ufm(activation: str = "linear", loss: str = "mse", seed: int = 1) -> torch.nn.Module:
    cfg = RunConfig(K=3, n=2, width=[4, 5, 4], depth=3, activation=activation, loss=loss,
                    seed=seed)  # fmt: skip
    cfg.validate()
    return build_model(cfg)


def _network() -> tuple[RealNetwork, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = RealNetwork(1, [4, 3], "linear", base_width=1, dtype=F64)
    init_network(model, 1.0, torch.Generator().manual_seed(0))
    x = torch.randn(6, 1, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(3).repeat_interleave(2)
    return model, x, y


def _operators() -> dict[str, CurvatureOperator]:
    """One instance of every operator class of the package (small dims)."""
    lin, relu, ce = _ufm(), _ufm("relu"), _ufm("relu", "ce")
    sym = torch.randn(7, 7, dtype=F64, generator=torch.Generator().manual_seed(3))
    net, x, y = _network()
    parts = gn_split_parts(relu, 2)
    return {
        "dense": DenseOperator(sym + sym.T),
        "hessian-fit": HessianOperator(relu, "weights+features", "mse"),
        "hessian-gn-ce": HessianOperator(ce, "layers:1,3", "ce", part="gn"),
        "hessian-residual": HessianOperator(relu, "weights", "mse", part="residual"),
        "hessian-total": HessianOperator(relu, "weights", "mse", part="total",
                                         lam_w=[0.01, 0.02, 0.005]),
        "linear-fit": LinearHessianOperator(lin, "features+weights", "mse"),
        "linear-ce-total": LinearHessianOperator(lin, "weights", "ce", part="total",
                                                 lam_w=[0.01, 0.02, 0.005]),
        "kronecker": KroneckerSpectrum(*layer_factors(lin, 2), shift=0.25, layer=2),
        "network-head": NetworkHessianOperator(net, x, y, "mse", "head", chunk=4),
        "gn-within": GNPartOperator(parts, "within"),
        "gn-class": GNPartOperator(parts, "class"),
    }  # fmt: skip


OPS = _operators()


@pytest.fixture(params=sorted(OPS))
def op(request: pytest.FixtureRequest) -> CurvatureOperator:
    return OPS[request.param]


def _scale(M: torch.Tensor) -> float:
    return max(float(M.abs().max()), 1e-300)


def test_every_operator_is_a_curvature_operator(op: CurvatureOperator) -> None:
    assert isinstance(op, CurvatureOperator)
    assert op.shape == (op.dim, op.dim) and op.dim > 0
    assert op.dtype == F64 and op.device.type == "cpu"
    assert type(op).__name__ in repr(op)


def test_dense_equals_matmat_on_the_identity(op: CurvatureOperator) -> None:
    ref = op.matmat(torch.eye(op.dim, dtype=F64))
    cols = op.dense_columns()
    assert torch.equal(cols, ref) or float((cols - ref).abs().max()) <= 1e-14 * _scale(ref)
    torch.testing.assert_close(op.dense_columns(chunk=3), ref, rtol=0, atol=1e-14 * _scale(ref))
    D = op.dense()
    assert D.shape == (op.dim, op.dim)
    torch.testing.assert_close(D, ref, rtol=0, atol=1e-13 * _scale(ref))
    torch.testing.assert_close(D, D.T, rtol=0, atol=1e-12 * _scale(ref))  # symmetric


def test_matmul_vector_and_block(op: CurvatureOperator) -> None:
    gen = torch.Generator().manual_seed(5)
    V = torch.randn(op.dim, 3, dtype=F64, generator=gen)
    AV = op.matmat(V)
    assert AV.shape == (op.dim, 3)
    torch.testing.assert_close(op @ V, AV, rtol=0, atol=1e-14 * _scale(AV))
    for j in range(3):
        one = op.matmat(V[:, j : j + 1])[:, 0]
        torch.testing.assert_close(op @ V[:, j], one, rtol=0, atol=0)
        torch.testing.assert_close(op.matvec(V[:, j]), one, rtol=0, atol=0)
        torch.testing.assert_close(one, AV[:, j], rtol=0, atol=1e-13 * _scale(AV))
    with pytest.raises(ValueError, match="vector"):
        op @ V.reshape(op.dim, 3, 1)
    with pytest.raises(ValueError, match="matmat expects"):
        op.matmat(torch.zeros(op.dim + 1, 2, dtype=F64))


def test_diagonal_trace_eigenvalues(op: CurvatureOperator) -> None:
    D = op.dense_columns()
    s = _scale(D)
    torch.testing.assert_close(op.diagonal(), D.diagonal(), rtol=0, atol=1e-13 * s)
    torch.testing.assert_close(CurvatureOperator.diagonal(op, chunk=2), D.diagonal(),
                               rtol=0, atol=1e-13 * s)  # fmt: skip
    assert op.trace() == pytest.approx(float(D.trace()), rel=1e-12, abs=1e-12 * s)
    ref = torch.linalg.eigvalsh(0.5 * (D + D.T)).flip(0)
    ev = op.eigenvalues()
    assert ev.shape == (op.dim,) and bool((ev[:-1] >= ev[1:]).all())
    torch.testing.assert_close(ev, ref, rtol=0, atol=1e-12 * s)
    torch.testing.assert_close(full_spectrum(op), ev, rtol=0, atol=0)


def test_apply_matrices_is_matmat_on_row_major_vec(op: CurvatureOperator) -> None:
    gen = torch.Generator().manual_seed(7)
    shape = op.P.shape[:1] + op.Q.shape[:1] if isinstance(op, KroneckerSpectrum) else (op.dim,)
    if isinstance(op, GNPartOperator):
        shape = op.parts.shape
    M = torch.randn(4, *shape, dtype=F64, generator=gen)
    ref = op.matmat(M.reshape(4, -1).T).T.reshape(M.shape)
    out = op.apply_matrices(M)
    assert out.shape == M.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13 * _scale(ref))


def test_dense_refuses_large_dims(op: CurvatureOperator) -> None:
    if isinstance(op, DenseOperator):
        return  # the matrix already exists
    with pytest.raises(ValueError, match="refusing to build a dense"):
        op.dense_columns(max_dim=op.dim - 1)


def test_kronecker_closed_forms_are_exact() -> None:
    ks = OPS["kronecker"]
    assert isinstance(ks, KroneckerSpectrum)
    torch.testing.assert_close(ks.eigenvalues(), ks.values(), rtol=0, atol=0)
    assert ks.trace() == pytest.approx(float(ks.dense().trace()), rel=1e-13)
    with pytest.raises(ValueError, match="refusing to build a dense"):
        ks.dense(max_dim=ks.dim - 1)


# ----------------------------------------------------------------------------- any subclass
class Diagonal(CurvatureOperator):
    """The smallest possible subclass: diag(d), nothing but matmat."""

    def __init__(self, d: torch.Tensor) -> None:
        super().__init__(d.numel(), d.dtype, d.device)
        self.d = d

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self._check_block(V)
        self.matvecs += V.shape[1]
        return self.d[:, None] * V


def test_solvers_accept_any_subclass() -> None:
    d = torch.cat([torch.full((4,), 3.0), torch.linspace(1e-3, 1.0, 60)]).to(F64)
    op = Diagonal(d)
    assert as_operator(op) is op
    res = top_eigenpairs(op, 4, block=6, tol=1e-10)
    assert res.all_converged
    torch.testing.assert_close(res.values, torch.full((4,), 3.0, dtype=F64), rtol=1e-12, atol=0)
    assert op.matvecs >= res.matvecs > 0
    torch.testing.assert_close(full_spectrum(op), d.sort(descending=True).values)
    assert count_outliers(full_spectrum(op), m=8) == 4
    nodes, weights = lanczos_quadrature(op, steps=10, probes=2)
    assert nodes.shape == (2, 10) and np.allclose(weights.sum(axis=1), 1.0)
    dens = slq_density(op, steps=30, probes=3)
    assert dens.mass(2.5, 3.5) == pytest.approx(4 / 64, abs=1e-8)
    torch.testing.assert_close(op.diagonal(), d, rtol=0, atol=0)
    assert op.trace() == pytest.approx(float(d.sum()))


def test_matrices_are_wrapped_and_other_objects_refused() -> None:
    A = torch.diag(torch.arange(1.0, 6.0, dtype=F64))
    assert isinstance(as_operator(A), DenseOperator)
    assert isinstance(as_operator(A.numpy()), DenseOperator)
    assert float(top_eigenpairs(A, 1).values[0]) == pytest.approx(5.0)

    class DuckTyped:  # has matmat and dim but is not a CurvatureOperator
        dim, dtype, device = 5, F64, torch.device("cpu")

        def matmat(self, V: torch.Tensor) -> torch.Tensor:
            return V

    with pytest.raises(TypeError, match="CurvatureOperator"):
        top_eigenpairs(DuckTyped(), 1)
    with pytest.raises(TypeError):
        CurvatureOperator(3, F64, "cpu")  # abstract: matmat is missing
