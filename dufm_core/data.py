"""Real data sets for the real-network runs (docs/theory.md §5.3), read from local files only.

Four data sets, all with K = 10 classes:

=================  ============  ======================================================
``digits``         1 × 8 × 8     scikit-learn's bundled copy (1 797 images); offline, no files
``mnist``          1 × 28 × 28   IDX files (gzipped or not), torchvision layout
``fashion-mnist``  1 × 28 × 28   IDX files (gzipped or not), torchvision layout
``cifar10``        3 × 32 × 32   the "python version" pickle batches
=================  ============  ======================================================

Where the files are looked for (first match wins; ``.gz`` is tried after the plain name)::

    mnist          <data_dir>/MNIST/raw/<file>          or  <data_dir>/<file>
    fashion-mnist  <data_dir>/FashionMNIST/raw/<file>   or  <data_dir>/<file>
                   <file> = train-images-idx3-ubyte, train-labels-idx1-ubyte,
                            t10k-images-idx3-ubyte,  t10k-labels-idx1-ubyte
    cifar10        <data_dir>/cifar-10-batches-py/<file> or <data_dir>/<file>
                   <file> = data_batch_1 … data_batch_5, test_batch

Nothing is ever downloaded. A missing or malformed file raises :class:`DataError` (a
:class:`~dufm_core.config.ConfigError` naming ``data_dir``, ``n`` or ``K``) whose one-line
message says which file was expected where, or what is wrong with it.

The CIFAR-10 batches are Python pickles. They are read with :class:`SafeUnpickler`, which only
lets the stream rebuild numpy arrays (the handful of numpy globals a batch needs) and refuses
every other global, so a doctored file cannot run code; a plain ``pickle.load`` is never used.

What :func:`load_data` returns (:class:`RealData`): a class-balanced training set of ``n``
samples per class (a seeded subsample), ordered by class (n of class 0, then n of class 1, …,
as the UFM's columns, docs/theory.md §1.1), standardised with the per-channel mean and standard
deviation of that training set; and a held-out test set standardised the same way (digits: a
seeded ``test_fraction`` of every class, split off *before* subsampling so that it does not
depend on ``n``; the others: their official test set, all of it).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dufm_core.config import ConfigError, RunConfig

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetInfo",
    "RealData",
    "RefusedGlobal",
    "SafeUnpickler",
    "check_data",
    "check_n",
    "dataset_info",
    "load_cifar_batch",
    "load_data",
    "load_dataset",
    "read_idx",
    "train_class_counts",
]


class DataError(ConfigError):
    """The data cannot be loaded; the message is one line naming the field and what is wrong
    (for files: which file was expected where)."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set: input shape (C, H, W) and number of classes."""

    name: str
    channels: int
    height: int
    width: int
    classes: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        return (self.channels, self.height, self.width)


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 1, 8, 8, 10),
    "mnist": DatasetInfo("mnist", 1, 28, 28, 10),
    "fashion-mnist": DatasetInfo("fashion-mnist", 1, 28, 28, 10),
    "cifar10": DatasetInfo("cifar10", 3, 32, 32, 10),
}

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_SUBDIR = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_CIFAR_SUBDIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_IDX_UBYTE = 0x08
_MAX_FILE_BYTES = 1 << 31  # 2 GiB: far above any of these data sets; refuses absurd files


def dataset_info(name: str) -> DatasetInfo:
    """Shape and class count of data set ``name`` (DataError naming ``dataset`` if unknown)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            "dataset", f"must be one of {' | '.join(DATASETS)} (got {name!r})"
        ) from None


@dataclass
class RealData:
    """A loaded data set, ready for training.

    ``x_train`` (N, C, H, W) and ``y_train`` (N,) are class-ordered with ``n`` samples per
    class (``y_train = arange(K).repeat_interleave(n)``); ``x_test``/``y_test`` may be empty.
    Inputs are standardised with the training set's per-channel ``mean`` and ``std``.
    ``source`` says where the data came from (for logs and reports).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    K: int
    n: int
    mean: list[float]
    std: list[float]
    source: str

    @property
    def N(self) -> int:
        """Number of training samples K·n."""
        return int(self.y_train.numel())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> RealData:
        """The same data on ``device`` (a new object; tensors moved, not copied when already
        there)."""
        return RealData(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.K,
            self.n,
            self.mean,
            self.std,
            self.source,
        )


