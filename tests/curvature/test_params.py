"""Parameter-set specs and the row-major flat layout."""

from __future__ import annotations

import pytest
import torch

from dufm_core.config import RunConfig
from dufm_core.curvature.params import ParamSet, flatten, param_set, unflatten
from dufm_core.models import build_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    cfg = RunConfig(K=3, n=2, width=[4, 5, 6], depth=3, seed=0)
    cfg.validate()
    return build_model(cfg)


def test_specs_resolve_in_order(model: torch.nn.Module) -> None:
    assert param_set(model, "layer:2").names == ("weights.1",)
    assert param_set(model, "layers:3,1").names == ("weights.2", "weights.0")
    assert param_set(model, "weights").names == ("weights.0", "weights.1", "weights.2")
    assert param_set(model, "weights+features").names[-1] == "features"
    assert param_set(model, "features+weights").names[0] == "features"
    assert param_set(model, "features").names == ("features",)
    ps = param_set(model, "weights+features")
    # W_1 (5×4), W_2 (6×5), W_3 (3×6), H_1 (4×6)
    assert ps.shapes == ((5, 4), (6, 5), (3, 6), (4, 6))
    assert ps.sizes == (20, 30, 18, 24)
    assert ps.dim == 92
    assert ps.offsets == (0, 20, 50, 68, 92)
    assert ps.slice_of("weights.1") == slice(20, 50)


@pytest.mark.parametrize(
    "spec", ["layer:0", "layer:4", "layers:1,1", "layers:", "layer:1,2", "layer:x", "bias", 3]
)
def test_bad_specs_name_the_spec_and_forms(model: torch.nn.Module, spec: object) -> None:
    with pytest.raises(ValueError) as err:
        param_set(model, spec)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "allowed" in msg and "layer:L" in msg
    assert repr(spec) in msg or str(spec) in msg


def test_flatten_is_row_major(model: torch.nn.Module) -> None:
    ps = param_set(model, "layer:1")
    W = model.weights[0].detach()
    vec = ps.vector(model)
    assert torch.equal(vec, W.reshape(-1))
    a, b = 3, 2  # entry (a, b) sits at index a·d_in + b
    assert vec[a * W.shape[1] + b] == W[a, b]
    back = ps.unflatten(vec)
    assert torch.equal(back[0], W)


def test_unflatten_block_and_roundtrip(model: torch.nn.Module) -> None:
    ps = param_set(model, "weights+features")
    V = torch.randn(ps.dim, 5, dtype=torch.float64)
    parts = unflatten(V, ps)
    assert [tuple(p.shape) for p in parts] == [(5, *s) for s in ps.shapes]
    # column j of V is the concatenation of the j-th matrices, row-major
    j = 3
    assert torch.equal(flatten([p[j] for p in parts]), V[:, j])
    with pytest.raises(ValueError):
        unflatten(torch.zeros(ps.dim + 1), ps)
    with pytest.raises(ValueError):
        ps.flatten([torch.zeros(2, 2)] * 4)


def test_union_and_index(model: torch.nn.Module) -> None:
    a = param_set(model, "layer:3")
    b = param_set(model, "layers:1,3")
    u = a.union(b)
    assert u.names == ("weights.2", "weights.0")
    idx = b.index_in(u)
    # b = [W_1, W_3] inside u = [W_3, W_1]
    assert torch.equal(idx[:20], torch.arange(18, 38))
    assert torch.equal(idx[20:], torch.arange(0, 18))
    assert isinstance(param_set(model, u), ParamSet)
