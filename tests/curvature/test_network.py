"""The whole-network fit Hessian (curvature/network.py) against float64 references.

A ResNet-20 of base width 1 (feature dimension 4) keeps the parameter count near 1 200 so that
dense references are affordable: the operator's products must equal reverse-over-reverse
products of the same eval-mode loss, its head block must equal the HeadView's exact operator,
and nothing may depend on the batch or chunk sizes.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.func import functional_call

from dufm_core.config import RunConfig
from dufm_core.curvature import hessian_operator
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.models import fit_term
from dufm_core.network_report import network_full
from dufm_core.networks import HeadView, RealNetwork, init_network

F64 = torch.float64


def _tiny(K: int = 3, n: int = 4, activation: str = "linear", seed: int = 0):
    """A base-width-1 ResNet-20 + 2-layer head with non-trivial BatchNorm running statistics,
    left in train mode (the operator must use eval mode regardless)."""
    torch.manual_seed(seed)
    model = RealNetwork(1, [4, 5, K], activation, base_width=1, dtype=F64)
    init_network(model, 1.0, torch.Generator().manual_seed(seed))
    x = torch.randn(K * n, 1, 8, 8, dtype=F64)
    model.train()
    with torch.no_grad():  # move the running statistics away from (0, 1)
        model(x)
        model(2 * x + 1)
    y = torch.arange(K).repeat_interleave(n)
    return model, x, y


def _reference_hvp(model, x, y, loss, names, v):
    """H v by double backward through the eval-mode network (an independent reference)."""
    named = dict(model.named_parameters())
    theta = [named[nm].detach().clone() for nm in names]
    flat = torch.cat([t.reshape(-1) for t in theta])

    def f(w: torch.Tensor) -> torch.Tensor:
        state, s = {}, 0
        for nm, t in zip(names, theta, strict=True):
            state[nm] = w[s : s + t.numel()].reshape(t.shape)
            s += t.numel()
        full = {**{k: p.detach() for k, p in named.items()}, **state,
                **dict(model.named_buffers())}
        training = model.training
        model.eval()
        try:
            return fit_term(functional_call(model, full, (x,)), y, loss)
        finally:
            model.train(training)

    return torch.autograd.functional.hvp(f, flat, v)[1]


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_all_parameter_products_match_double_backward(loss: str) -> None:
    model, x, y = _tiny(activation="relu")
    op = NetworkHessianOperator(model, x, y, loss, "all", batch_size=5, chunk=3)
    assert op.dim == sum(p.numel() for p in model.parameters())
    V = torch.randn(op.dim, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    HV = op.matmat(V)
    for j in range(V.shape[1]):
        ref = _reference_hvp(model, x, y, loss, op.names, V[:, j])
        assert torch.allclose(HV[:, j], ref, rtol=1e-10, atol=1e-11 * float(ref.abs().max()))
    # symmetric: uᵀ H v = vᵀ H u
    assert float(V[:, 0] @ HV[:, 1]) == pytest.approx(float(V[:, 1] @ HV[:, 0]), rel=1e-10)
    assert model.training  # the caller's mode is restored


def test_batch_and_chunk_sizes_do_not_change_products() -> None:
    model, x, y = _tiny()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 5, dtype=F64)
    a = NetworkHessianOperator(model, x, y, "mse", "all", batch_size=12, chunk=5).matmat(V)
    b = NetworkHessianOperator(model, x, y, "mse", "all", batch_size=5, chunk=2).matmat(V)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-13 * float(a.abs().max()))


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_head_block_is_the_head_views_exact_operator(activation: str) -> None:
    model, x, y = _tiny(activation=activation)
    op = NetworkHessianOperator(model, x, y, "mse", "head", batch_size=7)
    view = HeadView.from_network(model, x, labels=y, dtype=F64)
    ref = hessian_operator(view, "weights", loss="mse", part="fit")
    eye = torch.eye(op.dim, dtype=F64)
    dense = op.matmat(eye)
    assert torch.allclose(dense, ref.matmat(eye), rtol=1e-10, atol=1e-13)
    # and both equal the Hessian of the eval-mode loss itself
    names = op.names
    ref_col = _reference_hvp(model, x, y, "mse", names, eye[:, 3])
    assert torch.allclose(dense[:, 3], ref_col, rtol=1e-10, atol=1e-13)


def test_network_full_top_values_match_dense_spectrum() -> None:
    model, x, y = _tiny(K=2, n=3)
    op = NetworkHessianOperator(model, x, y, "mse", "all", batch_size=6, chunk=64)
    evals = torch.linalg.eigvalsh(op.matmat(torch.eye(op.dim, dtype=F64))).flip(0)
    cfg = RunConfig(K=2, n=3, width=[4, 5], depth=2, loss="mse")
    data = SimpleNamespace(x_train=x, y_train=y)
    out = network_full(model, cfg, data, tol=1e-9)
    assert out["params"] == "all" and out["dim"] == op.dim and out["predicted"] == []
    assert out["converged"]
    top = torch.tensor(out["top"][:4], dtype=F64)
    assert torch.allclose(top, evals[:4], rtol=1e-7)


def test_bad_arguments_are_refused() -> None:
    model, x, y = _tiny()
    with pytest.raises(ValueError, match=r"params must be one of head \| all"):
        NetworkHessianOperator(model, x, y, params="weights")
    with pytest.raises(ValueError, match=r"loss must be mse \| ce"):
        NetworkHessianOperator(model, x, y, loss="hinge")
    with pytest.raises(ValueError, match="same N"):
        NetworkHessianOperator(model, x, y[:-1])
    op = NetworkHessianOperator(model, x, y, params="head")
    with pytest.raises(ValueError, match="rows"):
        op.matmat(torch.zeros(op.dim + 1, 1, dtype=F64))
