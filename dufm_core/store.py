"""The run store (docs/design.md §3): one folder per run, written so that nothing is lost.

::

    runs/<run_id>/
      config.json      resolved config
      status.json      state, step, total_steps, pid, times, error, device (replaced atomically)
      metrics.jsonl    one JSON object per logged step, append-only; a torn last line is skipped
      checkpoints/step_<8 digits>.pt   temp file + os.replace (dufm_core.checkpoints)
      analysis/step_<8 digits>.json    cached analysis reports
      log.txt          worker stdout/stderr

Checkpoint files are :mod:`dufm_core.checkpoints`' part.
"""

from __future__ import annotations

import json
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
    """Every run folder directly under the runs folder, in name order. A symbolic link is never
    a run (it could lead outside the runs folder)."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if not p.is_symlink() and (p / "config.json").is_file():
            yield Run(p)


_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def find_run(run_id: str, runs_dir: str | Path | None = None) -> Run | None:
    """The run called ``run_id`` in the runs folder, or None if there is none.

    The one place where a run named from outside (a link's ``?run=``, a form) becomes a folder:
    only a plain name that :func:`iter_runs` lists is accepted, so an absolute path, ``..``, a
    separator or a symbolic link never reaches a folder outside the runs folder.
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id) or run_id in (".", ".."):
        return None
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    path = root / run_id
    if path.is_symlink() or not (path / "config.json").is_file():
        return None
    try:
        if path.resolve().parent != root.resolve():
            return None
    except OSError:
        return None
    return Run(path)


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
