"""The run store (docs/design.md §3): one folder per run, written so that nothing is lost.

::

    runs/<run_id>/
      config.json      resolved config
      status.json      state, step, total_steps, pid, times, error, device (replaced atomically)
      metrics.jsonl    one JSON object per logged step, append-only; a torn last line is skipped
      checkpoints/step_<8 digits>.pt   temp file + os.replace (dufm_core.checkpoints)
      analysis/step_<8 digits>.json    cached analysis reports
      log.txt          worker stdout/stderr
      lock             flock'ed by whatever trains (or deletes) the run (dufm_core.runlock)

Checkpoint files are :mod:`dufm_core.checkpoints`' part; who may train a run is
:mod:`dufm_core.runlock`'s.

Reading never fails on a bad file: an unreadable or malformed ``status.json`` is reported as
state ``unknown`` with an ``error`` saying why, every status field comes back well typed, a
metrics row whose step cannot be read is skipped, and a run whose ``config.json`` cannot be read
is listed as ``unknown``. Creating a run is atomic: its folder is built under a hidden name and
renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dufm_core.config import MODELS, ConfigError, RunConfig
from dufm_core.report_types import Report
from dufm_core.run_schema import (
    ENDED_STATES,
    INTERRUPTED,
    STATES,
    UNKNOWN,
    as_number,
    file_problem,
    typed_metrics_row,
    typed_status,
)
from dufm_core.runlock import RunBusyError, hold, pid_alive, same_process

__all__ = ["ENDED_STATES", "INTERRUPTED", "STATES", "UNKNOWN", "Run", "RunBusyError",
           "RunSummary", "StoreError", "atomic_write_bytes", "atomic_write_json", "create_run",
           "default_runs_dir", "find_run", "iter_runs", "list_runs", "open_run", "pid_alive",
           "read_json", "read_jsonl", "to_jsonable"]

RUNS_DIR_ENV = "DUFM_RUNS_DIR"
STALE_TEMP_S = 60.0  # a temp file of an atomic write older than this is an orphan
_CKPT_RE = re.compile(r"^step_(\d{8,})\.pt$")
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP_WRITER_RE = re.compile(r"\.([0-9a-f]{8})-(\d+)-[^.]*\.tmp$")  # .NAME.HOST-PID-XXXX.tmp


class StoreError(OSError):
    """The run store cannot write where it must (a full disk, no permission); one line."""


def default_runs_dir() -> Path:
    """``$DUFM_RUNS_DIR`` if set, else ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


