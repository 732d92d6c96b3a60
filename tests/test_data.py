"""Real data sets (dufm_core.data): digits, IDX and CIFAR files the tests write themselves,
class-balanced subsampling, standardisation, and clear errors for every bad folder or file."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core.config import ConfigError, RunConfig
from dufm_core.data import (
    DataError,
    SafeUnpickler,
    check_data,
    load_cifar_batch,
    load_data,
    load_dataset,
    read_idx,
    train_class_counts,
)

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- file writers
def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An IDX file of unsigned bytes (MNIST's format), optionally gzipped."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = head + arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_mnist(
    folder: Path, per_class: int = 3, test_per_class: int = 1, gz: bool = False, size: int = 28
) -> dict[str, Path]:
    """Tiny MNIST-format files (10 classes, interleaved labels) in ``folder``."""
    rng = np.random.default_rng(0)
    out = {}
    for split, m in (("train", per_class), ("test", test_per_class)):
        labels = np.tile(np.arange(10), m)
        images = rng.integers(0, 256, size=(labels.size, size, size))
        out[f"{split}_images"] = write_idx(folder / IDX_NAMES[f"{split}_images"], images, gz)
        out[f"{split}_labels"] = write_idx(folder / IDX_NAMES[f"{split}_labels"], labels, gz)
    return out


def cifar_batch(m: int, seed: int = 0, cols: int = 3072) -> dict[bytes, object]:
    """A CIFAR-10 python batch as the official files hold it (bytes keys)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in np.arange(m) % 10],
        b"data": rng.integers(0, 256, size=(m, cols), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(m)],
    }


