"""Launching, queueing and cancelling training workers (docs/design.md §1).

The dashboard never trains in its own process: :func:`launch` writes a `queued` run folder and
:func:`pump` starts queued runs as detached workers (:func:`dufm_core.process.worker.train_run`:
forked by the fork server, else ``python -m dufm_core.process.worker run RUN``), at most ``limit``
at a time (default 2, ``$DUFM_MAX_JOBS``). A worker that ends pumps the queue
again, and so does every page load, so queued runs start without a scheduler daemon. Workers run
in their own session: they survive a reload of the page and a restart of the Streamlit server.

Races between two pumps are settled by an exclusive ``claim`` file per run (``O_CREAT|O_EXCL``):
only the pump that creates it starts the worker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

from dufm_core.config import RunConfig
from dufm_core.process import launcher
from dufm_core.process.env import spawn_detached, worker_command
from dufm_core.store import Run, create_run, default_runs_dir, iter_runs

MAX_JOBS_ENV = "DUFM_MAX_JOBS"
DEFAULT_MAX_JOBS = 2


def max_jobs() -> int:
    """Concurrency limit: ``$DUFM_MAX_JOBS`` or 2."""
    try:
        return max(1, int(os.environ.get(MAX_JOBS_ENV, DEFAULT_MAX_JOBS)))
    except ValueError:
        return DEFAULT_MAX_JOBS


def launch(cfg: RunConfig, runs_dir: str | Path | None = None, limit: int | None = None) -> Run:
    """Validate ``cfg``, make its `queued` run folder and start it if a slot is free."""
    cfg.validate()
    from dufm_core import kinds  # imported here: torch only when a run is launched

    kinds.check_memory(cfg)  # a run above the memory cap gets no folder (dufm_core/resources.py)
    run = create_run(cfg, runs_dir)
    pump(run.path.parent, limit)
    return run


def _claim(run: Run) -> bool:
    try:
        fd = os.open(run.path / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
    os.close(fd)
    return True


def start_worker(run: Run) -> int:
    """Start the detached worker that trains ``run`` (output to ``log.txt``); return its pid.

    Through the fork server of :mod:`dufm_core.process.launcher` when one serves this runs
    folder (the worker starts in milliseconds), else as a fresh process.
    """
    pid = launcher.launch_via_server(run.path.parent, run.path)
    if pid is None:
        pid = _spawn_process(run)
    # record the pid at once, so the run never looks queued-but-claimed or dead while it starts
    run.write_status(state="running", pid=pid, host=socket.gethostname())
    return pid


def _spawn_process(run: Run) -> int:
    """A fresh detached ``python -m dufm_core.process.worker run RUN`` (output to ``log.txt``)."""
    return spawn_detached(worker_command("run", str(run.path)), run.log_path).pid


def pump(runs_dir: str | Path | None = None, limit: int | None = None) -> list[Run]:
    """Start queued runs (oldest first) while fewer than ``limit`` are running; return them."""
    limit = max_jobs() if limit is None else limit
    runs = list(iter_runs(runs_dir if runs_dir is not None else default_runs_dir()))
    states = {run.path: run.status().get("state") for run in runs}
    running = sum(1 for s in states.values() if s == "running")
    started = []
    for run in runs:
        if running >= limit:
            break
        if states[run.path] == "queued" and _claim(run):
            start_worker(run)
            started.append(run)
            running += 1
    return started


def cancel(run: Run) -> str:
    """Cancel a run: a queued run is marked `cancelled`; a running one gets SIGTERM (it writes a
    checkpoint and marks itself `cancelled`). Returns what was done."""
    status = run.status()
    state = status.get("state")
    if state == "queued" and _claim(run):
        run.write_status(state="cancelled", error="cancelled before it started")
        return "cancelled (was queued)"
    if state == "running":
        pid = int(status.get("pid") or 0)
        if status.get("host") not in (None, socket.gethostname()):
            return f"cannot signal a worker on another host ({status.get('host')})"
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return "the worker had already exited"
        return f"sent SIGTERM to worker {pid}"
    return f"nothing to cancel (state {state})"


def delete(run: Run) -> None:
    """Remove a run folder; refused while its worker runs (cancel it first)."""
    if run.status().get("state") in ("running", "queued"):
        raise RuntimeError(f"{run.id} is {run.status().get('state')}: cancel it before deleting")
    shutil.rmtree(run.path)