# --------------------------------------------------------------------------- atomic IO
def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then ``os.replace``: a reader
    sees the old file or the new one, never a half-written one."""
    path = Path(path)
    # the writer's host and pid in the name let a trainer remove the orphans of dead writers
    prefix = f".{path.name}.{_HOST_TAG}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
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
    torch = sys.modules.get("torch")  # not imported here: a tensor exists only if torch does
    if torch is not None and isinstance(obj, torch.Tensor):
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
        """The run's config. FileNotFoundError when config.json is missing; ConfigError (one
        line naming config.json, or the bad key) when it cannot be read as a config."""
        path = self.path / "config.json"
        try:
            data = read_json(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path} is not a run folder (no config.json)") from None
        except (OSError, ValueError) as exc:
            raise ConfigError("config.json", f"{file_problem(str(path), exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError("config.json", f"{path} holds a JSON {type(data).__name__}, "
                                             "not a config object")
        try:
            return RunConfig.from_dict(data)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError("config.json", f"{path} is not a config ({exc})") from None

    def _read_status(self) -> dict[str, Any]:
        try:
            raw = read_json(self.path / "status.json")
        except (OSError, ValueError) as exc:
            return typed_status({}) | {"state": UNKNOWN, "error": file_problem("status.json", exc)}
        return typed_status(raw)

    def status(self) -> dict[str, Any]:
        """status.json with well-typed fields (:func:`typed_status`; ``unknown`` when it cannot
        be read), and ``state`` reported as ``interrupted`` for a `running` run whose worker on
        this host is gone (its pid is dead, or now names a process started at another time)."""
        status = self._read_status()
        if (
            status["state"] == "running"
            and status["host"] == socket.gethostname()
            and not same_process(status["pid"] or 0, status["pid_start"])
        ):
            status = {
                **status,
                "state": INTERRUPTED,
                "error": status["error"] or "worker process is gone; resume it",
            }
        return status

    def write_status(self, **updates: Any) -> dict[str, Any]:
        """Merge ``updates`` into status.json and replace it atomically (a corrupt status.json
        is replaced by the updates alone)."""
        path = self.path / "status.json"
        try:
            status = read_json(path)
        except (OSError, ValueError):
            status = {}
        if not isinstance(status, dict):
            status = {}
        status.update(updates)
        status["updated_at"] = _now()
        atomic_write_json(path, status)
        return status

    def _rows(self, typed: bool = True) -> list[dict[str, Any]]:
        """The logged rows by step (a later line of a step wins); rows whose step cannot be read
        are skipped; ``typed`` rows have well-typed known fields (else as written, step int)."""
        by_step: dict[int, dict[str, Any]] = {}
        for raw in read_jsonl(self.metrics_path):
            row = typed_metrics_row(raw)
            if row is not None:
                by_step[row["step"]] = row if typed else {**raw, "step": row["step"]}
        return [by_step[s] for s in sorted(by_step)]

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged step, ascending (torn and malformed lines skipped; if a step was logged
        twice the later wins); each row has an int ``step`` and well-typed known fields
        (:func:`typed_metrics_row`), but any field may be missing."""
        return self._rows()

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON line and flush it to the OS (one write call per line)."""
        line = json.dumps(row, allow_nan=True) + "\n"
        with self.metrics_path.open("a") as fh:
            fh.write(line)

    def truncate_metrics(self, max_step: int) -> None:
        """Keep only logged steps <= ``max_step`` (used on resume); atomic. Malformed lines go."""
        rows = [r for r in self._rows(typed=False) if r["step"] <= max_step]
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

    def set_aside_checkpoint(self, step: int) -> Path:
        """Rename the unloadable checkpoint of ``step`` to ``step_<step>.pt.unreadable`` (kept,
        but no longer a checkpoint of the run) and return its new path. Call it holding the run
        lock (a resume that falls back to an earlier checkpoint does)."""
        src = self.checkpoint_path(step)
        dst = src.with_name(src.name + ".unreadable")
        os.replace(src, dst)
        return dst

    # who trains the run (docs/design.md §3.6)
    def lock(self, purpose: str = "trained") -> contextlib.AbstractContextManager[None]:
        """The run lock for a block (:func:`dufm_core.runlock.hold`): RunBusyError at once, and
        nothing changed, if another process or thread trains (or deletes) the run."""
        return hold(self.path, purpose)

    def clean_stale_temps(self, min_age_s: float = STALE_TEMP_S) -> list[Path]:
        """Remove the temp files of atomic writes (``.NAME….tmp``) that no writer will finish, in
        the run folder, ``checkpoints/`` and ``analysis/``: those of a writer on this host that
        is gone, and any older than ``min_age_s``. Run it holding the run lock (a trainer does,
        on start), so that no checkpoint is being written; a live process's fresh temp file
        (e.g. the dashboard caching a report) is left alone. Returns the files removed."""
        now, me = time.time(), os.getpid()
        removed = []
        for folder in (self.path, self.checkpoint_dir, self.analysis_dir):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    age = now - entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
                m = _TEMP_WRITER_RE.search(entry.name)
                writer = int(m.group(2)) if m and m.group(1) == _HOST_TAG else None
                dead = writer is not None and writer != me and not pid_alive(writer)
                if dead or age > min_age_s:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
        return removed

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


def _run_name(cfg: RunConfig) -> str:
    """``<YYYYmmdd-HHMMSS>-<label>-<4 hex digits>`` (docs/design.md §3.1)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip("-")
    desc = tag or f"{cfg.model}-{cfg.activation}-{cfg.loss}-K{cfg.K}-L{cfg.depth}"
    return f"{stamp}-{desc}-{secrets.token_hex(2)}"


