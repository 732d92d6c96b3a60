"""Reading a user's files without running code (docs/inspect.md, docs/design.md §8.1).

* **State dict** (``.safetensors``, or ``.pt`` through ``torch.load(weights_only=True,
  mmap=True)``): the readers of :mod:`dufm_core.checkpoints` (:func:`read_safetensors_header`'s
  bounded reads and checks, :func:`load_pt_safely`'s one-line refusals of code); the tensors'
  float64 size is checked against the memory cap after their shapes, before their data are
  read. A ``.pt`` may wrap the
  state dict the usual ways: ``{"state_dict": …}``, ``{"model": …}`` (nested once more is fine)
  and a ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefix on every key. The
  declared names and shapes are compared with the architecture's **before** a safetensors
  file's data are read and before the module is filled (it is built on the meta device).
* **Features file** (``.npz``): ``features`` (N × d), ``labels`` (N), the head ``W1..WH``
  (W_l of shape (d_{l+1}, d_l)), optional ``b1..bH``, optional ``features_test``/``labels_test``.
* **Data file** (``.npz``): ``x`` (N × input shape), ``y`` (N), optional ``x_test``/``y_test``.

Both ``.npz`` files are read with ``allow_pickle=False`` (an object array is refused), after
their members' sizes (from the zip directory) are checked against the memory cap; labels must
be integers in 0..K−1. Every refusal is an :class:`InspectError` of one line.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dufm_core import resources
from dufm_core.checkpoints import (
    CheckpointError,
    load_pt_safely,
    read_safetensors_header,
    read_safetensors_tensors,
    short_name_list,
)
from dufm_core.config import ConfigError
from dufm_core.inspection.architectures import Architecture, ArchitectureError, Inspectable

__all__ = ["Data", "FeaturesFile", "InspectError", "load_data_file", "load_features",
           "load_model", "read_state_dict", "unwrap"]

WRAPPERS = ("state_dict", "model", "model_state_dict", "net")
PREFIXES = ("module.", "_orig_mod.")
MAX_LAYERS = 64


class InspectError(ValueError):
    """A file or option of ``inspect`` cannot be used; the message (one line) says why."""


# --------------------------------------------------------------------------- state dicts
def unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded ``.pt``: through ``state_dict``/``model`` wrappers (at most
    two levels), with a ``module.``/``_orig_mod.`` prefix common to every key removed."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise InspectError(f"{path}: not a state dict (a dict of named tensors, possibly under "
                           f"'state_dict' or 'model')")
    out = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(out) != len(obj):
        raise InspectError(f"{path}: its state dict holds entries that are not named tensors")
    return strip_prefixes(out)


def strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with a ``module.`` / ``_orig_mod.`` prefix removed where every key has it."""
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _check_names_shapes(path: Path, arch: Architecture, expected: Mapping[str, tuple],
                        found: Mapping[str, tuple]) -> None:
    """InspectError naming missing/unexpected tensors (first few) or the first shape mismatch."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
        words = ([f"missing {short_name_list(missing)}"] if missing else []) + (
            [f"unexpected {short_name_list(extra)}"] if extra else [])
        raise InspectError(f"{path}: its tensors do not fit --arch {arch.name}: "
                           f"{'; '.join(words)}")
    for name, shape in expected.items():
        if tuple(found[name]) != tuple(shape):
            raise InspectError(f"{path}: tensor {name[:80]!r} has shape {list(found[name])[:8]}; "
                               f"--arch {arch.name} needs {list(shape)}")


def read_state_dict(path: str | Path, arch: Architecture) -> Inspectable:
    """The model of ``arch`` filled with the state dict in ``path`` (float64, eval mode); see the
    module docstring for the checks and their order."""
    p = Path(path)
    if not p.is_file():
        raise InspectError(f"{p}: no such file")
    try:
        if p.suffix == ".safetensors":
            header = read_safetensors_header(p)
            named = strip_prefixes(dict(header.entries))
            shapes = {k: e.shape for k, e in named.items()}
            model = arch.build(shapes)
            _check_names_shapes(p, arch, arch.expected(model), shapes)
            _cap(p, sum(resources.numel(s) * 8 for s in shapes.values()))
            tensors = strip_prefixes(read_safetensors_tensors(p, header))
        else:
            tensors = unwrap(_load_pt(p), p)
            shapes = {k: tuple(v.shape) for k, v in tensors.items()}
            model = arch.build(shapes)
            _check_names_shapes(p, arch, arch.expected(model), shapes)
            _cap(p, sum(resources.numel(s) * 8 for s in shapes.values()))
    except (CheckpointError, ArchitectureError) as exc:
        text = str(exc)
        raise InspectError(text if text.startswith(str(p)) else f"{p}: {text}") from None
    bad = [k for k, v in tensors.items() if not v.is_floating_point()
           and not k.endswith("num_batches_tracked")]
    if bad:
        raise InspectError(f"{p}: tensor {bad[0][:80]!r} is not floating point")
    return arch.load(model, tensors)


def _load_pt(p: Path) -> Any:
    """A ``.pt`` through ``torch.load(weights_only=True, mmap=True)``: the tensors stay in the
    file (memory-mapped) until used, so names and shapes are checked before their data are read.
    A file that cannot be mapped (the old non-zip format) or is refused goes through
    :func:`dufm_core.checkpoints.load_pt_safely`, which applies the memory cap to the file and
    words the refusal (a code-carrying pickle is never run by either)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # torch raises several types for bad files: reworded below
        return load_pt_safely(p, "cpu")


