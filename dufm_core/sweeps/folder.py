"""The sweep folder on disk (docs/sweeps.md §2): where it is, its manifest, member records and
``driver.json``.

::

    runs/sweeps/<name>/          stable: a rerun of the same spec finds it
      spec.toml                  the spec as given
      sweep.json                 the members: index, key, grid values, resolved config
      driver.json                executor, pid, host, state of the process running the sweep
      members/<key>.json         one record per member: its run id, state, summary row
      summary.csv                one row per member (:mod:`dufm_core.sweeps.summary`)
      log.txt                    the driver's output when the dashboard started it
    runs/<run_id>/               the member runs themselves, ordinary run folders, so every
                                 page of the dashboard and every CLI verb can open them

A rerun skips members that already ended (:data:`DONE_STATES`: outcomes of the config, not
accidents), resumes :data:`RESUMABLE_STATES` from their last checkpoint, and starts the rest
afresh.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

from dufm_core import runlock
from dufm_core.run_schema import as_int
from dufm_core.store import (
    atomic_write_bytes,
    atomic_write_json,
    default_runs_dir,
    read_json,
)
from dufm_core.sweeps.spec import SweepSpec

SWEEPS_SUBDIR = "sweeps"
DONE_STATES = ("finished", "diverged")  # a rerun keeps these: they are results of the config
ENDED_STATES = ("finished", "diverged", "failed", "cancelled")  # nothing runs any more
RESUMABLE_STATES = ("cancelled", "interrupted", "running")  # resumed from the last checkpoint
CANCEL_FILE = "cancel"  # present while a cancelled sweep winds down: members do not start


def sweeps_root(runs_dir: str | Path | None = None) -> Path:
    """``<runs>/sweeps``."""
    return (Path(runs_dir) if runs_dir is not None else default_runs_dir()) / SWEEPS_SUBDIR


def sweep_dir(name: str, runs_dir: str | Path | None = None) -> Path:
    """The stable folder of sweep ``name``: ``<runs>/sweeps/<name>``."""
    return sweeps_root(runs_dir) / name


def runs_root_of(folder: str | Path) -> Path:
    """The runs folder a sweep folder belongs to (``<runs>/sweeps/<name>`` → ``<runs>``)."""
    return Path(folder).resolve().parent.parent


def _record_path(folder: Path, key: str) -> Path:
    return folder / "members" / f"{key}.json"


def read_record(folder: str | Path, key: str) -> dict[str, Any] | None:
    """A member's record, or None if it never started."""
    try:
        return read_json(_record_path(Path(folder), key))
    except (OSError, ValueError):
        return None


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Write a member's record (``members/<key>.json``, atomically), stamped ``updated_at``."""
    (folder / "members").mkdir(parents=True, exist_ok=True)
    record["updated_at"] = round(time.time(), 3)
    atomic_write_json(_record_path(folder, record["key"]), record)


def prepare(spec: SweepSpec, runs_dir: str | Path | None = None) -> Path:
    """Create (or refresh) the sweep folder: ``spec.toml`` and ``sweep.json``. Idempotent."""
    members = spec.members()
    folder = sweep_dir(spec.name, runs_dir)
    (folder / "members").mkdir(parents=True, exist_ok=True)
    (folder / CANCEL_FILE).unlink(missing_ok=True)
    atomic_write_bytes(folder / "spec.toml", spec.source.encode())
    atomic_write_json(
        folder / "sweep.json",
        {
            "name": spec.name,
            "description": spec.description,
            "axes": spec.axes,
            "full_hessian": spec.full_hessian,
            "full_params": spec.full_params,
            "resources": {"cpus": spec.cpus, "gpus": spec.gpus},
            "members": [
                {"index": m.index, "key": m.key, "values": m.values, "config": m.config.to_dict()}
                for m in members
            ],
            "updated_at": round(time.time(), 3),
        },
    )
    return folder


def manifest(folder: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder."""
    return read_json(Path(folder) / "sweep.json")


def driver_status(folder: str | Path) -> dict[str, Any]:
    """``driver.json`` with ``state`` ``interrupted`` when its process on this host is gone."""
    try:
        status = read_json(Path(folder) / "driver.json")
    except (OSError, ValueError):
        return {"state": "never started"}
    if not isinstance(status, dict):
        return {"state": "unknown", "error": "driver.json is not a JSON object"}
    if (
        status.get("state") in ("running", "starting")
        and status.get("host") == socket.gethostname()
        and not runlock.same_process(as_int(status.get("pid")) or 0,
                                     as_int(status.get("pid_start")))
    ):
        status["state"] = "interrupted"  # the driver is gone (or its pid now is another's)
    return status
