"""Executors: run one function over many sweep members, locally or on a Ray cluster.

Both run the same plain function (:func:`dufm_core.sweeps.execute_member`) on plain-data tasks
and report each result as it arrives, so the driver can write progress and ``summary.csv`` while
the sweep runs:

* ``local`` (default): a pool of at most ``jobs`` worker processes (default: the number of cores)
  on this machine. Workers come from a ``forkserver`` that has imported torch and the engine once,
  so a member starts in milliseconds instead of paying ~2 s of imports, and no worker is forked
  from a process whose thread pools have run (which is unsafe). Each worker is a long-lived process
  that trains and analyses one member after another; like a worker of :mod:`dufm_core.jobs` it
  writes everything to the run store, and a member's failure is its own record, never the pool's.
  A worker that dies (killed, out of memory) fails only the member it was running; the members it
  had not started go to a fresh pool.
* ``ray``: each member is one Ray task (``num_cpus``/``num_gpus`` per task from the spec's
  ``[resources]``). With ``address`` the driver joins an existing cluster (and ships the
  ``dufm_core`` package to it); without, it starts a local Ray instance with ``jobs`` CPUs and
  shuts it down at the end. If Ray is already initialised in the process, that instance is used
  and left running. The runs folder must be on storage every node mounts at the same path.

Cancelling (:meth:`Executor.cancel`, called from the driver's SIGTERM handler) stops members that
have not started and asks running ones to stop; they checkpoint and end ``cancelled``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

EXECUTORS = ("local", "ray")  # the CLI's choices; "inline" is for the Python API
POLL_S = 0.25
PRELOAD = ["dufm_core.sweeps", "dufm_core.training", "dufm_core.analysis"]
ROOT = Path(__file__).resolve().parents[1]

Task = Mapping[str, Any]
OnResult = Callable[[Task, dict[str, Any] | None, str | None], None]
OnCancel = Callable[[Task], None]


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class Executor(Protocol):
    """What the sweep driver needs from an executor."""

    slots: int

    def describe(self) -> str:
        """One line for logs: the executor and its parallelism."""
        ...

    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task],
            on_result: OnResult, on_cancel: OnCancel | None = None) -> None:
        """Run ``fn`` on every task; call ``on_result(task, record, None)`` for each result, or
        ``on_result(task, None, error)`` when the task could not report (its worker died, or it
        was cancelled before it started). Returns when every task is accounted for."""
        ...

    def cancel(self) -> None:
        """Stop starting tasks and ask running ones to stop (safe to call from a signal
        handler: it only sets a flag)."""
        ...


def make_executor(name: str, jobs: int | None = None, address: str | None = None,
                  cpus: float = 1.0, gpus: float = 0.0) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``)."""
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs: must be an integer >= 1 (got {jobs})")
    if name == "local":
        if address:
            raise ValueError("--address is for the ray executor")
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(jobs=jobs, address=address, cpus=cpus, gpus=gpus)
    if name == "inline":
        return InlineExecutor()
    raise ValueError(f"executor: must be one of {' | '.join(EXECUTORS)} (got {name!r})")


# --------------------------------------------------------------------------- inline
class InlineExecutor:
    """Members one after another in this process: the sequential baseline of the benchmark, and
    a debugging aid (a breakpoint in the training loop works). Not offered by the CLI."""

    slots = 1

    def __init__(self) -> None:
        self._cancel = threading.Event()

    def describe(self) -> str:
        return "inline executor (one member after another, in this process)"

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task],
            on_result: OnResult, on_cancel: OnCancel | None = None) -> None:
        for task in tasks:
            if self._cancel.is_set():
                on_result(task, None, "cancelled before it started")
                continue
            on_result(task, fn(task), None)