# --------------------------------------------------------------------------- file lookup
def _read_bytes(path: Path) -> bytes:
    """The (decompressed) content of ``path``; DataError naming the file if unreadable."""
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise DataError("data_dir", f"{path} is larger than 2 GiB; not a data file of this set")
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError("data_dir", f"cannot read {path}: {exc.strerror or exc}") from None
    if path.suffix == ".gz":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError("data_dir", f"{path} is not a valid gzip file ({exc})") from None
    return raw


def _find(folders: list[Path], name: str, gz: bool) -> Path | None:
    """The first existing file ``name`` (then ``name.gz`` if ``gz``) in ``folders``."""
    for folder in folders:
        for candidate in (name, f"{name}.gz") if gz else (name,):
            p = folder / candidate
            if p.is_file():
                return p
    return None


def _require(folders: list[Path], name: str, gz: bool, dataset: str) -> Path:
    """:func:`_find`, or a DataError naming the file, where it was looked for and what the
    data set's folder must hold."""
    p = _find(folders, name, gz)
    if p is None:
        root = folders[-1]
        raise DataError(
            "data_dir",
            f"{dataset}: {name}{'[.gz]' if gz else ''} not found in {folders[0]} or {root}; "
            f"expected {_expected(dataset, root)}",
        )
    return p


def _data_root(dataset: str, data_dir: str) -> Path:
    if not data_dir:
        raise DataError(
            "data_dir",
            f"must name the folder that holds the {dataset} files (dataset {dataset} is not "
            f"bundled; nothing is downloaded): {_expected(dataset, Path('<data_dir>'))}",
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            "data_dir",
            f"{root} is not a folder; {dataset} needs {_expected(dataset, root)}",
        )
    return root


def _expected(dataset: str, root: Path) -> str:
    """Human description of the files a data set needs under ``root``."""
    if dataset in _IDX_SUBDIR:
        names = ", ".join(_IDX_FILES.values())
        return (
            f"{names} (each optionally .gz) in {root / _IDX_SUBDIR[dataset] / 'raw'} "
            f"or directly in {root}"
        )
    if dataset == "cifar10":
        names = ", ".join([*_CIFAR_TRAIN, _CIFAR_TEST])
        return f"{names} (CIFAR-10 python version) in {root / _CIFAR_SUBDIR} or directly in {root}"
    return "no files (bundled with scikit-learn)"


