"""Executors: run one function over many sweep members, locally or on a Ray cluster.

Every executor runs the same plain function (:func:`dufm_core.sweeps.member.execute_member`) on
plain-data tasks and reports each result as it arrives, so the driver can write progress and
``summary.csv`` while the sweep runs. They share one dispatch loop (:class:`_Pool`): keep the
free slots busy, hand results to the driver, and on cancel report the waiting tasks as cancelled
and ask the running ones to stop. What differs is only how a task is started and collected:

* ``local`` (default): at most ``jobs`` worker processes (default: the number of cores) on this
  machine, each long-lived: it trains and analyses one member after another, taking tasks as JSON
  lines on a pipe and answering on another. Workers are **forked from the driver** when that is
  safe (:func:`fork_blocker`): the driver has already imported torch and the engine, so a worker
  is ready in milliseconds instead of paying ~2 s of ``import torch``. Otherwise (other threads
  alive in the caller, workers that need several torch threads, CUDA or Ray initialised here, or
  ``$DUFM_SWEEP_START=spawn``) each worker is a fresh ``python -m dufm_core.process.worker pool``
  process, into which nothing of the driver's state, threads or ``__main__`` leaks. Either way
  the worker's side is :func:`dufm_core.process.worker.serve_tasks`. A worker that dies
  (killed, out of memory) fails only the member it was running, and a new worker takes its
  place; if workers die before they are ready, the remaining members fail with that reason
  instead of being retried for ever.
* ``ray``: each member is one Ray task (``num_cpus``/``num_gpus`` per task from the spec's
  ``[resources]``). With ``address`` the driver joins an existing cluster (and ships the
  ``dufm_core`` package to it); without, it starts a local Ray instance with ``jobs`` CPUs and
  shuts it down at the end. If Ray is already initialised in the process, that instance is used
  and left running. The runs folder must be on storage every node mounts at the same path.
  Members asking for more CPUs or GPUs than the whole cluster has fail at once with that reason
  (Ray would otherwise wait for them for ever).
* ``inline`` (Python API only): members one after another in this process.

Cancelling (:meth:`_Pool.cancel`, called from the driver's SIGTERM handler) stops members that
have not started and asks running ones to stop; they checkpoint and end ``cancelled``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from dufm_core.process.env import child_env, worker_command
from dufm_core.process.ray_cluster import connect_ray, ray_missing
from dufm_core.process.worker import call_task, forked_pool_worker, function_name

EXECUTORS = ("local", "ray")  # the CLI's choices; "inline" is for the Python API
START_METHODS = ("auto", "fork", "spawn")  # how the local executor starts its workers
START_ENV = "DUFM_SWEEP_START"  # overrides the local executor's start method
# what a member imports lazily: loaded in the driver before forking, so workers inherit them
PRELOAD = ("dufm_core.kinds", "dufm_core.reports", "dufm_core.collapse", "dufm_core.store")
POLL_S = 0.25
CANCELLED_BEFORE_START = "cancelled before it started"
WORKER_START_FAILURES = 2  # workers that die before they are ready: then the rest fail, no loop

Task = Mapping[str, Any]
TaskFn = Callable[[Task], dict[str, Any]]
OnResult = Callable[[Task, dict[str, Any] | None, str | None], None]
OnCancel = Callable[[Task], None]
Outcome = tuple[Task, dict[str, Any] | None, str | None]  # (task, record, error): one of the two


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_executor(
    name: str,
    jobs: int | None = None,
    address: str | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    start: str | None = None,
) -> _Pool:
    """The executor called ``name`` (``local``, ``ray`` or ``inline``). Raises ``ValueError``
    for a bad option (and ``RuntimeError`` when Ray is asked for but not installed) before
    anything runs. ``start`` is the local executor's start method (default ``$DUFM_SWEEP_START``
    or ``auto``)."""
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs: must be an integer >= 1 (got {jobs})")
    if address and name != "ray":
        raise ValueError("--address is for the ray executor")
    if name == "local":
        return LocalExecutor(jobs, start=start)
    if name == "ray":
        return RayExecutor(jobs=jobs, address=address, cpus=cpus, gpus=gpus)
    if name == "inline":
        return InlineExecutor()
    raise ValueError(f"executor: must be one of {' | '.join(EXECUTORS)} (got {name!r})")


# --------------------------------------------------------------------------- the shared loop
class _Pool:
    """The dispatch loop every executor shares; subclasses say how a task starts and ends.

    Hooks: :meth:`_open` (before the first task; may return a reason why no task can run),
    :meth:`_has_room`, :meth:`_submit`, :meth:`_busy`, :meth:`_collect` (wait a little and return
    the outcomes that arrived), :meth:`_stop_running` (on cancel) and :meth:`_close` (always).
    """

    slots: int = 1

    def __init__(self) -> None:
        self._cancel = threading.Event()

    def describe(self) -> str:
        """One line for logs: the executor and its parallelism."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop starting tasks and ask running ones to stop (safe from a signal handler: it only
        sets a flag that the loop reads)."""
        self._cancel.set()

    def run(
        self,
        fn: TaskFn,
        tasks: Sequence[Task],
        on_result: OnResult,
        on_cancel: OnCancel | None = None,
    ) -> None:
        """Run ``fn`` on every task; call ``on_result(task, record, None)`` for each result, or
        ``on_result(task, None, error)`` when the task could not report (it raised, its worker
        died, or it was cancelled before it started). Returns when every task is accounted for.
        """
        if not tasks:
            return
        queue: deque[Task] = deque(tasks)
        cancelled = False
        try:
            blocked = self._open(fn)
            if blocked:
                while queue:
                    on_result(queue.popleft(), None, blocked)
            while queue or self._busy():
                if self._cancel.is_set() and not cancelled:
                    cancelled = True
                    while queue:
                        on_result(queue.popleft(), None, CANCELLED_BEFORE_START)
                    self._stop_running(on_cancel)
                while queue and self._has_room():
                    self._submit(queue.popleft())
                for task, record, error in self._collect(queue):
                    on_result(task, record, error)
        finally:
            self._close()

    # hooks ------------------------------------------------------------------------------
    def _open(self, fn: TaskFn) -> str | None:
        return None

    def _has_room(self) -> bool:
        raise NotImplementedError

    def _submit(self, task: Task) -> None:
        raise NotImplementedError

    def _busy(self) -> bool:
        raise NotImplementedError

    def _collect(self, queue: deque[Task]) -> list[Outcome]:
        raise NotImplementedError

    def _stop_running(self, on_cancel: OnCancel | None) -> None:
        return None

    def _close(self) -> None:
        return None


# --------------------------------------------------------------------------- inline
class InlineExecutor(_Pool):
    """Members one after another in this process: the sequential baseline of the benchmark, and
    a debugging aid (a breakpoint in the training loop works). Not offered by the CLI."""

    slots = 1

    def describe(self) -> str:
        return "inline executor (one member after another, in this process)"

    def _open(self, fn: TaskFn) -> str | None:
        self._fn = fn
        self._done: list[Outcome] = []
        return None

    def _has_room(self) -> bool:
        return not self._done

    def _submit(self, task: Task) -> None:
        self._done.append((task, *call_task(self._fn, task)))

    def _busy(self) -> bool:
        return bool(self._done)

    def _collect(self, queue: deque[Task]) -> list[Outcome]:
        out, self._done = self._done, []
        return out


# --------------------------------------------------------------------------- local
def fork_blocker(threads: int) -> str | None:
    """Why workers must not be forked from this process now (None: forking is safe).

    A fork copies only the calling thread, so any lock another thread holds stays held in the
    child for ever. Refused when: the platform has no ``fork``; a worker would run torch with
    more than one thread (a child that enters an OpenMP parallel region after the parent has
    started an OpenMP team hangs; measured here, see docs/benchmarks.md); another Python thread
    is alive; CUDA is initialised (a forked child cannot use it); or Ray runs in this process.
    Native helper threads that remain are fork-safe for a one-thread child: OpenBLAS stops its
    pool around ``fork`` (``pthread_atfork``), and an idle OpenMP pool is never entered."""
    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return "fork is not available on this platform"
    if threads != 1:
        return f"each worker would use {threads} torch threads"
    if threading.active_count() > 1:
        return f"{threading.active_count() - 1} other Python thread(s) alive in the driver"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialised in the driver"
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        return "Ray is running in the driver"
    return None


@dataclass
class _Worker:
    """One worker process of the local pool and the task it is running, if any."""

    pid: int
    send: BinaryIO  # the worker's task pipe (its standard input when spawned)
    recv: int  # file descriptor of its reply pipe
    proc: subprocess.Popen | None = None  # None: forked from this process
    task: Task | None = None
    ready: bool = False  # it imported the engine and the function
    buffer: bytes = b""

    def wait(self, timeout: float | None = None) -> int | None:
        """Reap the process; its exit code (negative: killed by that signal), or None if it
        is still running after ``timeout`` seconds."""
        if self.proc is not None:
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            except ChildProcessError:
                return 0  # already reaped
            if pid:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the worker (ignored if it is gone)."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, sig)


class LocalExecutor(_Pool):
    """A bounded pool of worker processes on this machine (see the module docstring)."""

    def __init__(self, jobs: int | None = None, start: str | None = None) -> None:
        super().__init__()
        self.slots = jobs or cpu_count()
        self.start = start or os.environ.get(START_ENV) or "auto"
        if self.start not in START_METHODS:
            raise ValueError(
                f"start method: must be one of {' | '.join(START_METHODS)} (got {self.start!r})"
            )
        self.threads = max(1, cpu_count() // self.slots)  # torch threads per worker
        self.forked: bool | None = None  # how the last run started its workers

    def start_method(self) -> tuple[str, str]:
        """(``fork`` or ``spawn``, why) for workers started now."""
        if self.start == "spawn":
            return "spawn", f"{START_ENV}=spawn"
        blocker = fork_blocker(self.threads)
        if blocker is None:
            return "fork", "forked from the driver"
        if self.start == "fork":
            raise RuntimeError(f"cannot fork the sweep workers: {blocker}")
        return "spawn", blocker

    def describe(self) -> str:
        method, why = self.start_method()
        how = "forked from the driver" if method == "fork" else f"fresh processes: {why}"
        return f"local executor ({self.slots} worker processes, {how})"

    # the pool -----------------------------------------------------------------------------
    def _open(self, fn: TaskFn) -> str | None:
        self._fn_name = function_name(fn)
        self._workers: list[_Worker] = []
        self._start_failures = 0
        self._sel = selectors.DefaultSelector()
        self.forked = self.start_method()[0] == "fork"
        if self.forked:  # import once here, so that every worker inherits it
            for module in (*PRELOAD, fn.__module__):
                importlib.import_module(module)
            self._fn = fn
        return None

    def _has_room(self) -> bool:
        return len(self._workers) < self.slots or any(w.task is None for w in self._workers)

    def _submit(self, task: Task) -> None:
        w = next((w for w in self._workers if w.task is None), None)
        if w is None:
            w = self._fork() if self.forked else self._spawn()
            self._workers.append(w)
            self._sel.register(w.recv, selectors.EVENT_READ, w)
        w.task = task
        try:
            w.send.write(json.dumps(dict(task)).encode() + b"\n")
            w.send.flush()
        except OSError:
            pass  # the worker died: its reply pipe reaches EOF and is handled in _collect

    def _busy(self) -> bool:
        return any(w.task is not None for w in self._workers)

    def _collect(self, queue: deque[Task]) -> list[Outcome]:
        out: list[Outcome] = []
        for key, _ in self._sel.select(timeout=POLL_S):
            w: _Worker = key.data
            chunk = os.read(w.recv, 1 << 20)
            if chunk:
                w.buffer += chunk
                while b"\n" in w.buffer:
                    line, w.buffer = w.buffer.split(b"\n", 1)
                    out.extend(self._reply(w, line))
                continue
            out.extend(self._gone(w, queue))
        return out

    @staticmethod
    def _reply(w: _Worker, line: bytes) -> list[Outcome]:
        """A reply line of worker ``w``: ``ready``, or the outcome of its task."""
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {"ok": False, "error": f"unreadable reply from the worker: {line[:200]!r}"}
        if msg.get("ready"):
            w.ready = True
            return []
        task, w.task = w.task, None
        if task is None:
            return []
        if msg.get("ok"):
            return [(task, msg["result"], None)]
        return [(task, None, msg.get("error") or "the worker reported an error")]

    def _gone(self, w: _Worker, queue: deque[Task]) -> list[Outcome]:
        """Worker ``w`` closed its reply pipe: it died. Fail its member, or (if it never got
        ready) retry it, up to :data:`WORKER_START_FAILURES` times for the whole pool."""
        self._sel.unregister(w.recv)
        os.close(w.recv)
        self._workers.remove(w)
        why = f"the worker process died (exit code {w.wait()})"
        if w.ready:  # killed, or out of memory, while it ran this member
            return [(w.task, None, why + " while running this member")] if w.task else []
        if w.task is not None:  # it never got going (cannot import the engine?)
            queue.appendleft(w.task)
        self._start_failures += 1
        if self._start_failures < WORKER_START_FAILURES:
            return []
        failed = [(t, None, why + " before it could start any member") for t in queue]
        queue.clear()
        return failed

    def _stop_running(self, on_cancel: OnCancel | None) -> None:
        for w in self._workers:
            if w.task is not None and on_cancel is not None:
                on_cancel(w.task)

    def _close(self) -> None:
        """Close every task pipe: idle workers then exit. A worker still busy means we are
        leaving abnormally, and it is stopped. Forked workers leave with ``os._exit`` and are
        reaped here; fresh interpreters' teardown is not waited for (a daemon thread reaps)."""
        workers = getattr(self, "_workers", [])
        for w in workers:
            with contextlib.suppress(OSError):
                w.send.close()
            if w.task is not None:
                w.signal(signal.SIGTERM)
            with contextlib.suppress(OSError, KeyError, ValueError):
                self._sel.unregister(w.recv)
            with contextlib.suppress(OSError):
                os.close(w.recv)
        forked = [w for w in workers if w.proc is None]
        for w in forked:
            if w.wait(timeout=10.0) is None:
                w.signal(signal.SIGKILL)
                w.wait()
        spawned = [w for w in workers if w.proc is not None]
        if spawned:
            threading.Thread(target=_reap, args=(spawned,), daemon=True).start()
        if hasattr(self, "_sel"):
            self._sel.close()

    # starting workers -----------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        """A fresh ``python -m dufm_core.process.worker pool FN THREADS`` process."""
        proc = subprocess.Popen(
            worker_command("pool", self._fn_name, str(self.threads)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_env(),
            start_new_session=True,  # Ctrl-C reaches the driver, which cancels members itself
        )
        assert proc.stdin is not None and proc.stdout is not None
        return _Worker(pid=proc.pid, send=proc.stdin, recv=proc.stdout.fileno(), proc=proc)

    def _fork(self) -> _Worker:
        """A worker forked from this (already warm) process, talking over two pipes."""
        task_r, task_w = os.pipe()
        reply_r, reply_w = os.pipe()
        # the child keeps only its own two pipe ends: another worker's task pipe left open in
        # it would keep that worker from ever seeing the end of its input
        others = [fd for w in self._workers for fd in (w.send.fileno(), w.recv)]
        close = [task_w, reply_r, *others, self._sel.fileno()]
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
            with contextlib.suppress(Exception):
                stream.flush()
        # the driver's objects go to the collector's permanent generation for the fork, so the
        # child's collections never walk (and copy-on-write) them (the gc module's advice)
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            for fd in (task_r, task_w, reply_r, reply_w):
                os.close(fd)
            raise
        if pid == 0:
            forked_pool_worker(self._fn, self.threads, task_r, reply_w, close)
        gc.unfreeze()
        os.close(task_r)
        os.close(reply_w)
        return _Worker(pid=pid, send=os.fdopen(task_w, "wb"), recv=reply_r)


def _reap(workers: list[_Worker]) -> None:
    """Wait for finished fresh workers (so none is left a zombie); kill one that hangs."""
    for w in workers:
        if w.wait(timeout=60) is None:
            w.signal(signal.SIGKILL)
            w.wait()
        if w.proc is not None and w.proc.stdout is not None:
            with contextlib.suppress(OSError):
                w.proc.stdout.close()


# --------------------------------------------------------------------------- ray
class RayExecutor(_Pool):
    """One Ray task per member (see the module docstring)."""

    def __init__(
        self,
        jobs: int | None = None,
        address: str | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
    ) -> None:
        super().__init__()
        missing = ray_missing()
        if missing:
            raise RuntimeError(missing)
        self.jobs = jobs
        self.address = address
        self.cpus = cpus
        self.gpus = gpus
        self.slots = jobs or cpu_count()

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address else f"local Ray, {self.slots} CPUs"
        return f"ray executor ({where}; {self.cpus:g} CPU, {self.gpus:g} GPU per member)"

    def _init(self) -> bool:
        """Connect to (or start) Ray unless it is already initialised; True if we did."""
        return connect_ray(self.address, self.slots)

    def _open(self, fn: TaskFn) -> str | None:
        import ray

        self._started_here = self._init()
        self._refs: dict[Any, Task] = {}
        # with a cluster, --jobs caps the members in flight; else Ray's resources do
        self._limit = self.jobs if self.address and self.jobs else None
        self._remote = ray.remote(fn).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0
        )
        have = ray.cluster_resources()
        for name, want in (("CPU", self.cpus), ("GPU", self.gpus)):
            if want > have.get(name, 0.0):
                return (
                    f"each member asks for {want:g} {name} ([resources] in the spec) but the "
                    f"Ray cluster has {have.get(name, 0.0):g} in all"
                )
        return None

    def _has_room(self) -> bool:
        return self._limit is None or len(self._refs) < self._limit

    def _submit(self, task: Task) -> None:
        self._refs[self._remote.remote(dict(task))] = task

    def _busy(self) -> bool:
        return bool(self._refs)

    def _collect(self, queue: deque[Task]) -> list[Outcome]:
        import ray
        from ray.exceptions import TaskCancelledError

        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=POLL_S)
        out: list[Outcome] = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                out.append((task, ray.get(ref), None))
            except TaskCancelledError:
                out.append((task, None, "cancelled"))
            except Exception as exc:  # the member raised, its worker died, or Ray lost it
                out.append((task, None, f"{type(exc).__name__}: {str(exc)[:500]}"))
        return out

    def _stop_running(self, on_cancel: OnCancel | None) -> None:
        import ray

        for ref in self._refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref)  # KeyboardInterrupt in the task: it checkpoints

    def _close(self) -> None:
        if getattr(self, "_started_here", False):
            import ray

            ray.shutdown()


Executor = _Pool  # what the sweep driver needs: describe, slots, run, cancel