# --------------------------------------------------------------------------- local
def _init_worker(threads: int) -> None:
    """In each pool worker: a fair share of the cores for torch, and Ctrl-C left to the driver
    (which forwards a cancel); the trainer installs its own handler while it trains."""
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """A bounded pool of worker processes on this machine (see the module docstring)."""

    def __init__(self, jobs: int | None = None) -> None:
        self.slots = jobs or cpu_count()
        self._cancel = threading.Event()

    def describe(self) -> str:
        return f"local executor ({self.slots} worker processes)"

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task],
            on_result: OnResult, on_cancel: OnCancel | None = None) -> None:
        remaining = list(tasks)
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        threads = max(1, cpu_count() // self.slots)
        while remaining:
            if self._cancel.is_set():
                for task in remaining:
                    on_result(task, None, "cancelled before it started")
                return
            remaining = self._one_pool(ctx, fn, remaining, on_result, on_cancel, threads)

    def _one_pool(self, ctx: Any, fn: Callable[[Task], dict[str, Any]], tasks: list[Task],
                  on_result: OnResult, on_cancel: OnCancel | None, threads: int) -> list[Task]:
        """Run ``tasks`` in one pool; return those to retry in a fresh pool because the pool
        broke before they started."""
        retry: list[Task] = []
        workers = min(self.slots, len(tasks))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                   initializer=_init_worker, initargs=(threads,))
        cancelled = False
        try:
            futures: dict[Future, Task] = {pool.submit(fn, t): t for t in tasks}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = futures[fut]
                    if fut.cancelled():
                        on_result(task, None, "cancelled before it started")
                        continue
                    try:
                        record = fut.result()
                    except BrokenProcessPool:
                        if _has_started(task):
                            on_result(task, None, "the worker process died (killed, or out of "
                                      "memory) while running this member")
                        else:
                            retry.append(task)
                        continue
                    except Exception as exc:
                        on_result(task, None, f"{type(exc).__name__}: {exc}")
                        continue
                    on_result(task, record, None)
                if self._cancel.is_set() and not cancelled:
                    cancelled = True
                    for fut in pending:
                        fut.cancel()
                    for fut in pending:
                        if not fut.cancelled() and on_cancel is not None:
                            on_cancel(futures[fut])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if cancelled:
            for task in retry:
                on_result(task, None, "cancelled before it started")
            return []
        return retry


def _has_started(task: Task) -> bool:
    """Did a worker pick this task up? (Its member record names a run once it has.)"""
    from dufm_core.sweeps import read_record

    record = read_record(task["sweep_dir"], task["key"])
    return bool(record and record.get("state") == "running" and record.get("pid"))


# --------------------------------------------------------------------------- ray
class RayExecutor:
    """One Ray task per member (see the module docstring)."""

    def __init__(self, jobs: int | None = None, address: str | None = None, cpus: float = 1.0,
                 gpus: float = 0.0) -> None:
        self.jobs = jobs
        self.address = address
        self.cpus = cpus
        self.gpus = gpus
        self.slots = jobs or cpu_count()
        self._cancel = threading.Event()

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address else f"local Ray, {self.slots} CPUs"
        return f"ray executor ({where}; {self.cpus:g} CPU, {self.gpus:g} GPU per member)"

    def cancel(self) -> None:
        self._cancel.set()

    def _init(self) -> bool:
        """Connect to (or start) Ray unless it is already initialised; True if we did."""
        try:
            import ray
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'ray>=2.9'") from None
        if ray.is_initialized():
            return False
        if self.address:
            # ship the engine to the cluster's workers; they need torch, numpy and scipy
            runtime_env = {"py_modules": [str(ROOT / "dufm_core")],
                           "excludes": ["__pycache__", "*.pyc"]}
            ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
        else:
            runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}}
            ray.init(num_cpus=self.slots, include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False)
        return True

    def run(self, fn: Callable[[Task], dict[str, Any]], tasks: Sequence[Task],
            on_result: OnResult, on_cancel: OnCancel | None = None) -> None:
        if not tasks:
            return
        started_here = self._init()
        import ray
        from ray.exceptions import TaskCancelledError

        try:
            remote = ray.remote(fn).options(num_cpus=self.cpus, num_gpus=self.gpus,
                                            max_retries=0)
            # with a cluster, --jobs caps the members in flight; else Ray's resources do
            limit = self.jobs if self.address and self.jobs else len(tasks)
            queue = list(tasks)
            refs: dict[Any, Task] = {}
            cancelled = False
            while queue or refs:
                while queue and len(refs) < limit and not self._cancel.is_set():
                    task = queue.pop(0)
                    refs[remote.remote(dict(task))] = task
                if self._cancel.is_set() and not cancelled:
                    cancelled = True
                    for task in queue:
                        on_result(task, None, "cancelled before it started")
                    queue = []
                    for ref in refs:
                        with contextlib.suppress(Exception):
                            ray.cancel(ref)  # KeyboardInterrupt in the task: it checkpoints
                if not refs:
                    break
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    task = refs.pop(ref)
                    try:
                        record = ray.get(ref)
                    except TaskCancelledError:
                        on_result(task, None, "cancelled")
                        continue
                    except Exception as exc:  # the worker died or Ray lost the task
                        on_result(task, None, f"{type(exc).__name__}: {str(exc)[:500]}")
                        continue
                    on_result(task, record, None)
        finally:
            if started_here:
                ray.shutdown()