# --------------------------------------------------------------------------- IDX (MNIST)
def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions (MNIST's format:
    magic 0x000008<ndim>, then ``ndim`` big-endian int32 sizes, then the bytes).

    Raises DataError naming the file for a wrong magic number, type, rank or size.
    """
    p = Path(path)
    raw = _read_bytes(p)
    if len(raw) < 4 + 4 * ndim:
        raise DataError("data_dir", f"{p} is too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, rank = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != _IDX_UBYTE or rank != ndim:
        magic = int.from_bytes(raw[:4], "big")
        raise DataError(
            "data_dir",
            f"{p} is not an IDX file of {ndim}-d unsigned bytes (magic 0x{magic:08x}, expected "
            f"0x{0x800 | ndim:08x})",
        )
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    size = int(np.prod(dims, dtype=np.int64))
    if len(body) != size:
        raise DataError(
            "data_dir",
            f"{p} holds {len(body)} data bytes but its header promises {size} "
            f"(shape {'×'.join(map(str, dims))}): truncated or corrupt",
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _load_idx_set(
    dataset: str, root: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    info = DATASETS[dataset]
    folders = [root / _IDX_SUBDIR[dataset] / "raw", root]
    paths: dict[str, Path] = {}
    for key, name in _IDX_FILES.items():
        paths[key] = _require(folders, name, True, dataset)
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], 3)
        labels = read_idx(paths[f"{split}_labels"], 1)
        if images.shape[1:] != (info.height, info.width):
            raise DataError(
                "data_dir",
                f"{paths[f'{split}_images']} holds images of "
                f"{images.shape[1]}×{images.shape[2]}; {dataset} images are "
                f"{info.height}×{info.width}",
            )
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                "data_dir",
                f"{paths[f'{split}_labels']} holds {labels.shape[0]} labels for "
                f"{images.shape[0]} images in {paths[f'{split}_images']}",
            )
        arrays[split] = (images[:, None, :, :], labels.astype(np.int64))
        _check_labels(labels, info.classes, paths[f"{split}_labels"])
    source = f"{paths['train_images'].parent}"
    return (*arrays["train"], *arrays["test"], source)


def _check_labels(labels: np.ndarray, K: int, path: Path | str) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= K):
        raise DataError(
            "data_dir",
            f"{path} has labels outside 0..{K - 1} (min {int(labels.min())}, "
            f"max {int(labels.max())})",
        )


# --------------------------------------------------------------------------- CIFAR pickles
def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle of ``bytes`` uses it, latin-1 only."""
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    if not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode needs a str")
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled numpy array needs, under every module path numpy has used."""
    try:
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nm
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]
    out: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = ma._reconstruct
    frombuffer = getattr(nm, "_frombuffer", None)
    if frombuffer is not None:
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            out[(mod, "_frombuffer")] = frombuffer
    return out


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global that :class:`SafeUnpickler` does not allow."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists, bytes, strings, numbers and numpy arrays of
    plain dtypes, and nothing else: :meth:`find_class` returns only the numpy reconstruction
    helpers (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``) and a latin-1-only
    ``_codecs.encode``; any other global (``os.system``, ``builtins.eval``, …) raises
    ``pickle.UnpicklingError``, so the stream cannot call arbitrary code.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if SafeUnpickler._allowed is None:
            SafeUnpickler._allowed = _numpy_globals()
        try:
            return SafeUnpickler._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"global {module}.{name} is not allowed (only numpy arrays, bytes, lists and "
                "dicts can appear in a CIFAR-10 batch)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal("persistent ids are not allowed")


def _key(d: dict[Any, Any], name: str) -> Any:
    """``d[name]`` for str or bytes keys (the official files have bytes keys)."""
    if name in d:
        return d[name]
    return d.get(name.encode())


def load_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch safely: images (m, 3, 32, 32) uint8 and labels (m,) int64.

    Raises DataError naming the file if the pickle asks for any code, is malformed, or its
    arrays have the wrong shape.
    """
    p = Path(path)
    raw = _read_bytes(p)
    try:
        obj = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise DataError("data_dir", f"{p} refused: {exc}") from None
    except Exception as exc:  # truncated or foreign streams raise many types
        raise DataError(
            "data_dir", f"{p} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            "data_dir", f"{p} is not a CIFAR-10 python batch (a dict with data and labels)"
        )
    data, labels = _key(obj, "data"), _key(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(
            "data_dir", f"{p}: 'data' must be a uint8 array of shape (m, 3072), got {desc}"
        )
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(
            "data_dir",
            f"{p}: 'data' has shape {data.shape}; CIFAR-10 rows hold 3072 = 3×32×32 bytes",
        )
    try:
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError("data_dir", f"{p}: 'labels' must be a list of integers") from None
    if lab.shape[0] != data.shape[0]:
        raise DataError("data_dir", f"{p} holds {lab.shape[0]} labels for {data.shape[0]} images")
    _check_labels(lab, 10, p)
    return data.reshape(-1, 3, 32, 32), lab


def _load_cifar_set(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    folders = [root / _CIFAR_SUBDIR, root]
    paths = []
    for name in (*_CIFAR_TRAIN, _CIFAR_TEST):
        paths.append(_require(folders, name, False, "cifar10"))
    parts = [load_cifar_batch(p) for p in paths[:-1]]
    x_test, y_test = load_cifar_batch(paths[-1])
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    return x_train, y_train, x_test, y_test, str(paths[0].parent)


# --------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images (1797, 8, 8) float64 in 0..16 and labels.

    Reads the CSV that ``sklearn.datasets.load_digits`` reads, located without importing
    scikit-learn (whose import costs seconds, at every worker start); falls back to
    ``load_digits`` if the file is not where it is expected.
    """
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            if table.shape == (1797, 65):
                images = table[:, :64].reshape(-1, 8, 8)
                return images, table[:, 64].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "dataset",
            "digits is the copy scikit-learn ships, and scikit-learn is not installed: "
            "pip install 'scikit-learn>=1.3' (it is in requirements.txt)",
        ) from None

    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def _load_digits(
    test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """scikit-learn's 8×8 digits (pixel values 0..16), split per class: a seeded
    ``round(test_fraction · count)`` of every class is held out."""
    images, y = _digits_arrays()
    x = images[:, None, :, :]
    gen = torch.Generator().manual_seed(_mix(seed, 0x7E57))
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        perm = idx[torch.randperm(idx.size, generator=gen).numpy()]
        n_test = round(test_fraction * idx.size)
        test_idx.append(np.sort(perm[:n_test]))
        train_idx.append(np.sort(perm[n_test:]))
    tr = np.concatenate(train_idx)
    te = np.concatenate(test_idx)
    return x[tr], y[tr], x[te], y[te], "scikit-learn's bundled digits (load_digits)"


def _mix(seed: int, salt: int) -> int:
    """A generator seed derived from the run seed and a purpose tag (64-bit, non-negative)."""
    return (seed * 0x9E3779B97F4A7C15 + salt) % (2**63)


# --------------------------------------------------------------------------- assembly
def _check_K(name: str, K: int) -> None:
    info = dataset_info(name)
    if info.classes != K:
        raise DataError(
            "K", f"must be {info.classes} for dataset {name} (its number of classes) (got {K})"
        )


def _load_arrays(
    name: str, data_dir: str, seed: int, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """The raw (train images, train labels, test images, test labels, source) of ``name``."""
    if name == "digits":
        return _load_digits(test_fraction, seed)
    if name == "cifar10":
        return _load_cifar_set(_data_root(name, data_dir))
    return _load_idx_set(name, _data_root(name, data_dir))


def train_class_counts(
    name: str, data_dir: str = "", seed: int = 0, test_fraction: float = 0.2
) -> list[int]:
    """Training samples per class of data set ``name``: the largest ``n`` is their minimum.

    Reads and checks the files exactly as :func:`load_dataset` does (the same DataError for a
    missing folder or a malformed file) but neither subsamples nor converts the images, so a
    caller can check a config's ``n`` (:func:`check_n`) before a run is made; the dashboard
    does so before it enables Launch.
    """
    _, y_tr, _, _, _ = _load_arrays(name, data_dir, seed, test_fraction)
    return np.bincount(y_tr, minlength=dataset_info(name).classes).tolist()


def check_n(name: str, n: int, counts: list[int], test_fraction: float = 0.2) -> None:
    """DataError naming ``n`` if ``n`` samples per class exceed the smallest class of
    ``counts`` (from :func:`train_class_counts`)."""
    smallest = min(counts)
    if smallest < n:
        where = f"with test_fraction {test_fraction:g} " if name == "digits" else ""
        raise DataError(
            "n",
            f"must be at most {smallest} for dataset {name} {where}(its smallest class "
            f"has {smallest} training samples; class counts {counts}) (got {n})",
        )


def check_data(cfg: RunConfig) -> None:
    """Everything :func:`load_data` would refuse about ``cfg`` (K, the data folder and its
    files, n), without building the training set; raises DataError (a ConfigError)."""
    _check_K(cfg.dataset, cfg.K)
    counts = train_class_counts(cfg.dataset, cfg.data_dir, cfg.seed, cfg.test_fraction)
    check_n(cfg.dataset, cfg.n, counts, cfg.test_fraction)


def load_dataset(
    name: str,
    n: int,
    K: int,
    data_dir: str = "",
    seed: int = 0,
    test_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
) -> RealData:
    """Load data set ``name``, subsample ``n`` training samples per class (seeded), order them
    by class and standardise (see the module docstring). ``K`` must equal the data set's
    number of classes."""
    info = dataset_info(name)
    _check_K(name, K)
    x_tr, y_tr, x_te, y_te, source = _load_arrays(name, data_dir, seed, test_fraction)
    counts = np.bincount(y_tr, minlength=info.classes)
    check_n(name, n, counts.tolist(), test_fraction)
    gen = torch.Generator().manual_seed(_mix(seed, 0x5AB5))
    chosen = []
    for c in range(info.classes):
        idx = np.flatnonzero(y_tr == c)
        pick = torch.randperm(idx.size, generator=gen)[:n].numpy()
        chosen.append(idx[np.sort(pick)])
    sel = np.concatenate(chosen)
    x_train = torch.from_numpy(np.ascontiguousarray(x_tr[sel])).to(dtype)
    y_train = torch.arange(info.classes).repeat_interleave(n)
    x_test = torch.from_numpy(np.array(x_te, copy=True)).to(dtype)
    y_test = torch.from_numpy(np.ascontiguousarray(y_te)).to(torch.int64)
    std, mean = torch.std_mean(x_train, dim=(0, 2, 3), correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    shape = (1, -1, 1, 1)
    x_train.sub_(mean.view(shape)).div_(std.view(shape))
    x_test.sub_(mean.view(shape)).div_(std.view(shape))
    return RealData(
        name=name,
        x_train=x_train.contiguous(),
        y_train=y_train,
        x_test=x_test.contiguous(),
        y_test=y_test,
        K=info.classes,
        n=n,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        source=source,
    )


def load_data(cfg: RunConfig) -> RealData:
    """The data of a real-network run config (on the CPU, in the run's dtype)."""
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    return load_dataset(
        cfg.dataset,
        cfg.n,
        cfg.K,
        data_dir=cfg.data_dir,
        seed=cfg.seed,
        test_fraction=cfg.test_fraction,
        dtype=dtype,
    )
