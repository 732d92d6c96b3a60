"""Launching, queueing and cancelling training workers (docs/design.md §1).

The dashboard never trains in its own process: :func:`launch` writes a `queued` run folder and
:func:`pump` starts queued runs as detached workers (:func:`dufm_core.process.worker.train_run`:
forked by the fork server, else ``python -m dufm_core.process.worker run RUN``), at most ``limit``
at a time (default 2, ``$DUFM_MAX_JOBS``). A worker that ends pumps the queue
again, and so does every page load, so queued runs start without a scheduler daemon. Workers run
in their own session: they survive a reload of the page and a restart of the Streamlit server.

Pumps never exceed the limit, however many run at once (page loads, ending workers): each
counts and starts under an exclusive ``flock`` on the runs folder, and a queued run that is
claimed but whose worker has not yet written `running` counts as running. Besides, an exclusive
``claim`` file per run (``O_CREAT|O_EXCL``) makes sure one run is started (or cancelled) once.

Cancel signals a worker only after checking that the pid in ``status.json`` is still that worker
(its start time and command line, :func:`dufm_core.runlock.worker_problem`), and delete holds the
run lock, so neither can hit a process or a folder that something else is using.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from dufm_core.config import RunConfig
from dufm_core.process import launcher
from dufm_core.process.env import spawn_detached, worker_command
from dufm_core.runlock import RunBusyError, identity, worker_problem
from dufm_core.store import INTERRUPTED, Run, create_run, default_runs_dir, iter_runs

MAX_JOBS_ENV = "DUFM_MAX_JOBS"
DEFAULT_MAX_JOBS = 2
PUMP_WAIT_S = 30.0  # how long a pump waits for another one before leaving the work to it
STARTING_S = 60.0  # a claimed queued run counts as running this long (its worker is starting)


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
    # record the worker at once (pid, start time, command line), so the run never looks
    # queued-but-claimed or dead while it starts; the worker records itself again, and a worker
    # that got there first (or has already finished) is not overwritten
    if run.status()["state"] == "queued":
        run.write_status(state="running", host=socket.gethostname(), **identity(pid))
    return pid


def _spawn_process(run: Run) -> int:
    """A fresh detached ``python -m dufm_core.process.worker run RUN`` (output to ``log.txt``)."""
    return spawn_detached(worker_command("run", str(run.path)), run.log_path).pid


@contextlib.contextmanager
def _pump_lock(root: Path) -> Iterator[bool]:
    """Hold the pump lock of the runs folder ``root`` (a ``flock`` on the folder itself, so no
    file is added beside the runs) for the block; yields False (and holds nothing) if another
    pump kept it for :data:`PUMP_WAIT_S` (that pump then does the work)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + PUMP_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.01)
        yield True
    finally:
        os.close(fd)  # drops the lock


def _occupies_slot(run: Run, state: str) -> bool:
    """Does ``run`` count against the limit: running, or claimed and starting?"""
    if state == "running":
        return True
    if state != "queued":
        return False
    try:
        return time.time() - (run.path / "claim").stat().st_mtime < STARTING_S
    except OSError:
        return False


def _start(run: Run) -> bool:
    """Start a claimed run's worker; if that fails the run is marked `failed` with the reason."""
    try:
        start_worker(run)
    except OSError as exc:
        run.write_status(state="failed", error=f"could not start a worker: {exc}")
        return False
    return True


def pump(runs_dir: str | Path | None = None, limit: int | None = None) -> list[Run]:
    """Start queued runs (oldest first) while fewer than ``limit`` are running; return them.

    Safe against concurrent pumps (threads or processes): counting and starting happen under the
    runs folder's pump lock, and a run's status is never an obstacle (an unreadable one is
    ``unknown``: neither running nor queued)."""
    limit = max_jobs() if limit is None else limit
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not root.is_dir():
        return []
    started: list[Run] = []
    with _pump_lock(root) as locked:
        if not locked:
            return started
        runs = list(iter_runs(root))
        states = {run.path: run.status()["state"] for run in runs}
        running = sum(1 for run in runs if _occupies_slot(run, states[run.path]))
        for run in runs:
            if running >= limit:
                break
            if states[run.path] == "queued" and _claim(run) and _start(run):
                started.append(run)
                running += 1
    return started


def cancel(run: Run) -> str:
    """Cancel a run: a queued run is marked `cancelled`; a running one gets SIGTERM (it writes a
    checkpoint and marks itself `cancelled`), but only if the pid that status.json names is
    still that run's worker (same start time, a DUFM Lab command line). Returns what was done."""
    status = run.status()
    state = status["state"]
    if state == "queued" and _claim(run):
        run.write_status(state="cancelled", error="cancelled before it started")
        return "cancelled (was queued)"
    if state in ("running", INTERRUPTED):  # interrupted: say why its pid is not signalled
        pid = status["pid"] or 0
        if status["host"] not in (None, socket.gethostname()):
            return f"cannot signal a worker on another host ({status['host']})"
        problem = worker_problem(pid, status["pid_start"], status["pid_cmd"])
        if problem is not None:
            return f"not signalled: {problem}"
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return "the worker had already exited"
        except PermissionError:
            return f"not signalled: no permission to signal process {pid} (another user's)"
        return f"sent SIGTERM to worker {pid}"
    return f"nothing to cancel (state {state})"


def delete(run: Run) -> None:
    """Remove a run folder; refused (RuntimeError, one line) while it is queued or running, or
    while anything holds its run lock (a trainer, whatever status.json says)."""
    state = run.status()["state"]
    if state in ("running", "queued"):
        raise RuntimeError(f"{run.id} is {state}: cancel it before deleting")
    try:
        with run.lock("deleted"):
            shutil.rmtree(run.path)
    except RunBusyError as exc:
        raise RuntimeError(f"{exc}: cancel it before deleting") from None
