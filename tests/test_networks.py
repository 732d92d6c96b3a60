"""ResNet-20 + head (dufm_core.networks): shapes on every data format, feature extraction with
BatchNorm in eval mode, and the HeadView's layer Hessians against dense autograd references
computed through the real network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from dufm_core.config import RunConfig
from dufm_core.curvature import HessianOperator, hessian_operator
from dufm_core.data import load_data
from dufm_core.models import DeepUFM, fit_term
from dufm_core.networks import (
    HeadView,
    RealNetwork,
    ResNet20,
    build_network,
    eval_mode,
    extract_features,
    init_network,
)
from dufm_core.runtime import cpu_threads
from tests.test_data import write_cifar, write_mnist


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """These tiny networks run fastest on one thread, and on a shared 2-core machine a
    two-thread OpenMP team stalls whenever the other core is busy (see dufm_core/runtime.py)."""
    with cpu_threads(1):
        yield


def _cfg(**kw) -> RunConfig:
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 2, **kw})
    cfg.validate()
    return cfg


def test_resnet20_architecture() -> None:
    net = ResNet20(3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19  # + the first head layer = 20 weighted layers
    assert all(c.bias is None for c in convs)
    # option-A shortcuts: no projection parameters; the classic 0.27 M parameters
    assert sum(p.numel() for p in net.parameters()) == 269_072
    assert [s[0].conv1.out_channels for s in net.stages] == [16, 32, 64]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 64)


@pytest.mark.parametrize("dataset", ["digits", "mnist", "fashion-mnist", "cifar10"])
def test_forward_backward_on_every_data_format(tmp_path: Path, dataset: str) -> None:
    if dataset == "mnist":
        write_mnist(tmp_path / "MNIST" / "raw", per_class=2, gz=True)
    elif dataset == "fashion-mnist":
        write_mnist(tmp_path / "FashionMNIST" / "raw", per_class=2, gz=False)
    elif dataset == "cifar10":
        write_cifar(tmp_path / "cifar-10-batches-py", m=10)
    cfg = _cfg(dataset=dataset, data_dir=str(tmp_path) if dataset != "digits" else "")
    data = load_data(cfg)
    model = build_network(cfg)
    expect = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}.get(dataset, (1, 28, 28))
    assert data.input_shape == expect and model.in_channels == expect[0]
    h = model.features(data.x_train)
    assert h.shape == (20, 64) and bool((h >= 0).all())  # after the last ReLU
    logits = model(data.x_train)
    assert logits.shape == (20, 10) and logits.dtype == torch.float32
    loss = fit_term(logits, data.y_train, "mse")
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(float(g.abs().sum()) > 0 for g in grads)


def test_head_api_and_width_rules() -> None:
    cfg = _cfg(width="64,32,16", activation="relu")
    model = build_network(cfg)
    assert [tuple(w.shape) for w in model.head_weights] == [(32, 64), (16, 32), (10, 16)]
    assert model.weights is model.head_weights and model.dims == [64, 32, 16, 10]
    x = torch.randn(5, 1, 8, 8, dtype=torch.float32)
    h = model.features(x)
    z = torch.relu(torch.relu(h @ model.head_weights[0].T) @ model.head_weights[1].T)
    assert torch.allclose(model(x), z @ model.head_weights[2].T, atol=1e-6)
    with pytest.raises(ValueError, match="feature dimension 64"):
        RealNetwork(1, [32, 10])


def test_seeded_init_is_reproducible_across_dtypes() -> None:
    a = build_network(_cfg(seed=5))
    b = build_network(_cfg(seed=5, dtype="float64"))
    c = build_network(_cfg(seed=6))
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb.float()), name
        if "conv" in name or "head" in name:
            assert not torch.equal(pa, pc), name


def _trained_tiny(activation: str = "linear", dtype=torch.float64) -> tuple[RealNetwork, dict]:
    """A tiny network (base width 2 → d_1 = 8) with moved BatchNorm statistics, K = 3, n = 4."""
    torch.manual_seed(0)
    model = RealNetwork(1, [8, 6, 3], activation, base_width=2, dtype=dtype)
    init_network(model, 1.0, torch.Generator().manual_seed(1))
    x = torch.randn(12, 1, 8, 8, dtype=dtype)
    y = torch.arange(3).repeat_interleave(4)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # a few train-mode passes move the running statistics off 0 / 1
            model(x + 0.3)
    return model, {"x": x, "y": y}


def test_extract_features_eval_mode_and_layout() -> None:
    model, d = _trained_tiny()
    assert model.training
    H, y = extract_features(model, d["x"], batch_size=5, labels=d["y"])
    assert H.shape == (8, 12) and y is d["y"]
    assert model.training  # the flag is restored
    with eval_mode(model):
        ref = model.features(d["x"]).T
    assert torch.allclose(H, ref, atol=1e-12)  # eval mode, independent of the batch size
    train_mode = model.features(d["x"]).T.detach()
    assert not torch.allclose(H, train_mode, atol=1e-3)


def test_head_view_is_a_deep_ufm() -> None:
    model, d = _trained_tiny("relu")
    view = HeadView.from_network(model, d["x"], batch_size=7, labels=d["y"])
    assert isinstance(view, DeepUFM) and view.K == 3 and view.n == 4 and view.dims == [8, 6, 3]
    assert torch.equal(view.labels, d["y"])
    with eval_mode(model), torch.no_grad():
        ref = model(d["x"])
    assert torch.allclose(view(), ref, atol=1e-12)
    assert torch.allclose(view(torch.tensor([0, 5])), ref[[0, 5]], atol=1e-12)
    feats = view.layer_features()
    assert len(feats.pre) == 3 and feats.post[1].shape == (6, 12)  # H_1, σ(H_2), Z
    with pytest.raises(ValueError, match="class-ordered"):
        HeadView(view.features.detach(), [w.detach() for w in view.weights], d["y"].flip(0), "relu")
    assert view.ufm_lam_h(1e-6) == pytest.approx(1e-6 / 12)


def _dense_reference(model: RealNetwork, d: dict, layer: int, loss: str) -> torch.Tensor:
    """The fit-term Hessian w.r.t. W_layer through the real network (inputs → backbone in eval
    mode → head), by torch.autograd.functional.hessian; row-major vec as the operators."""
    name = f"head_weights.{layer - 1}"
    W0 = dict(model.named_parameters())[name].detach().clone()

    def f(w: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {name: w.reshape(W0.shape)}, (d["x"],), strict=False)
        return fit_term(logits, d["y"], loss)

    with eval_mode(model):
        H = torch.autograd.functional.hessian(f, W0.reshape(-1))
    return H


@pytest.mark.parametrize(
    ("activation", "loss"), [("linear", "mse"), ("linear", "ce"), ("relu", "mse"), ("relu", "ce")]
)
@pytest.mark.parametrize("layer", [1, 2])
def test_head_view_layer_hessian_matches_dense_reference(activation, loss, layer) -> None:
    model, d = _trained_tiny(activation)
    view = HeadView.from_network(model, d["x"], labels=d["y"])
    op = hessian_operator(view, f"layer:{layer}", loss=loss, part="fit")
    if activation == "linear":
        assert type(op).__name__ == "LinearHessianOperator"  # closed-form products
    else:
        assert isinstance(op, HessianOperator)
    H = op.dense()
    ref = _dense_reference(model, d, layer, loss)
    assert H.shape == ref.shape
    assert torch.allclose(H, ref, rtol=1e-9, atol=1e-11), float((H - ref).abs().max())
