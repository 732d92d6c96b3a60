"""Checkpoint files (docs/design.md §3): written by training, read without running code.

``checkpoints/step_<8 digits>.pt`` holds ``format_version``, the resolved ``config``, ``step``,
the model's state dict and the optimizer state: tensors and plain values only. They are read with
``torch.load(weights_only=True)`` so that a file carrying code is refused, never executed; a
``.safetensors`` export (config, step and format in its metadata) is parsed here with strict
bounds checks. Building a model from a checkpoint is its model kind's part
(:func:`dufm_core.kinds.load_checkpoint`).

Nothing a file declares is allocated before it is checked: a safetensors header is read with
bounded reads and every entry checked (dtype, non-negative shape, byte size equal to its
offsets, offsets inside the file and not overlapping) before any tensor data is read, and the
tensors' names, shapes and dtypes are compared with those the embedded config implies (the
``expect`` of :func:`read_checkpoint`, which also applies the memory cap) before the data are
read from a memory map, one copy per tensor. A ``.pt`` larger than the memory cap is refused
unread. Every refusal is a :class:`CheckpointError` of one line, in our own words.

The readers are public (:func:`read_safetensors_header`, :func:`read_safetensors_tensors`,
:func:`load_pt_safely`): :mod:`dufm_core.inspection.loading` reads a user's state dict with them,
so both kinds of file pass the same checks.
"""

from __future__ import annotations

import io
import json
import mmap
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dufm_core import resources
from dufm_core.config import ConfigError, RunConfig
from dufm_core.store import Run, atomic_write_bytes

__all__ = [
    "FORMAT_VERSION", "Checkpoint", "CheckpointError", "CheckpointState", "Expect",
    "SafetensorsEntry", "SafetensorsHeader", "TensorSpec", "compare_tensors", "load_pt_safely",
    "read_checkpoint", "read_safetensors", "read_safetensors_header", "read_safetensors_tensors",
    "save_checkpoint", "save_safetensors", "short_name_list", "write_safetensors",
]

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded safely; the message says why."""


class TensorSpec(NamedTuple):
    """What a tensor of a checkpoint must be: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype


Expect = Callable[[RunConfig], Mapping[str, TensorSpec]]


def compare_tensors(
    path: Path, expected: Mapping[str, TensorSpec], found: Mapping[str, TensorSpec]
) -> None:
    """CheckpointError naming the missing or unexpected tensors (the first few names) or the
    first tensor whose shape or dtype differs from what the config implies."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
        words = []
        if missing:
            words.append(f"missing {short_name_list(missing)}")
        if extra:
            words.append(f"unexpected {short_name_list(extra)}")
        raise CheckpointError(f"{path}: its tensors do not match its config: "
                              f"{'; '.join(words)}")
    for name, want in expected.items():
        got = found[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: its tensors do not match its config: {name[:80]!r} should be "
                f"{_spec_text(want)}, the file has {_spec_text(got)}")


def short_name_list(names: list[str], most: int = 3) -> str:
    """The first ``most`` of ``names``, quoted and cut to 60 characters each, then "and N more":
    a refusal naming a file's tensors (or an archive's members) stays one short line, however
    many names or however long a name the file declares."""
    shown = ", ".join(repr(n[:60]) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _spec_text(spec: TensorSpec) -> str:
    dims = spec.shape if len(spec.shape) <= 8 else (*spec.shape[:8], "…")
    return f"{list(dims)} {str(spec.dtype).replace('torch.', '')}"


@dataclass
class CheckpointState:
    """A checkpoint file as read and checked: its config, step, the model's state dict and the
    optimizer state (None in a ``.safetensors`` export)."""

    config: RunConfig
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    path: Path

    def check(self, expected: Mapping[str, TensorSpec]) -> None:
        """CheckpointError naming the first tensor that differs from ``expected``
        (:func:`compare_tensors`)."""
        compare_tensors(self.path, expected, _specs_of(self.model))


def _specs_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    return {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in tensors.items()}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (on the CPU unless asked), labels, config and step."""

    model: torch.nn.Module
    labels: torch.Tensor
    config: RunConfig
    step: int
    optimizer: dict[str, Any] | None
    path: Path | None = None


