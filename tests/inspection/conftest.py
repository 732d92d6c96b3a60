"""Small classifiers the inspection tests train themselves, and file writers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core.data import load_dataset

K = 10


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """A plain safetensors file (the format's layout, written here)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().tobytes()
        dtype = {torch.float64: "F64", torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))
    return path


@pytest.fixture(scope="session")
def digits():
    """Digits, 12 samples per class (N = 120), float64, with its held-out test set."""
    return load_dataset("digits", 12, K, dtype=torch.float64)


@pytest.fixture(scope="session")
def mlp(digits) -> torch.nn.Sequential:
    """A 64-12-10-10 ReLU MLP trained on the digits for a few Adam steps (CE): a classifier
    with biases, a two-layer head possible, and imperfect collapse."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = torch.nn.Sequential(
            torch.nn.Linear(64, 12), torch.nn.ReLU(), torch.nn.Linear(12, 10), torch.nn.ReLU(),
            torch.nn.Linear(10, K)).double()
        x = digits.x_train.reshape(digits.N, -1)
        opt = torch.optim.Adam(net.parameters(), 2e-2)
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), digits.y_train).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


@pytest.fixture
def data_npz(tmp_path: Path, digits) -> Path:
    """--data file of the digits (inputs as given, train and test)."""
    p = tmp_path / "data.npz"
    np.savez(p, x=digits.x_train.numpy(), y=digits.y_train.numpy(),
             x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    return p