def write_cifar(folder: Path, m: int = 20, protocol: int = 2) -> Path:
    """Five tiny training batches and a test batch in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(m, i), protocol))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(m, 9), protocol))
    return folder


# --------------------------------------------------------------------------- digits
def test_digits_class_ordered_balanced_standardised() -> None:
    d = load_dataset("digits", n=20, K=10, seed=3)
    assert d.x_train.shape == (200, 1, 8, 8) and d.x_train.dtype == torch.float32
    assert torch.equal(d.y_train, torch.arange(10).repeat_interleave(20))
    assert abs(float(d.x_train.mean())) < 1e-5
    assert float(d.x_train.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    # 20 % of every class held out, before subsampling, so the test set does not depend on n
    assert d.x_test.shape[0] == pytest.approx(0.2 * 1797, abs=10)
    e = load_dataset("digits", n=50, K=10, seed=3)
    assert torch.equal(d.y_test, e.y_test)
    # seeded: the same seed gives the same subsample, another seed another one
    assert torch.equal(load_dataset("digits", n=20, K=10, seed=3).x_train, d.x_train)
    assert not torch.equal(load_dataset("digits", n=20, K=10, seed=4).x_train, d.x_train)


def test_digits_from_config_in_float64_and_without_test_split() -> None:
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 5, "dtype": "float64", "test_fraction": 0})
    cfg.validate()
    d = load_data(cfg)
    assert d.x_train.dtype == torch.float64 and d.N == 50 and d.y_test.numel() == 0


def test_n_and_k_errors_name_their_field() -> None:
    with pytest.raises(DataError, match=r"^n: must be at most \d+ for dataset digits") as exc:
        load_dataset("digits", n=1000, K=10)
    assert exc.value.field == "n"
    with pytest.raises(DataError, match=r"^K: must be 10 for dataset digits") as exc:
        load_dataset("digits", n=5, K=3)
    assert isinstance(exc.value, ConfigError)


def _same_error(cfg: RunConfig) -> str:
    """check_data and load_data refuse ``cfg`` with one and the same message; return it."""
    with pytest.raises(DataError) as checked:
        check_data(cfg)
    with pytest.raises(DataError) as loaded:
        load_data(cfg)
    assert str(checked.value) == str(loaded.value)
    assert checked.value.field == loaded.value.field
    return str(checked.value)


def test_check_data_refuses_what_load_data_refuses(tmp_path: Path) -> None:
    def cfg(**kw) -> RunConfig:
        return RunConfig.from_dict({"model": "resnet20", "n": 5, **kw})

    assert _same_error(cfg(n=140)).startswith("n: must be at most 139 for dataset digits")
    assert _same_error(cfg(dataset="mnist")).startswith("data_dir: must name the folder")
    assert "not found" in _same_error(cfg(dataset="cifar10", data_dir=str(tmp_path)))
    write_mnist(tmp_path / "MNIST" / "raw", per_class=3)
    check_data(cfg(dataset="mnist", data_dir=str(tmp_path), n=3))  # fine
    assert _same_error(cfg(dataset="mnist", data_dir=str(tmp_path), n=4)).startswith(
        "n: must be at most 3 for dataset mnist (its smallest class has 3"
    )
    assert train_class_counts("mnist", str(tmp_path)) == [3] * 10
    assert min(train_class_counts("digits", test_fraction=0.0)) == 174
    check_data(cfg(n=174, test_fraction=0.0))


# --------------------------------------------------------------------------- IDX
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("dataset", "sub"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_idx_torchvision_layout(tmp_path: Path, gz: bool, dataset: str, sub: str) -> None:
    write_mnist(tmp_path / sub / "raw", per_class=3, gz=gz)
    d = load_dataset(dataset, n=2, K=10, data_dir=str(tmp_path))
    assert d.x_train.shape == (20, 1, 28, 28)
    assert torch.equal(d.y_train, torch.arange(10).repeat_interleave(2))
    assert d.x_test.shape == (10, 1, 28, 28) and d.y_test.tolist() == list(range(10))


def test_idx_files_directly_in_data_dir(tmp_path: Path) -> None:
    files = write_mnist(tmp_path, per_class=2)
    d = load_dataset("mnist", n=2, K=10, data_dir=str(tmp_path))
    assert d.N == 20
    # the pixels are the file's, standardised: undo it and compare with class 0's images
    raw = read_idx(files["train_images"], 3)
    labels = read_idx(files["train_labels"], 1)
    x0 = d.x_train[:2, 0].double() * d.std[0] + d.mean[0]
    assert np.allclose(x0.numpy(), raw[labels == 0].astype(np.float64), atol=1e-3)


def test_missing_data_dir_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data_dir: must name the folder") as exc:
        load_dataset("mnist", n=1, K=10)
    assert "train-images-idx3-ubyte" in str(exc.value) and "MNIST/raw" in str(exc.value)
    with pytest.raises(DataError, match="is not a folder") as exc:
        load_dataset("cifar10", n=1, K=10, data_dir=str(tmp_path / "nope"))
    assert "data_batch_1" in str(exc.value) and "cifar-10-batches-py" in str(exc.value)


def test_missing_single_file_is_named(tmp_path: Path) -> None:
    files = write_mnist(tmp_path / "MNIST" / "raw")
    files["test_labels"].unlink()
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", n=1, K=10, data_dir=str(tmp_path))
    msg = str(exc.value)
    assert msg.startswith("data_dir: mnist: t10k-labels-idx1-ubyte[.gz] not found in ")
    assert str(tmp_path / "MNIST" / "raw") in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        ("size", r"holds images of 27×27; mnist images are 28×28"),
        ("magic", r"is not an IDX file of 3-d unsigned bytes \(magic 0x00000903"),
        ("truncate", r"holds \d+ data bytes but its header promises \d+"),
        ("count", r"holds 20 labels for 30 images"),
        ("gzip", r"is not a valid gzip file"),
        ("label", r"has labels outside 0\.\.9"),
    ],
)
def test_malformed_idx_files(tmp_path: Path, corrupt: str, match: str) -> None:
    folder = tmp_path / "MNIST" / "raw"
    files = write_mnist(folder, size=27 if corrupt == "size" else 28)
    img, lab = files["train_images"], files["train_labels"]
    if corrupt == "magic":
        img.write_bytes(b"\x00\x00\x09\x03" + img.read_bytes()[4:])
    elif corrupt == "truncate":
        img.write_bytes(img.read_bytes()[:-5])
    elif corrupt == "count":
        write_idx(lab, np.arange(20) % 10)
    elif corrupt == "gzip":
        img.unlink()
        (folder / (img.name + ".gz")).write_bytes(b"not gzip at all")
    elif corrupt == "label":
        write_idx(lab, np.full(30, 12))
    with pytest.raises(DataError, match=match) as exc:
        load_dataset("mnist", n=1, K=10, data_dir=str(tmp_path))
    assert exc.value.field == "data_dir"
    assert str(folder) in str(exc.value)


# --------------------------------------------------------------------------- CIFAR-10
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches(tmp_path: Path, protocol: int) -> None:
    write_cifar(tmp_path / "cifar-10-batches-py", m=20, protocol=protocol)
    d = load_dataset("cifar10", n=9, K=10, data_dir=str(tmp_path), seed=1)
    assert d.x_train.shape == (90, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert len(d.mean) == 3 and len(d.std) == 3
    # the channel planes are laid out R, G, B: row i holds R[1024], G[1024], B[1024]
    x, y = load_cifar_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    raw = cifar_batch(20, 9)[b"data"]
    assert np.array_equal(x[3, 1].reshape(-1), raw[3, 1024:2048]) and y[3] == 3


def test_cifar_files_directly_in_data_dir(tmp_path: Path) -> None:
    write_cifar(tmp_path, m=10)
    assert load_dataset("cifar10", n=5, K=10, data_dir=str(tmp_path)).N == 50


class _Evil:
    """Pickles as a call of os.system (what a doctored data file would carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_cifar_pickle_is_refused(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "cifar-10-batches-py", m=10)
    marker = tmp_path / "pwned"
    batch = cifar_batch(10)
    batch[b"labels"] = _Evil(marker)
    (folder / "data_batch_3").write_bytes(pickle.dumps(batch, 2))
    with pytest.raises(DataError, match=r"data_batch_3 refused: global \w+\.system is not allowed"):
        load_dataset("cifar10", n=1, K=10, data_dir=str(tmp_path))
    assert not marker.exists()
    # the unpickler itself refuses any other global too
    for payload in (pickle.dumps(eval), pickle.dumps(Path("x"))):
        with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
            SafeUnpickler(__import__("io").BytesIO(payload)).load()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b.update({b"data": b[b"data"][:, :3071]}), r"has shape \(10, 3071\)"),
        (lambda b: b.update({b"labels": b[b"labels"][:7]}), r"holds 7 labels for 10 images"),
        (lambda b: b.update({b"data": b[b"data"].astype(np.float32)}), r"must be a uint8 array"),
        (lambda b: b.pop(b"data"), r"must be a uint8 array"),
    ],
)
def test_malformed_cifar_batches(tmp_path: Path, mutate, match: str) -> None:
    folder = write_cifar(tmp_path, m=10)
    batch = cifar_batch(10)
    mutate(batch)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, 2))
    with pytest.raises(DataError, match=match) as exc:
        load_dataset("cifar10", n=1, K=10, data_dir=str(tmp_path))
    assert "test_batch" in str(exc.value)
    (folder / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="is not a CIFAR-10 python batch"):
        load_dataset("cifar10", n=1, K=10, data_dir=str(tmp_path))


def test_fast_digits_reader_matches_load_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled CSV read without importing scikit-learn equals load_digits (the fallback)."""
    import importlib.util

    from dufm_core import data as data_module

    data_module._digits_arrays.cache_clear()
    fast = data_module._digits_arrays()
    data_module._digits_arrays.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    slow = data_module._digits_arrays()
    data_module._digits_arrays.cache_clear()
    assert fast[0].shape == (1797, 8, 8)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