def save_checkpoint(
    run: Run,
    step: int,
    model: torch.nn.Module,
    optimizer_state: dict[str, Any] | None,
    cfg: RunConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically (tensors and plain values only)."""
    state = {
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "step": int(step),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer_state,
    }
    if extra:
        state.update(extra)
    path = run.checkpoint_path(step)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- safetensors
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "I64": torch.int64}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_ST_NUMPY = {"F64": "<f8", "F32": "<f4", "I64": "<i8"}
_ST_MAX_HEADER = 16 * 1024 * 1024
_MAX_DIMS = 16


def save_safetensors(path: str | Path, ck: Checkpoint) -> None:
    """Export a checkpoint's model as ``.safetensors`` (config, step and format in the metadata),
    a format any tool can read without executing code."""
    write_safetensors(path, ck.model.state_dict(), {
        "format_version": str(FORMAT_VERSION),
        "step": str(ck.step),
        "config": json.dumps(ck.config.to_dict()),
    })


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str]) -> None:
    """Write named float64 / float32 / int64 ``tensors`` and string ``metadata`` as one
    ``.safetensors`` file, atomically (the checkpoint export, and the eigenvectors that
    :mod:`dufm_core.tracking` keeps beside a report)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset, blobs = 0, []
    for name, t in tensors.items():
        data = t.detach().cpu().contiguous().numpy().tobytes()
        header[name] = {
            "dtype": _ST_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    atomic_write_bytes(path, len(head).to_bytes(8, "little") + head + b"".join(blobs))


def read_safetensors(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of any ``.safetensors`` file, with the bounds checks of a checkpoint
    export; a CheckpointError of one line when it is malformed."""
    p = Path(path)
    header = read_safetensors_header(p)
    return header.metadata, read_safetensors_tensors(p, header)


@dataclass(frozen=True)
class SafetensorsEntry:
    """One tensor a safetensors header declares, checked against the file's size: its dtype
    (``F64``, ``F32`` or ``I64``), shape and byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _json(text: bytes | str, what: str, p: Path) -> Any:
    """json.loads with every failure (bad bytes, syntax, nesting too deep, a number too long to
    convert) as one CheckpointError line."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, int limits
        raise CheckpointError(f"{p}: malformed safetensors {what} (not JSON)") from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _st_entry(p: Path, name: str, spec: Any, body: int) -> SafetensorsEntry:
    """Check one header entry: dtype, shape (at most 16 non-negative dimensions), offsets inside
    the data and a byte size equal to the shape's."""
    shown = repr(name[:80])
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{p}: malformed safetensors entry {shown} (needs exactly dtype, "
                              "shape and data_offsets)")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
        raise CheckpointError(f"{p}: tensor {shown} has dtype {str(dtype)[:20]!r}; this version "
                              f"reads {', '.join(_ST_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
            or not all(_is_int(d) and d >= 0 for d in shape)):
        raise CheckpointError(f"{p}: tensor {shown} has a malformed shape (at most {_MAX_DIMS} "
                              "non-negative integers)")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(x) for x in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{p}: tensor {shown} has malformed data_offsets")
    begin, end = offsets
    if end > body:
        raise CheckpointError(f"{p}: truncated safetensors data for {shown} (it ends at byte "
                              f"{end} of a {body}-byte data section)")
    nbytes = resources.numel(shape) * _ST_DTYPES[dtype].itemsize
    if nbytes != end - begin:
        raise CheckpointError(f"{p}: tensor {shown} of shape {shape[:8]} needs {nbytes} bytes "
                              f"but its offsets span {end - begin}")
    return SafetensorsEntry(dtype, tuple(shape), begin, end)


class SafetensorsHeader(NamedTuple):
    """A safetensors file's header as read and checked by :func:`read_safetensors_header`:
    its string ``metadata``, its tensors' checked ``entries`` by name, and ``data_start``, the
    byte where the data section begins."""

    metadata: dict[str, Any]
    entries: dict[str, SafetensorsEntry]
    data_start: int


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """The checked header of the safetensors file at ``path``; no tensor data is read.

    The 8-byte length comes first and is checked against the file's size and a 16 MiB bound
    before the header is read (bounded reads only); the JSON is parsed with every failure as one
    line; each entry must name a known dtype, at most 16 non-negative dimensions and offsets
    inside the data section spanning exactly the shape's byte size, and no two tensors' data may
    overlap. So the declared shapes can be compared with what a caller expects (and with the
    memory cap) before anything is allocated. Raises :class:`CheckpointError` (one line)."""
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        first = f.read(8)
        if len(first) < 8:
            raise CheckpointError(f"{p}: truncated safetensors file (no header)")
        n = int.from_bytes(first, "little")
        if n > _ST_MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{p}: truncated or malformed safetensors header (it declares "
                                  f"{n} bytes; the file has {size})")
        raw = f.read(n)
    header = _json(raw, "header", p)
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: malformed safetensors header (not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{p}: malformed safetensors metadata (not a JSON object)")
    body = size - 8 - n
    entries = {name: _st_entry(p, name, spec, body) for name, spec in header.items()}
    last = 0
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if e.begin < last:
            raise CheckpointError(f"{p}: tensor {name[:80]!r} overlaps another tensor's data")
        last = e.end
    return SafetensorsHeader(meta, entries, 8 + n)


def _st_state(p: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint fields a safetensors export keeps in its metadata."""
    try:
        version = meta.get("format_version", "0")
        step = meta.get("step", "0")
        out = {
            "format_version": int(version) if isinstance(version, str) and len(version) < 20
            else None,
            "config": _json(meta["config"], "metadata", p),
            "step": int(step) if isinstance(step, str) and len(step) < 20 else -1,
            "optimizer": None,
        }
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{p}: safetensors metadata lacks a DUFM Lab config") from None
    return out


def read_safetensors_tensors(path: str | Path, header: SafetensorsHeader
                             ) -> dict[str, torch.Tensor]:
    """The tensors ``header`` (from :func:`read_safetensors_header` of the same file) declares,
    read through a memory map: one copy each in the declared dtype and shape, nothing else
    (the file is never read whole). Call it only after the declared shapes were checked
    against what the caller expects: this is where the memory is allocated."""
    p = Path(path)
    out: dict[str, torch.Tensor] = {}
    with p.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for name, e in header.entries.items():
            dtype = np.dtype(_ST_NUMPY[e.dtype])
            view = np.frombuffer(mm, dtype=dtype, count=(e.end - e.begin) // dtype.itemsize,
                                 offset=header.data_start + e.begin)
            out[name] = torch.from_numpy(view.astype(dtype.newbyteorder("="))).reshape(e.shape)
            del view  # the map closes only when no view of it is left
    return out


# --------------------------------------------------------------------------- .pt
_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def load_pt_safely(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """The object in the PyTorch file at ``path``, loaded with ``torch.load(weights_only=True)``
    onto ``device``: tensors and plain containers only, never plain unpickling, so a file that
    carries code is refused and nothing in it runs.

    A file larger than the memory cap (:func:`dufm_core.resources.memory_cap`) is refused
    unread. Every failure is a :class:`CheckpointError` of one line in our own words (code
    named with what it asks for, a truncated or corrupt zip, a bare pickle stream, a file that
    is neither): never PyTorch's advice to turn the safety off."""
    p = Path(path)
    size = p.stat().st_size
    cap, source = resources.memory_cap()
    if size > cap:
        raise CheckpointError(f"{p}: {resources.format_bytes(size)} is more than the memory cap "
                              f"{resources.format_bytes(cap)} ({source}); not read")
    with p.open("rb") as f:
        magic = f.read(4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        text = str(exc)
    found = _GLOBAL_RE.search(text)
    if found:
        raise CheckpointError(
            f"{p}: refused: it carries Python objects or code (it asks for {found.group(1)}), "
            "which a safe load never runs; nothing was executed") from None
    if magic == b"PK\x03\x04":  # a zip archive, as torch.save writes
        raise CheckpointError(f"{p}: not a readable PyTorch checkpoint: truncated or corrupt "
                              f"({size} bytes)") from None
    if magic[:1] == b"\x80":  # a bare pickle stream (old torch.save format, or any objects)
        raise CheckpointError(f"{p}: refused: a pickle stream that a safe load cannot read "
                              "(it may carry Python objects or code); nothing was executed"
                              ) from None
    raise CheckpointError(f"{p}: not a PyTorch or safetensors file ({size} bytes that are "
                          "neither a zip archive nor a pickle stream)") from None


def read_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", expect: Expect | None = None
) -> CheckpointState:
    """Read a ``.pt`` checkpoint with ``weights_only=True`` (or a ``.safetensors`` export): its
    format and config checked, its tensors not yet in a model. Building the model is the model
    kind's part (:func:`dufm_core.kinds.load_checkpoint`).

    ``expect(config)`` gives the tensors the config implies (names, shapes, dtypes) and may
    refuse the config (a ConfigError, e.g. above the memory cap); the declared tensors are
    compared with it before a safetensors file's data are read.

    Raises :class:`CheckpointError` with a one-line reason for a missing, truncated, foreign or
    code-carrying file; never unpickles arbitrary objects.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    header: SafetensorsHeader | None = None
    if p.suffix == ".safetensors":
        header = read_safetensors_header(p)
        state: Any = _st_state(p, header.metadata)
    else:
        state = load_pt_safely(p, device)
    if (not isinstance(state, dict) or "config" not in state
            or (header is None and not isinstance(state.get("model"), dict))):
        raise CheckpointError(
            f"{p}: not a DUFM Lab checkpoint: expected a dict with keys format_version, config, "
            "step, model, optimizer"
        )
    version = state.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        shown = repr(version) if isinstance(version, (int, str, type(None))) else "malformed"
        raise CheckpointError(
            f"{p}: checkpoint format_version {shown[:20]} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    step = state.get("step", 0)
    if not _is_int(step) or step < 0:
        raise CheckpointError(f"{p}: malformed step (a non-negative integer is needed)")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{p}: its config is invalid: config: not a table of config keys")
    try:
        cfg = RunConfig.from_dict(state["config"])
        cfg.validate()
    except (ValueError, TypeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{p}: its config is invalid: {reason}") from None
    if header is None:
        model = state["model"]
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
            raise CheckpointError(f"{p}: not a DUFM Lab checkpoint: its model is not a dict of "
                                  "named tensors")
        found = _specs_of(model)
    else:
        found = {k: TensorSpec(e.shape, _ST_DTYPES[e.dtype]) for k, e in header.entries.items()}
    if expect is not None:
        try:
            expected = expect(cfg)
        except ConfigError as exc:
            raise CheckpointError(f"{p}: {exc}") from None
        compare_tensors(p, expected, found)
    if header is not None:
        model = read_safetensors_tensors(p, header)
    optimizer = state.get("optimizer")
    return CheckpointState(
        config=cfg,
        step=step,
        model=model,
        optimizer=optimizer if isinstance(optimizer, dict) else None,
        path=p,
    )