def _remove_abandoned_staging(root: Path, min_age_s: float = 3600.0) -> None:
    """Remove ``.new-…`` folders that a creator killed mid-way left over an hour ago."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if entry.name.startswith(".new-") and entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat(follow_symlinks=False).st_mtime > min_age_s:
                        shutil.rmtree(entry.path, ignore_errors=True)


def create_run(cfg: RunConfig, runs_dir: str | Path | None = None) -> Run:
    """Make a new run folder with config.json and a `queued` status.json.

    Atomic: the folder is built under a hidden name (``.new-…``, never listed) and renamed into
    place, so a run folder either is complete or does not exist; if anything fails (a full
    disk) the partial folder is removed and :class:`StoreError` says, in one line, which runs
    folder and why. (A folder left by a creator that was killed is removed an hour later.)"""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    staging = root / f".new-{secrets.token_hex(8)}"
    _remove_abandoned_staging(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        run = Run(staging)
        run.checkpoint_dir.mkdir()
        run.analysis_dir.mkdir()
        atomic_write_json(staging / "config.json", cfg.to_dict())
        run.write_status(state="queued", step=0, total_steps=cfg.steps, pid=None, host=None,
                         created_at=_now(), started_at=None, finished_at=None, error=None,
                         device=None)
        run.metrics_path.touch()
        for _ in range(100):
            run_dir = root / _run_name(cfg)
            if run_dir.exists():
                continue
            try:
                os.rename(staging, run_dir)  # fails if another run took the name meanwhile
            except OSError:
                if run_dir.exists():
                    continue
                raise
            return Run(run_dir)
        raise FileExistsError(0, "no free run folder name after 100 tries")
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StoreError(f"cannot create a run folder in {root}: "
                         f"{exc.strerror or exc}") from None


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
    a run (it could lead outside the runs folder), nor is a hidden folder (a run being made)."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return
    for p in sorted(root.iterdir()):
        if not p.name.startswith(".") and not p.is_symlink() and (p / "config.json").is_file():
            yield Run(p)


_RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}$")


def find_run(run_id: str, runs_dir: str | Path | None = None) -> Run | None:
    """The run called ``run_id`` in the runs folder, or None if there is none.

    The one place where a run named from outside (a link's ``?run=``, a form) becomes a folder:
    only a plain name that :func:`iter_runs` lists is accepted, so an absolute path, ``..``, a
    separator or a symbolic link never reaches a folder outside the runs folder.
    """
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
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
    """The last well-formed row of a metrics file (:func:`typed_metrics_row`), reading only its
    tail."""
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
            row = typed_metrics_row(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if row is not None:
            return row
    return None


def _listed_config(run: Run) -> tuple[dict[str, Any], str | None]:
    """(config dict, None), or ({}, why) when config.json cannot be read as a config of a known
    model: such a run is listed as ``unknown`` (it can still be deleted)."""
    try:
        cfg = run.config()
    except (OSError, ConfigError) as exc:
        return {}, str(exc)
    if cfg.model not in MODELS:
        return {}, f"config.json: model {cfg.model!r} is not one of {', '.join(MODELS)}"
    return cfg.to_dict(), None


def list_runs(runs_dir: str | Path | None = None) -> list[RunSummary]:
    """Every run under ``runs_dir`` (oldest first) with its reported state and last loss. A run
    whose status.json or config.json cannot be read is listed with state ``unknown`` and the
    reason in ``error``; nothing about one run stops the others from being listed."""
    out = []
    for run in iter_runs(runs_dir):
        status = run.status()
        config, config_error = _listed_config(run)
        last = _last_metrics_row(run.metrics_path)
        out.append(
            RunSummary(
                id=run.id,
                path=run.path,
                state=UNKNOWN if config_error else status["state"],
                step=status["step"],
                total_steps=status["total_steps"],
                config=config,
                loss=None if last is None else as_number(last.get("loss")),
                updated_at=status["updated_at"],
                error=config_error or status["error"],
            )
        )
    return out
