"""Architectures and the safe readers: names, wrappers, refusals (one line, nothing run)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core.inspection.architectures import ArchitectureError, parse_architecture
from dufm_core.inspection.loading import (
    InspectError,
    load_data_file,
    load_features,
    load_model,
    read_state_dict,
)
from dufm_core.networks import RealNetwork
from tests.inspection.conftest import write_safetensors

MLP = "mlp:64-12-10-10"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_parse_architecture_names_and_refusals() -> None:
    assert parse_architecture("mlp:4-3-2").dims == (4, 3, 2)
    assert parse_architecture("resnet20:relu").activation == "relu"
    with pytest.raises(ArchitectureError, match="known: mlp:D0-D1-…-K, resnet20"):
        parse_architecture("vgg16")
    with pytest.raises(ArchitectureError, match="at least two sizes"):
        parse_architecture("mlp:4")
    with pytest.raises(ArchitectureError, match="at least 2"):
        parse_architecture("mlp:4-1")


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module", "nested"])
def test_state_dict_wrappers(tmp_path: Path, mlp, wrap: str) -> None:
    sd = mlp.state_dict()
    obj = {
        "plain": sd, "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {}},
        "module": {f"module.{k}": v for k, v in sd.items()},
        "nested": {"checkpoint": 1, "model": {"state_dict": sd}},
    }[wrap]
    torch.save(obj, tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", MLP)
    x = torch.randn(5, 64, dtype=torch.float64)
    assert torch.allclose(model(x), mlp(x), rtol=0, atol=1e-12)


def test_safetensors_state_dict_and_resnets(tmp_path: Path, mlp) -> None:
    p = write_safetensors(tmp_path / "m.safetensors", mlp.state_dict())
    x = torch.randn(3, 64, dtype=torch.float64)
    assert torch.allclose(read_state_dict(p, parse_architecture(MLP))(x), mlp(x), atol=1e-12)
    # ResNet-20 as trained here, with a two-layer ReLU head and a small base width
    net = RealNetwork(1, [16, 7, 10], "relu", base_width=4, dtype=torch.float64).eval()
    with torch.no_grad():
        for w in net.head_weights:
            w.normal_()
    torch.save(net.state_dict(), tmp_path / "r20.pt")
    loaded = load_model(tmp_path / "r20.pt", "resnet20:relu")
    img = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert torch.allclose(loaded(img), net(img), atol=1e-10)


def test_resnet18_round_trip(tmp_path: Path) -> None:
    arch = parse_architecture("resnet18")
    with torch.device("cpu"):
        from dufm_core.inspection.architectures import ResNet18

        net = ResNet18(3, 10, width=4).double().eval()
    assert "layer2.0.shortcut.0.weight" in net.state_dict() and "linear.weight" in net.state_dict()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "r18.pt")
    loaded = read_state_dict(tmp_path / "r18.pt", arch)
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    assert torch.allclose(loaded(img), net(img), atol=1e-10)


def test_missing_unexpected_and_lying_shapes(tmp_path: Path, mlp) -> None:
    sd = dict(mlp.state_dict())
    torch.save({k: v for k, v in sd.items() if k != "4.bias"}, tmp_path / "a.pt")
    with pytest.raises(InspectError) as e:
        load_model(tmp_path / "a.pt", MLP)
    assert "missing '4.bias'" in _one_line(e)
    torch.save({**sd, "extra.weight": torch.zeros(2)}, tmp_path / "b.pt")
    with pytest.raises(InspectError, match=r"unexpected 'extra\.weight'"):
        load_model(tmp_path / "b.pt", MLP)
    with pytest.raises(InspectError, match=r"'2.weight' has shape \[10, 12\]; --arch "
                                           r"mlp:64-12-9-10 needs \[9, 12\]"):
        load_model(_save(tmp_path, sd), "mlp:64-12-9-10")


def _save(tmp_path: Path, sd: dict) -> Path:
    torch.save(sd, tmp_path / "c.pt")
    return tmp_path / "c.pt"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/dufm_inspect_pwned",))


def test_pickle_payload_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pt"
    torch.save({"0.weight": _Payload()}, p)
    with pytest.raises(InspectError) as e:
        load_model(p, "mlp:2-2")
    assert "refused" in _one_line(e) and not Path("/tmp/dufm_inspect_pwned").exists()
    p.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(InspectError, match="refused"):
        load_model(p, "mlp:2-2")
    assert not Path("/tmp/dufm_inspect_pwned").exists()


def test_safetensors_lying_and_huge_sizes(tmp_path: Path) -> None:
    p = tmp_path / "lie.safetensors"
    header = {"0.weight": {"dtype": "F64", "shape": [2, 2], "data_offsets": [0, 32]},
              "0.bias": {"dtype": "F64", "shape": [2], "data_offsets": [32, 48]}}
    # declared data section longer than the file: refused before anything is read
    head = json.dumps(header).encode()
    p.write_bytes(len(head).to_bytes(8, "little") + head + b"\0" * 16)
    with pytest.raises(InspectError, match="truncated"):
        load_model(p, "mlp:2-2")
    # a header that declares an enormous size
    p.write_bytes((10**15).to_bytes(8, "little") + b"{}")
    with pytest.raises(InspectError, match="declares"):
        load_model(p, "mlp:2-2")
    # a consistent file whose tensor is huge but whose shape does not fit the architecture
    big = {"0.weight": {"dtype": "F64", "shape": [10**6, 10**6], "data_offsets": [0, 8]}}
    head = json.dumps(big).encode()
    p.write_bytes(len(head).to_bytes(8, "little") + head + b"\0" * 8)
    with pytest.raises(InspectError):
        load_model(p, "mlp:2-2")


def test_huge_architecture_over_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUFM_MEMORY_CAP", "1M")
    sd = {"0.weight": torch.zeros(300, 600, dtype=torch.float64),
          "0.bias": torch.zeros(300, dtype=torch.float64)}
    p = write_safetensors(tmp_path / "big.safetensors", sd)
    with pytest.raises(InspectError, match="memory cap"):
        load_model(p, "mlp:600-300")
    torch.save(sd, tmp_path / "big.pt")  # memory-mapped: refused from its shapes
    with pytest.raises(InspectError, match="memory cap"):
        load_model(tmp_path / "big.pt", "mlp:600-300")


def test_npz_files(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((4, 3)), y=np.array([0, 1, 2, 3]))
    with pytest.raises(InspectError, match=r"y must be in 0..2"):
        load_data_file(p, 3)
    np.savez(p, x=np.zeros((4, 3)), y=np.array([0, 1, 1]))
    with pytest.raises(InspectError, match="one label per sample"):
        load_data_file(p, 3)
    np.savez(p, x=np.array([object(), 1], dtype=object), y=np.array([0, 1]))
    with pytest.raises(InspectError, match="never unpickled"):
        load_data_file(p, 3)
    np.savez(p, features=np.zeros((4, 3)), labels=np.array([0, 1, 0, 1]), W1=np.zeros((5, 4)))
    with pytest.raises(InspectError, match="input size must be 3"):
        load_features(p)
    np.savez(p, features=np.zeros((4, 3)), labels=np.array([0, 1, 0, 1]), W1=np.zeros((2, 3)),
             W3=np.zeros((2, 2)))
    with pytest.raises(InspectError, match="no gap"):
        load_features(p)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InspectError, match=r"not an \.npz"):
        load_data_file(tmp_path / "bad.npz", 3)


# ------------------------------------- the hostile files of tests/test_checkpoints.py, here too
def _lying(path: Path, header: object, body: bytes = bytes(24)) -> Path:
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + body)
    return path


@pytest.mark.parametrize("case", ["list", "nested", "negative", "overflow", "past_end", "overlap",
                                  "dtype", "meta_list"])
def test_safetensors_headers_that_lie_are_one_line(tmp_path: Path, case: str) -> None:
    """The lying headers that a checkpoint refuses (test_checkpoints) are refused the same way,
    in one line, when inspected as a state dict: both go through read_safetensors_header."""
    w = {"dtype": "F64", "shape": [2, 2], "data_offsets": [0, 32]}
    header = {
        "list": [1, 2, 3],
        "nested": json.loads("[" * 50 + "]" * 50),
        "negative": {"0.weight": {**w, "shape": [-1, 2]}},
        "overflow": {"0.weight": {**w, "shape": [2**62, 2**62]}},
        "past_end": {"0.weight": {**w, "shape": [4, 1], "data_offsets": [0, 32]},
                     "0.bias": {**w, "shape": [2], "data_offsets": [32, 48]}},
        "overlap": {"0.weight": {**w, "shape": [2], "data_offsets": [0, 16]},
                    "0.bias": {**w, "shape": [2], "data_offsets": [8, 24]}},
        "dtype": {"0.weight": {**w, "dtype": "BOOM"}},
        "meta_list": {"__metadata__": [1], "0.weight": {**w, "shape": [2]}},
    }[case]
    with pytest.raises(InspectError) as e:
        load_model(_lying(tmp_path / f"{case}.safetensors", header), "mlp:2-2")
    assert _one_line(e).startswith(str(tmp_path))


def test_safetensors_that_are_not_json_or_too_deep(tmp_path: Path) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes((16).to_bytes(8, "little") + b"not json at all!")
    with pytest.raises(InspectError, match="not JSON"):
        load_model(p, "mlp:2-2")
    text = b"[" * 100_000 + b"]" * 100_000
    p.write_bytes(len(text).to_bytes(8, "little") + text)
    with pytest.raises(InspectError, match="not JSON"):
        load_model(p, "mlp:2-2")
    p.write_bytes(b"abc")
    with pytest.raises(InspectError, match="truncated"):
        load_model(p, "mlp:2-2")


def test_pt_noise_and_truncation_are_worded_as_for_checkpoints(tmp_path: Path, mlp) -> None:
    """Random bytes are not 'code'; a cut zip is 'truncated or corrupt (N bytes)': the words of
    load_pt_safely, which both readers share."""
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(7, 256)) * 3)
    with pytest.raises(InspectError) as e:
        load_model(noise, MLP)
    assert "not a PyTorch or safetensors file" in _one_line(e) and "code" not in str(e.value)
    torch.save(mlp.state_dict(), tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes((tmp_path / "good.pt").read_bytes()[:300])
    with pytest.raises(InspectError) as e:
        load_model(cut, MLP)
    assert _one_line(e).endswith("truncated or corrupt (300 bytes)")
