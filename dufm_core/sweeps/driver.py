"""The sweep driver: run every member of a spec that has not ended on an executor, keep
``driver.json`` and ``summary.csv`` current, and stop on SIGTERM; start it in the background and
cancel it.

:func:`run_sweep` is the driver (``python -m dufm_core sweep SPEC``); :func:`launch_sweep` starts
that command as a detached process for the dashboard, and :func:`cancel_sweep` sends it SIGTERM:
members still waiting never start, running ones checkpoint and end ``cancelled``, and a later run
of the same spec resumes them. The executors are those of :mod:`dufm_core.process.executors`;
they all run :func:`dufm_core.sweeps.member.execute_member`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dufm_core import runlock
from dufm_core.process import executors
from dufm_core.process.env import cli_command, spawn_detached
from dufm_core.process.jobs import cancel as cancel_run
from dufm_core.process.signals import StopRequest, stop_signals
from dufm_core.run_schema import as_int
from dufm_core.store import Run, atomic_write_json, default_runs_dir, open_run
from dufm_core.sweeps.folder import (
    CANCEL_FILE,
    DONE_STATES,
    driver_status,
    prepare,
    read_record,
    runs_root_of,
    sweep_dir,
    write_record,
)
from dufm_core.sweeps.member import execute_member
from dufm_core.sweeps.spec import Member, SweepSpec
from dufm_core.sweeps.summary import state_counts, summary_rows, write_summary

Say = Callable[[str], None]


class SweepRunError(RuntimeError):
    """The sweep started (its folder exists) but its executor failed as a whole, e.g. a Ray
    cluster that cannot be reached; ``folder`` is the sweep folder, whose ``driver.json`` says
    ``failed``. Single members never raise this: their failures are their records."""

    def __init__(self, folder: Path, message: str) -> None:
        super().__init__(message)
        self.folder = folder


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the folder, state counts, members skipped and run."""

    folder: Path
    counts: dict[str, int]
    skipped: int
    ran: int
    seconds: float
    cancelled: bool = False


def pending_members(spec: SweepSpec, folder: Path) -> tuple[list[Member], int]:
    """(members to run, number skipped because they already ended). A finished member whose
    analysis failed is run again: :func:`execute_member` then only analyses it."""
    runs_root = runs_root_of(folder)
    todo, skipped = [], 0
    for m in spec.members():
        rec = read_record(folder, m.key)
        if (
            rec
            and rec.get("state") in DONE_STATES
            and rec.get("run")
            and (runs_root / rec["run"] / "config.json").is_file()
            and Run(runs_root / rec["run"]).status().get("state") in DONE_STATES
            and not rec.get("analysis_error")  # else: analysed again (not retrained)
        ):
            skipped += 1
        else:
            todo.append(m)
    return todo, skipped


