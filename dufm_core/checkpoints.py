"""Checkpoint files (docs/design.md §3): written by training, read without running code.

``checkpoints/step_<8 digits>.pt`` holds ``format_version``, the resolved ``config``, ``step``,
the model's state dict and the optimizer state: tensors and plain values only. They are read with
``torch.load(weights_only=True)`` so that a file carrying code is refused, never executed; a
``.safetensors`` export (config, step and format in its metadata) is parsed here with strict
bounds checks. Building a model from a checkpoint is its model kind's part
(:func:`dufm_core.kinds.load_checkpoint`).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dufm_core.config import RunConfig
from dufm_core.store import Run, atomic_write_bytes

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded safely; the message says why."""


@dataclass
class CheckpointState:
    """A checkpoint file as read and checked: its config, step, the model's state dict and the
    optimizer state (None in a ``.safetensors`` export)."""

    config: RunConfig
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    path: Path

    def load_into(self, model: torch.nn.Module) -> None:
        """Load the state dict into ``model`` (built for this config); CheckpointError names the
        first mismatch."""
        try:
            model.load_state_dict(self.model)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{self.path}: its tensors do not match its config: "
                f"{str(exc).splitlines()[0][:200]}"
            ) from None


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
_ST_MAX_HEADER = 16 * 1024 * 1024


def save_safetensors(path: str | Path, ck: Checkpoint) -> None:
    """Export a checkpoint's model as ``.safetensors`` (config, step and format in the metadata),
    a format any tool can read without executing code."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in ck.model.state_dict().items()}
    header: dict[str, Any] = {
        "__metadata__": {
            "format_version": str(FORMAT_VERSION),
            "step": str(ck.step),
            "config": json.dumps(ck.config.to_dict()),
        }
    }
    offset, blobs = 0, []
    for name, t in tensors.items():
        data = t.numpy().tobytes()
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


def _read_safetensors(p: Path) -> dict[str, Any]:
    """Parse a .safetensors file into the checkpoint dict layout (strict bounds checks)."""
    import numpy as np

    raw = p.read_bytes()
    if len(raw) < 8:
        raise CheckpointError(f"{p}: truncated safetensors file (no header)")
    n = int.from_bytes(raw[:8], "little")
    if n > _ST_MAX_HEADER or 8 + n > len(raw):
        raise CheckpointError(f"{p}: truncated or malformed safetensors header")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{p}: malformed safetensors header (not JSON)") from None
    meta = header.pop("__metadata__", {}) or {}
    body = raw[8 + n :]
    model = {}
    for name, spec in header.items():
        try:
            dtype = _ST_DTYPES[spec["dtype"]]
            b, e = (int(x) for x in spec["data_offsets"])
            shape = [int(x) for x in spec["shape"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{p}: unsupported or malformed tensor entry {name!r}") from None
        if not 0 <= b <= e <= len(body):
            raise CheckpointError(f"{p}: truncated safetensors data for {name!r}")
        np_dtype = {torch.float64: np.float64, torch.float32: np.float32, torch.int64: np.int64}[
            dtype
        ]
        arr = np.frombuffer(body[b:e], dtype=np_dtype)
        if arr.size != math.prod(shape):
            raise CheckpointError(f"{p}: tensor {name!r} has {arr.size} values for shape {shape}")
        model[name] = torch.from_numpy(arr.copy()).reshape(shape)
    try:
        config = json.loads(meta["config"])
        return {
            "format_version": int(meta.get("format_version", 0)),
            "config": config,
            "step": int(meta.get("step", 0)),
            "model": model,
            "optimizer": None,
        }
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        raise CheckpointError(f"{p}: safetensors metadata lacks a DUFM Lab config") from None


def _torch_load(p: Path, device: torch.device | str) -> Any:
    """``torch.load(weights_only=True)`` with its many failure types turned into one message."""
    try:
        return torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{p}: refused: the file carries Python objects or code that a safe load does "
                f"not allow ({msg[:200]})"
            ) from None
        raise CheckpointError(
            f"{p}: not a readable PyTorch checkpoint (truncated or another format): {msg[:200]}"
        ) from None


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> CheckpointState:
    """Read a ``.pt`` checkpoint with ``weights_only=True`` (or a ``.safetensors`` export): its
    format and config checked, its tensors not yet in a model. Building the model is the model
    kind's part (:func:`dufm_core.kinds.load_checkpoint`).

    Raises :class:`CheckpointError` with a one-line reason for a missing, truncated, foreign or
    code-carrying file; never unpickles arbitrary objects.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    state = _read_safetensors(p) if p.suffix == ".safetensors" else _torch_load(p, device)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(
            f"{p}: not a DUFM Lab checkpoint: expected a dict with keys format_version, config, "
            "step, model, optimizer"
        )
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format_version {version!r} is not supported "
            f"(this version reads {FORMAT_VERSION})"
        )
    try:
        cfg = RunConfig.from_dict(state["config"])
        cfg.validate()
    except ValueError as exc:
        raise CheckpointError(f"{p}: its config is invalid: {exc}") from None
    return CheckpointState(
        config=cfg,
        step=int(state.get("step", 0)),
        model=state["model"],
        optimizer=state.get("optimizer"),
        path=p,
    )
