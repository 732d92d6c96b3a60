"""Signals through the layers (dufm_core.propagation) against the model's own forward pass and
autograd: features forward, the downstream products A^{(l+1)}, cotangents back."""

from __future__ import annotations

import pytest
import torch

from dufm_core.config import RunConfig
from dufm_core.models import build_model
from dufm_core.propagation import backprop, check_layer, downstream_product, layer_inputs

F64 = torch.float64


def _model(activation: str, dtype: str = "float64"):
    cfg = RunConfig(K=3, n=4, width=[5, 6, 4], depth=3, activation=activation, seed=2,
                    dtype=dtype)  # fmt: skip
    cfg.validate()
    return build_model(cfg)


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_layer_inputs_are_the_forward_pass(activation: str) -> None:
    model = _model(activation, "float32")
    pre, post = layer_inputs(model)
    assert len(pre) == model.depth + 1 and len(post) == model.depth
    assert all(t.dtype == F64 for t in pre + post)
    torch.testing.assert_close(pre[-1], model().detach().double().T)
    for j in range(model.depth):
        torch.testing.assert_close(pre[j + 1], model.weights[j].detach().double() @ post[j],
                                   rtol=1e-6, atol=1e-6)  # fmt: skip


def test_downstream_product_gives_the_logits() -> None:
    model = _model("linear")
    _, post = layer_inputs(model)
    K = model.K
    torch.testing.assert_close(downstream_product(model, model.depth), torch.eye(K, dtype=F64))
    for l in range(1, model.depth + 1):
        A = downstream_product(model, l)
        assert A.shape == (K, model.weights[l - 1].shape[0]) and A.dtype == F64
        Z = A @ model.weights[l - 1].detach() @ post[l - 1]  # Z = A^{(l+1)} W_l H_l
        torch.testing.assert_close(Z, model().detach().T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_backprop_is_the_transposed_jacobian(activation: str) -> None:
    """δ = backprop(E) equals the vector–Jacobian product of the logits w.r.t. H_{l+1}
    (autograd, whose σ'(0) = 0 is tau = 0)."""
    model = _model(activation)
    pre, _ = layer_inputs(model)
    gen = torch.Generator().manual_seed(3)
    E = torch.randn(model.K, model.N, dtype=F64, generator=gen)
    Ws = [W.detach() for W in model.weights]
    for l in range(1, model.depth + 1):
        H = pre[l].clone().requires_grad_(True)  # H_{l+1}, input of the rest of the network
        h = H
        for j in range(l, model.depth):
            h = Ws[j] @ (torch.relu(h) if activation == "relu" else h)
        (ref,) = torch.autograd.grad((h * E).sum(), H)
        torch.testing.assert_close(backprop(model, l, E), ref, rtol=1e-12, atol=1e-14)


def test_check_layer() -> None:
    model = _model("linear")
    check_layer(model, 1)
    for bad in (0, model.depth + 1, 1.5, True):
        with pytest.raises(ValueError, match="layer l must be an integer"):
            check_layer(model, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer l"):
        downstream_product(model, 0)
