"""The run store (docs/design.md §3): one folder per run, written so that nothing is lost.

::

    runs/<run_id>/
      config.json      resolved config
      status.json      state, step, total_steps, pid, times, error, device (replaced atomically)
      metrics.jsonl    one JSON object per logged step, append-only; a torn last line is skipped
      checkpoints/step_<8 digits>.pt   temp file + os.replace
      analysis/step_<8 digits>.json    cached analysis reports
      log.txt          worker stdout/stderr

Checkpoints hold only tensors and plain values, and are read with ``torch.load(weights_only=True)``
so a file that carries code is refused instead of executed.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dufm_core.config import RunConfig
from dufm_core.report_types import Report

FORMAT_VERSION = 1
STATES = ("queued", "running", "finished", "failed", "cancelled", "diverged")
INTERRUPTED = "interrupted"  # reported (never written) for `running` runs whose process is gone
RUNS_DIR_ENV = "DUFM_RUNS_DIR"
_CKPT_RE = re.compile(r"^step_(\d{8,})\.pt$")


def default_runs_dir() -> Path:
    """``$DUFM_RUNS_DIR`` if set, else ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


# --------------------------------------------------------------------------- atomic IO
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then ``os.replace``: a reader
    sees the old file or the new one, never a half-written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, tuples and nested containers to plain Python types, for
    the JSON files written here (reports' blocks are built with it).

    Tensors and arrays become (nested) lists, 0-d ones Python scalars; dict keys become str.
    Non-finite floats stay float (:func:`atomic_write_json` writes with ``allow_nan=True``).
    Anything else (e.g. an operator object) raises TypeError so that it is never silently
    dropped.
    """
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return obj.item() if obj.ndim == 0 else obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.item() if obj.ndim == 0 else obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"to_jsonable: cannot convert {type(obj).__name__}")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn (unparsable) line instead of failing.

    A crash can leave the last line half-written; any line that does not parse as a JSON
    object is skipped, and so are empty lines.
    """
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    with p.open("rb") as fh:
        for raw in fh:
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


# --------------------------------------------------------------------------- run folders
def _now() -> float:
    return round(time.time(), 3)


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` (on this host) alive? A zombie counts as dead; pid ≤ 0 means none."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (finished but not reaped) counts as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass
class Run:
    """Handle on one run folder; every accessor reads the disk (the single source of truth)."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def analysis_dir(self) -> Path:
        return self.path / "analysis"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    def config(self) -> RunConfig:
        return RunConfig.from_dict(read_json(self.path / "config.json"))

    def status(self) -> dict[str, Any]:
        """status.json, with ``state`` reported as ``interrupted`` for a `running` run whose
        worker process on this host is gone."""
        try:
            status = read_json(self.path / "status.json")
        except (OSError, json.JSONDecodeError):
            return {"state": "unknown", "step": 0, "total_steps": 0, "error": "no status.json"}
        if (
            status.get("state") == "running"
            and status.get("host") == socket.gethostname()
            and not pid_alive(int(status.get("pid") or 0))
        ):
            status = {
                **status,
                "state": INTERRUPTED,
                "error": status.get("error") or "worker process is gone; resume it",
            }
        return status

    def write_status(self, **updates: Any) -> dict[str, Any]:
        """Merge ``updates`` into status.json and replace it atomically."""
        path = self.path / "status.json"
        try:
            status = read_json(path)
        except (OSError, json.JSONDecodeError):
            status = {}
        status.update(updates)
        status["updated_at"] = _now()
        atomic_write_json(path, status)
        return status

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged step (torn lines skipped; if a step was logged twice the later wins)."""
        rows = read_jsonl(self.metrics_path)
        by_step: dict[int, dict[str, Any]] = {}
        for row in rows:
            if "step" in row:
                by_step[int(row["step"])] = row
        return [by_step[s] for s in sorted(by_step)]

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON line and flush it to the OS (one write call per line)."""
        line = json.dumps(row, allow_nan=True) + "\n"
        with self.metrics_path.open("a") as fh:
            fh.write(line)

    def truncate_metrics(self, max_step: int) -> None:
        """Keep only logged steps <= ``max_step`` (used on resume); atomic."""
        rows = [r for r in self.metrics() if int(r["step"]) <= max_step]
        atomic_write_bytes(
            self.metrics_path, "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows).encode()
        )

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_dir / f"step_{step:08d}.pt"

    def checkpoints(self) -> list[int]:
        """Steps that have a checkpoint, ascending."""
        if not self.checkpoint_dir.is_dir():
            return []
        steps = [
            int(m.group(1)) for f in self.checkpoint_dir.iterdir() if (m := _CKPT_RE.match(f.name))
        ]
        return sorted(steps)

    def latest_checkpoint(self) -> int | None:
        steps = self.checkpoints()
        return steps[-1] if steps else None

    # the report cache (docs/design.md §5.4); reports are made by dufm_core.reports
    def report_path(self, step: int) -> Path:
        return self.analysis_dir / f"step_{step:08d}.json"

    def cached_report(self, step: int) -> Report | None:
        """The cached report of checkpoint ``step``, or None if there is none, it cannot be
        read, or another report version made it (then it is to be recomputed)."""
        path = self.report_path(step)
        if not path.is_file():
            return None
        try:
            report = Report.from_json(read_json(path))
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        return report if report.current else None

    def write_report(self, step: int, report: Report | dict[str, Any]) -> None:
        """Cache the report of checkpoint ``step`` (its JSON, written atomically)."""
        self.analysis_dir.mkdir(exist_ok=True)
        atomic_write_json(self.report_path(step),
                          report.to_json() if isinstance(report, Report) else report)


def create_run(cfg: RunConfig, runs_dir: str | Path | None = None) -> Run:
    """Make a new run folder with config.json and a `queued` status.json."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-")
    desc = tag or f"{cfg.model}-{cfg.activation}-{cfg.loss}-K{cfg.K}-L{cfg.depth}"
    for _ in range(100):
        run_dir = root / f"{stamp}-{desc}-{secrets.token_hex(2)}"
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of a random tag
        raise RuntimeError(f"could not create a run folder in {root}")
    run = Run(run_dir)
    run.checkpoint_dir.mkdir()
    run.analysis_dir.mkdir()
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    run.write_status(
        state="queued",
        step=0,
        total_steps=cfg.steps,
        pid=None,
        host=None,
        created_at=_now(),
        started_at=None,
        finished_at=None,
        error=None,
        device=None,
    )
    run.metrics_path.touch()
    return run


def open_run(path: str | Path) -> Run:
    """A :class:`Run` for an existing folder; a clear error if it is not one."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a run folder (no config.json)")
    return Run(p)


@dataclass
class RunSummary:
    """One row of the runs table."""

    id: str
    path: Path
    state: str
    step: int
    total_steps: int
    config: dict[str, Any] = field(default_factory=dict)
    loss: float | None = None
    updated_at: float | None = None
    error: str | None = None


def iter_runs(runs_dir: str | Path | None = None) -> Iterator[Run]:
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if (p / "config.json").is_file():
            yield Run(p)


def _last_metrics_row(path: Path) -> dict[str, Any] | None:
    """The last parsable line of a metrics file, reading only its tail."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            tail = fh.read().splitlines()
    except OSError:
        return None
    for raw in reversed(tail):
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def list_runs(runs_dir: str | Path | None = None) -> list[RunSummary]:
    """Every run under ``runs_dir`` (oldest first) with its reported state and last loss."""
    out = []
    for run in iter_runs(runs_dir):
        status = run.status()
        try:
            cfg = read_json(run.path / "config.json")
        except (OSError, json.JSONDecodeError):
            cfg = {}
        last = _last_metrics_row(run.metrics_path)
        out.append(
            RunSummary(
                id=run.id,
                path=run.path,
                state=status.get("state", "unknown"),
                step=int(status.get("step") or 0),
                total_steps=int(status.get("total_steps") or 0),
                config=cfg,
                loss=None if last is None else last.get("loss"),
                updated_at=status.get("updated_at"),
                error=status.get("error"),
            )
        )
    return out


# --------------------------------------------------------------------------- checkpoints
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