def _cap(p: Path, nbytes: int) -> None:
    """InspectError when ``nbytes`` (what the file will need in float64) exceed the memory cap."""
    try:
        resources.check(resources.MemoryEstimate(
            f"{p.name}", (resources.Part("tensors", nbytes, "model file"),)))
    except ConfigError as exc:
        raise InspectError(f"{p}: {str(exc).split(': ', 1)[-1]}") from None


def load_model(path: str | Path, arch_name: str | None) -> Inspectable:
    """A state dict file with its architecture name (an ``.onnx`` graph is read by
    :func:`dufm_core.inspection.onnx_graph.load_onnx` instead)."""
    from dufm_core.inspection.architectures import parse_architecture

    p = Path(path)
    if not arch_name:
        raise InspectError(f"{p}: a state dict needs --arch (mlp:D0-D1-…-K, resnet20, resnet18)")
    try:
        arch = parse_architecture(arch_name)
    except ArchitectureError as exc:
        raise InspectError(str(exc)) from None
    return read_state_dict(p, arch)


# --------------------------------------------------------------------------- npz files
def _npz(path: str | Path, required: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (allow_pickle=False), after the zip directory's sizes are
    checked against the memory cap and the required members are found."""
    p = Path(path)
    if not p.is_file():
        raise InspectError(f"{p}: no such {what} file")
    try:
        with zipfile.ZipFile(p) as z:
            sizes = {i.filename.removesuffix(".npy"): i.file_size for i in z.infolist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise InspectError(f"{p}: not an .npz file ({exc})") from None
    missing = [k for k in required if k not in sizes]
    if missing:
        raise InspectError(f"{p}: the {what} file lacks {short_name_list(missing)} (it has "
                           f"{short_name_list(sorted(sizes), 6)})")
    _cap(p, 2 * sum(sizes.values()))  # the arrays, then their float64 copies
    try:
        with np.load(p, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InspectError(f"{p}: refused: it holds Python objects (object arrays), which "
                               "are never unpickled") from None
        raise InspectError(f"{p}: malformed .npz ({str(exc)[:200]})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InspectError(f"{p}: malformed .npz ({str(exc)[:200]})") from None


def _floats(p: Path, key: str, a: np.ndarray, ndim: int | None = None) -> torch.Tensor:
    if a.dtype.kind not in "fiu" or (ndim is not None and a.ndim != ndim):
        want = f"a {ndim}-d " if ndim else "a "
        raise InspectError(f"{p}: {key} must be {want}numeric array (got {a.dtype} of shape "
                           f"{list(a.shape)[:8]})")
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    if not bool(torch.isfinite(t).all()):
        raise InspectError(f"{p}: {key} holds non-finite values")
    return t


def _labels(p: Path, key: str, a: np.ndarray, N: int, K: int | None) -> torch.Tensor:
    """Integer labels of length N in 0..K−1 (K = max + 1 when not known yet)."""
    if a.ndim != 1 or a.shape[0] != N:
        raise InspectError(f"{p}: {key} must have one label per sample ({N}); got shape "
                           f"{list(a.shape)[:8]}")
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0)):
        raise InspectError(f"{p}: {key} must hold integer class labels (got {a.dtype})")
    y = torch.from_numpy(a.astype(np.int64))
    top = K if K is not None else int(y.max()) + 1 if N else 0
    if N and (int(y.min()) < 0 or int(y.max()) >= top):
        raise InspectError(f"{p}: {key} must be in 0..{top - 1} (K = {top} classes); found "
                           f"{int(y.min())}..{int(y.max())}")
    return y


@dataclass
class Data:
    """Inputs and labels (train; test possibly empty), float64 / int64."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str


def load_data_file(path: str | Path, K: int) -> Data:
    """``--data FILE.npz`` (module docstring): samples used as given, labels checked in 0..K−1."""
    p = Path(path)
    a = _npz(p, ("x", "y"), "data")
    x = _floats(p, "x", a["x"])
    if x.ndim < 2 or x.shape[0] == 0:
        raise InspectError(f"{p}: x must be N × input shape with N ≥ 1 (got {list(x.shape)})")
    y = _labels(p, "y", a["y"], x.shape[0], K)
    if ("x_test" in a) != ("y_test" in a):
        raise InspectError(f"{p}: x_test and y_test come together")
    if "x_test" in a:
        xt = _floats(p, "x_test", a["x_test"])
        if tuple(xt.shape[1:]) != tuple(x.shape[1:]):
            raise InspectError(f"{p}: x_test's samples have shape {list(xt.shape[1:])}, x's "
                               f"{list(x.shape[1:])}")
        yt = _labels(p, "y_test", a["y_test"], xt.shape[0], K)
    else:
        xt, yt = x.new_zeros((0, *x.shape[1:])), y.new_zeros(0)
    return Data(x, y, xt, yt, f"data file {p.name}")


@dataclass
class FeaturesFile:
    """``--features FILE.npz``: rows of head inputs, labels, the head (W, b or None) in order."""

    features: torch.Tensor
    labels: torch.Tensor
    head: list[tuple[torch.Tensor, torch.Tensor | None]]
    features_test: torch.Tensor
    labels_test: torch.Tensor


_W_RE = re.compile(r"^W(\d+)$")


def load_features(path: str | Path) -> FeaturesFile:
    """The features file (module docstring), with every shape checked against its neighbours."""
    p = Path(path)
    a = _npz(p, ("features", "labels", "W1"), "features")
    H = len([k for k in a if _W_RE.match(k)])
    if H > MAX_LAYERS or any(f"W{i}" not in a for i in range(1, H + 1)):
        raise InspectError(f"{p}: head weights must be W1..WH with no gap (H ≤ {MAX_LAYERS})")
    feats = _floats(p, "features", a["features"], 2)
    head = []
    d = feats.shape[1]
    for i in range(1, H + 1):
        W = _floats(p, f"W{i}", a[f"W{i}"], 2)
        if W.shape[1] != d:
            raise InspectError(f"{p}: W{i} has shape {list(W.shape)}; its input size must be "
                               f"{d} ({'features' if i == 1 else f'W{i - 1}'}'s output)")
        b = _floats(p, f"b{i}", a[f"b{i}"], 1) if f"b{i}" in a else None
        if b is not None and b.shape[0] != W.shape[0]:
            raise InspectError(f"{p}: b{i} has {b.shape[0]} entries; W{i} has {W.shape[0]} rows")
        head.append((W, b))
        d = W.shape[0]
    K = d
    y = _labels(p, "labels", a["labels"], feats.shape[0], K)
    if "features_test" in a:
        ft = _floats(p, "features_test", a["features_test"], 2)
        if ft.shape[1] != feats.shape[1]:
            raise InspectError(f"{p}: features_test has {ft.shape[1]} columns; features "
                               f"{feats.shape[1]}")
        if "labels_test" not in a:
            raise InspectError(f"{p}: features_test needs labels_test")
        yt = _labels(p, "labels_test", a["labels_test"], ft.shape[0], K)
    else:
        ft, yt = feats.new_zeros(0, feats.shape[1]), y.new_zeros(0)
    return FeaturesFile(feats, y, head, ft, yt)
