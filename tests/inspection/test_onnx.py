"""ONNX graphs: a small CNN exported by torch.onnx gives the report its features file gives
(1e-10); hostile graphs (external data, unknown operators, lying sizes) are refused in one
line. The export needs the ``onnx`` package (a dev dependency); the refusals do not."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core.inspection.command import run_inspect
from dufm_core.inspection.loading import InspectError
from dufm_core.inspection.onnx_graph import load_onnx
from tests.inspection.test_report import _close, _numbers


# --------------------------------------------------------------------------- protobuf writer
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def _f(num: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _tensor(name: str, dims: list[int], raw: bytes, extra: bytes = b"") -> bytes:
    return (b"".join(_f(1, d) for d in dims) + _f(2, 11) + _f(8, name.encode())
            + _f(9, raw) + extra)


def _model(nodes: list[bytes], inits: list[bytes]) -> bytes:
    graph = (b"".join(_f(1, n) for n in nodes) + b"".join(_f(5, t) for t in inits)
             + _f(11, _f(1, b"x")) + _f(12, _f(1, b"y")))
    return _f(1, 8) + _f(7, graph)


def _node(op: str, inputs: list[str], outputs: list[str]) -> bytes:
    return (b"".join(_f(1, i.encode()) for i in inputs)
            + b"".join(_f(2, o.encode()) for o in outputs) + _f(4, op.encode()))


def _gemm_model(tmp_path: Path, W: bytes, dims: list[int], extra: bytes = b"",
                op: str = "MatMul") -> Path:
    p = tmp_path / "g.onnx"
    p.write_bytes(_model([_node(op, ["x", "W"], ["y"])], [_tensor("W", dims, W, extra)]))
    return p


def test_hand_written_graph_runs(tmp_path: Path) -> None:
    W = np.arange(6, dtype="<f8").reshape(3, 2)  # MatMul weight (in 3, out 2)
    m = load_onnx(_gemm_model(tmp_path, W.tobytes(), [3, 2]))
    x = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(m(x), x @ torch.from_numpy(W), atol=1e-14)


def test_external_data_refused(tmp_path: Path) -> None:
    ext = _f(13, _f(1, b"location") + _f(2, b"../../../etc/passwd")) + _f(14, 1)
    with pytest.raises(InspectError, match="external data") as e:
        load_onnx(_gemm_model(tmp_path, b"", [3, 2], ext))
    assert "\n" not in str(e.value)


def test_lying_size_and_unknown_operator_refused(tmp_path: Path) -> None:
    with pytest.raises(InspectError, match="declares shape"):
        load_onnx(_gemm_model(tmp_path, b"\0" * 8, [1000000, 1000000]))
    with pytest.raises(InspectError, match="unsupported ONNX operators Loop"):
        load_onnx(_gemm_model(tmp_path, struct.pack("<6d", *range(6)), [3, 2], op="Loop"))
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 40)
    with pytest.raises(InspectError):
        load_onnx(tmp_path / "junk.onnx")


def test_exported_cnn_matches_features_file(tmp_path: Path, digits) -> None:
    pytest.importorskip("onnx")
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 12),
        torch.nn.ReLU(), torch.nn.Linear(12, 10)).double()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = torch.optim.Adam(net.parameters(), 3e-2)
        for _ in range(25):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(digits.x_train), digits.y_train).backward()
            opt.step()
        net.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (digits.x_train[:2],), str(tmp_path / "cnn.onnx"),
                              dynamo=False, input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}})
    finally:
        torch.set_num_threads(threads)
    data = tmp_path / "data.npz"
    np.savez(data, x=digits.x_train.numpy(), y=digits.y_train.numpy(),
             x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    args = {"head": 2, "dataset": None, "data_dir": "", "loss": "ce", "lam_w": None,
            "lam_h": None, "full": False}
    a = run_inspect(str(tmp_path / "cnn.onnx"), None, data=str(data), features=None,
                    **args).to_json()
    with torch.no_grad():
        f, ft = net[:5](digits.x_train), net[:5](digits.x_test)
    feats = tmp_path / "features.npz"
    np.savez(feats, features=f.numpy(), labels=digits.y_train.numpy(), features_test=ft.numpy(),
             labels_test=digits.y_test.numpy(),
             W1=net[5].weight.detach().numpy(), b1=net[5].bias.detach().numpy(),
             W2=net[7].weight.detach().numpy(), b2=net[7].bias.detach().numpy())
    c = run_inspect(None, None, data=None, features=str(feats), **args).to_json()
    _close(_numbers(a), _numbers(c))
    assert [r["layer"].split(" ")[0] for r in a["collapse"]["train"]][:1] == ["features"]


def test_one_mlp_as_state_dict_and_onnx_gives_one_report(tmp_path: Path, digits, mlp) -> None:
    pytest.importorskip("onnx")
    x = digits.x_train.reshape(digits.N, -1)
    xt = digits.x_test.reshape(len(digits.y_test), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (x[:2],), str(tmp_path / "mlp.onnx"), dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}})
    torch.save(mlp.state_dict(), tmp_path / "mlp.pt")
    data = tmp_path / "flat.npz"
    np.savez(data, x=x.numpy(), y=digits.y_train.numpy(), x_test=xt.numpy(),
             y_test=digits.y_test.numpy())
    args = {"head": 2, "dataset": None, "data_dir": "", "loss": "ce", "lam_w": None,
            "lam_h": None, "full": False, "data": str(data), "features": None}
    a = run_inspect(str(tmp_path / "mlp.pt"), "mlp:64-12-10-10", **args).to_json()
    b = run_inspect(str(tmp_path / "mlp.onnx"), None, **args).to_json()
    _close(_numbers(a), _numbers(b))
    assert [r["layer"] for r in a["collapse"]["train"]] == [
        r["layer"] for r in b["collapse"]["train"]]


def test_onnx_full_hessian_covers_the_stem_weights(tmp_path: Path, digits) -> None:
    """``--full`` of an exported CNN is over every weight the framework trains (Conv, BN scale
    and shift, Linear), not the running statistics: the same dimension and the same top
    eigenvalues as the whole-network Hessian of the torch module itself."""
    pytest.importorskip("onnx")
    from dufm_core.curvature.eigensolvers import top_eigenpairs
    from dufm_core.curvature.network import NetworkHessianOperator
    from dufm_core.inspection.report import whole_network_top

    torch.manual_seed(2)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10)).double()
    with torch.no_grad():  # non-trivial running statistics: they must stay data
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # without constant folding, so BatchNorm is not folded into the convolution
        torch.onnx.export(net, (digits.x_train[:2],), str(tmp_path / "cnn.onnx"), dynamo=False,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}}, do_constant_folding=False)
    model = load_onnx(tmp_path / "cnn.onnx")
    x, y = digits.x_train[:40].double(), digits.y_train[:40]
    out = whole_network_top(model, x, y, "ce")
    n_weights = sum(p.numel() for p in net.parameters())  # 30 + 6 + 40 = 76
    assert out["dim"] == n_weights

    class Wrapped(torch.nn.Module):  # the torch net as the operator expects a network
        K, depth = 10, 1

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return self.net(inp)

    ref = NetworkHessianOperator(Wrapped(), x, y, "ce", "all")
    assert ref.dim == n_weights
    top = top_eigenpairs(ref, len(out["top"]), tol=1e-10).values
    np.testing.assert_allclose(out["top"][:5], top[:5].numpy(), rtol=1e-6)
