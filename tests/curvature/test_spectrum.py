"""The method choice of dufm_core.curvature.spectrum.layer_spectrum against dense float64
autograd layer Hessians: Kronecker for linear MSE, dense below ``dense_max``, block Krylov
above it; the same top eigenvalues, eigenvectors and products whichever path is taken."""

from __future__ import annotations

import pytest
import torch

from dufm_core.curvature import (
    DenseOperator,
    HessianOperator,
    KroneckerSpectrum,
    LayerSpectrum,
    LinearHessianOperator,
    layer_spectrum,
)
from dufm_core.curvature.spectrum import METHOD_DENSE, METHOD_KRONECKER
from tests.test_alignment import dense_layer_hessian, make_model

F64 = torch.float64
PARAMS = {"K": 3, "n": 4, "width": 6, "depth": 3, "lam_w": 0.01, "lam_h": 0.01}


def _check_against_dense(spec: LayerSpectrum, H: torch.Tensor, m: int,
                         shape: tuple[int, int]) -> None:
    ref = torch.linalg.eigvalsh(H).flip(0)
    scale = float(ref.abs().max())
    assert spec.values.shape == (m,) and spec.vectors.shape == (H.shape[0], m)
    torch.testing.assert_close(spec.values, ref[:m], rtol=0, atol=1e-9 * scale)
    # eigenvectors: H u = λ u and orthonormal
    R = H @ spec.vectors - spec.vectors * spec.values
    assert float(R.norm(dim=0).max()) <= 1e-8 * scale
    torch.testing.assert_close(spec.vectors.T @ spec.vectors, torch.eye(m, dtype=F64),
                               rtol=0, atol=1e-8)  # fmt: skip
    # the operator's matrix form is H on (d_out, d_in) matrices
    gen = torch.Generator().manual_seed(0)
    M = torch.randn(5, *shape, dtype=F64, generator=gen)  # a stack of (d_out, d_in) matrices
    HM = (M.reshape(5, -1) @ H).reshape(M.shape)
    torch.testing.assert_close(spec.operator.apply_matrices(M), HM, rtol=0, atol=1e-12 * scale)
    if spec.exact_spectrum:
        torch.testing.assert_close(spec.spectrum, ref, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_linear_mse_is_kronecker(l: int) -> None:
    model, cfg = make_model(PARAMS, init="random", seed=4)
    spec = layer_spectrum(model, l, "mse")
    assert spec.method == METHOD_KRONECKER and isinstance(spec.operator, KroneckerSpectrum)
    assert spec.exact_spectrum and spec.converged and spec.residual_max == 0.0
    m = min(cfg.K**2 + cfg.K, spec.operator.dim)
    _check_against_dense(spec, dense_layer_hessian(model, l), m, model.weights[l - 1].shape)


@pytest.mark.parametrize(("activation", "loss"), [("relu", "mse"), ("linear", "ce"),
                                                  ("relu", "ce")])  # fmt: skip
def test_small_layers_are_dense(activation: str, loss: str) -> None:
    model, cfg = make_model(PARAMS, init="random", seed=4, activation=activation, loss=loss)
    for l in range(1, cfg.depth + 1):
        spec = layer_spectrum(model, l, loss)
        assert spec.method == METHOD_DENSE and isinstance(spec.operator, DenseOperator)
        assert spec.exact_spectrum and spec.converged and spec.layer == l
        m = min(cfg.K**2 + cfg.K, spec.operator.dim)
        _check_against_dense(spec, dense_layer_hessian(model, l, loss), m,
                             model.weights[l - 1].shape)


@pytest.mark.parametrize(("activation", "loss", "kind"), [
    ("relu", "mse", HessianOperator), ("linear", "ce", LinearHessianOperator)])  # fmt: skip
def test_large_layers_are_block_krylov(activation: str, loss: str, kind: type) -> None:
    model, _ = make_model(PARAMS, init="random", seed=4, activation=activation, loss=loss)
    l = 2  # 6 × 6 = 36 weights > dense_max = 20
    spec = layer_spectrum(model, l, loss, m=9, dense_max=20)
    assert spec.method.startswith("block-krylov(b=12, which=LA) on Hessian–matrix products (")
    assert isinstance(spec.operator, kind)
    assert not spec.exact_spectrum and spec.spectrum.numel() == 9
    assert spec.converged and spec.residual_max is not None and spec.residual_max < 1e-8
    _check_against_dense(spec, dense_layer_hessian(model, l, loss), 9, model.weights[l - 1].shape)