# --------------------------------------------------------------------------- the driver
def run_sweep(
    spec: SweepSpec,
    runs_dir: str | Path | None = None,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    progress: Say | None = None,
) -> SweepResult:
    """Run every member of ``spec`` that has not ended yet and write ``summary.csv``.

    ``executor`` is ``local`` (a pool of ``jobs`` worker processes, default the number of cores)
    or ``ray`` (one Ray task per member; ``address`` joins an existing cluster, else a local Ray
    instance with ``jobs`` CPUs starts). The runs folder must be reachable, at the same path, by
    every worker. SIGTERM cancels: members still waiting never start, running ones checkpoint.
    """
    t0 = time.perf_counter()
    spec.members()  # validate all before anything is written
    root = _runs_root(runs_dir)
    ex = executors.make_executor(
        executor, jobs=jobs, address=address, cpus=spec.cpus, gpus=spec.gpus
    )
    how = ex.describe()  # a local pool that cannot start its workers says so here
    _refuse_a_second_driver(spec, root)
    folder = prepare(spec, root)
    todo, skipped = pending_members(spec, folder)
    say = progress or (lambda _msg: None)
    say(
        f"sweep {spec.name}: {len(spec.members())} members, {skipped} already ended, "
        f"{len(todo)} to run with the {how}"
    )
    driver = {
        "state": "running",
        **runlock.identity(),  # pid, its start time and command line: cancel verifies them
        "host": socket.gethostname(),
        "executor": executor,
        "executor_detail": how,
        "jobs": ex.slots,
        "address": address,
        "started_at": round(time.time(), 3),
        "finished_at": None,
        "members": len(spec.members()),
        "to_run": len(todo),
    }
    atomic_write_json(folder / "driver.json", driver)
    tasks = [_task(spec, m, root, folder) for m in todo]
    error: str | None = None
    with stop_signals(lambda _signum, _frame: _ask_to_stop(folder, ex)) as stop:
        outcomes = _Outcomes(folder, root, len(tasks), say, stop)
        try:
            ex.run(execute_member, tasks, outcomes.on_result, outcomes.on_cancel)
        except Exception as exc:  # the executor itself broke (Ray unreachable, ...): not a member
            error = f"{type(exc).__name__}: {exc}"
            raise SweepRunError(folder, f"sweep {spec.name}: the executor failed: {error}") from exc
        finally:
            counts = _finish(folder, driver, error, cancelled=bool(stop))
    seconds = time.perf_counter() - t0
    say(
        f"sweep {spec.name} {driver['state']} in {seconds:.1f} s: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    return SweepResult(
        folder=folder,
        counts=counts,
        skipped=skipped,
        ran=len(tasks),
        seconds=seconds,
        cancelled=bool(stop),
    )


def _runs_root(runs_dir: str | Path | None) -> Path:
    """The runs folder as an absolute path (workers elsewhere must reach it)."""
    return (Path(runs_dir) if runs_dir is not None else default_runs_dir()).resolve()


def _refuse_a_second_driver(spec: SweepSpec, root: Path) -> None:
    """Raise if another live process drives this sweep (a driver started in the background by
    :func:`launch_sweep` finds its own pid in ``driver.json``)."""
    running = driver_status(sweep_dir(spec.name, root))
    if running.get("state") in ("running", "starting") and running.get("pid") != os.getpid():
        raise RuntimeError(
            f"sweep {spec.name} is already being run by pid {running.get('pid')} on "
            f"{running.get('host')}; cancel it first (or, if that process is gone, delete "
            f"{sweep_dir(spec.name, root) / 'driver.json'})"
        )


def _task(spec: SweepSpec, m: Member, root: Path, folder: Path) -> dict[str, Any]:
    """The plain-data task of member ``m`` (see :func:`execute_member`)."""
    return {
        "key": m.key,
        "index": m.index,
        "values": m.values,
        "config": m.config.to_dict(),
        "runs_dir": str(root),
        "sweep_dir": str(folder),
        "full_hessian": spec.full_hessian,
        "full_params": spec.full_params,
    }


def _ask_to_stop(folder: Path, ex: executors.Executor) -> None:
    """On SIGTERM/SIGINT: members not started never start (the cancel file, which workers read),
    and the executor stops dispatching and asks running members to stop."""
    with contextlib.suppress(OSError):
        (folder / CANCEL_FILE).touch()
    ex.cancel()


class _Outcomes:
    """The driver's side of :meth:`executors.Executor.run`: a record for each member whose worker
    could not report, a progress line and a fresh ``summary.csv`` after each member, and on
    cancel SIGTERM to the workers of running members."""

    def __init__(self, folder: Path, root: Path, total: int, say: Say, stop: StopRequest) -> None:
        self.folder, self.root, self.total, self.say, self.stop = folder, root, total, say, stop
        self.done = 0

    def on_result(
        self, task: Mapping[str, Any], record: Mapping[str, Any] | None, error: str | None
    ) -> None:
        self.done += 1
        if record is None:
            record = self._lost(task, error)
        self.say(
            f"[{self.done}/{self.total}] member {record['index']} {record['state']}"
            + (f": {record['error']}" if record.get("error") else "")
        )
        with contextlib.suppress(OSError, ValueError):
            write_summary(self.folder)

    def _lost(self, task: Mapping[str, Any], error: str | None) -> dict[str, Any]:
        """The record of a member that could not report (its worker died, or it was cancelled
        before it started), written from here."""
        rec = read_record(self.folder, task["key"]) or {
            "key": task["key"],
            "index": task["index"],
            "values": task["values"],
            "run": None,
        }
        rec.update(
            state="cancelled" if self.stop else "failed",
            error=error,
            finished_at=round(time.time(), 3),
        )
        write_record(self.folder, rec)
        return rec

    def on_cancel(self, task: Mapping[str, Any]) -> None:
        """SIGTERM a running member's worker (this host): it checkpoints, ends `cancelled`."""
        rec = read_record(self.folder, task["key"])
        if rec and rec.get("run") and rec.get("state") == "running":
            with contextlib.suppress(OSError, ValueError):
                cancel_run(open_run(self.root / rec["run"]))


def _finish(
    folder: Path, driver: dict[str, Any], error: str | None, cancelled: bool
) -> dict[str, int]:
    """The final ``summary.csv`` and ``driver.json`` (state, error, counts); the counts."""
    rows = summary_rows(folder)
    write_summary(folder, rows)
    counts = state_counts(rows)
    state = "failed" if error else "cancelled" if cancelled else "finished"
    driver.update(state=state, error=error, finished_at=round(time.time(), 3), counts=counts)
    atomic_write_json(folder / "driver.json", driver)
    return counts


def main_progress(msg: str) -> None:
    """Progress lines of the CLI driver (standard error)."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- in the background
def launch_sweep(
    spec: SweepSpec,
    runs_dir: str | Path | None = None,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
) -> Path:
    """Start ``python -m dufm_core sweep`` for ``spec`` as a detached process (the dashboard's
    way: the page stays responsive, and the sweep survives a reload); return the sweep folder.
    The members are validated here first, so a bad spec fails before anything starts."""
    root = _runs_root(runs_dir)
    spec.members()  # validate every member first
    if executor == "ray" and (missing := executors.ray_missing()):
        raise RuntimeError(missing)  # before any folder is written
    status = driver_status(sweep_dir(spec.name, root))  # before touching the folder: a running
    if status.get("state") in ("running", "starting"):  # sweep's spec and cancel file stay
        raise RuntimeError(f"sweep {spec.name} is already running (pid {status.get('pid')})")
    folder = prepare(spec, root)
    args = ["sweep", str(folder / "spec.toml"), "--runs-dir", str(root), "--executor", executor]
    if jobs:
        args += ["--jobs", str(jobs)]
    if address:
        args += ["--address", address]
    proc = spawn_detached(cli_command(*args), folder / "log.txt")
    # reap the driver when it ends (the dashboard's server lives long: no zombies)
    threading.Thread(target=proc.wait, daemon=True).start()
    atomic_write_json(
        folder / "driver.json",
        {
            "state": "starting",
            "pid": proc.pid,
            "host": socket.gethostname(),
            "executor": executor,
            "started_at": round(time.time(), 3),
        },
    )
    return folder


def cancel_sweep(folder: str | Path) -> str:
    """Ask the sweep's driver to stop (SIGTERM): waiting members never start and running ones
    checkpoint and end `cancelled`; a later run of the same spec resumes them."""
    status = driver_status(folder)
    if status.get("state") not in ("running", "starting"):
        return f"nothing to cancel (driver {status.get('state')})"
    if status.get("host") != socket.gethostname():
        return f"the driver runs on another host ({status.get('host')})"
    pid, start = as_int(status.get("pid")) or 0, as_int(status.get("pid_start"))
    problem = runlock.worker_problem(pid, start, status.get("pid_cmd"))
    if problem is not None:  # never signal a process that is not this sweep's driver
        return f"not signalled: {problem}"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "the driver had already exited"
    except PermissionError:
        return f"not signalled: process {pid} belongs to another user"
    return f"sent SIGTERM to the sweep driver {pid}"

