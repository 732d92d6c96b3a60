"""Executors: run one function over many sweep members, locally or on a Ray cluster.

Both run the same plain function (:func:`dufm_core.sweeps.execute_member`) on plain-data tasks
and report each result as it arrives, so the driver can write progress and ``summary.csv`` while
the sweep runs:

* ``local`` (default): at most ``jobs`` worker processes (default: the number of cores) on this
  machine. Like the workers of :mod:`dufm_core.jobs`, each is a fresh ``python -m`` process (so
  nothing of the driver's state, threads or ``__main__`` leaks into it), but a long-lived one: it
  imports torch and the engine once (~2 s) and then trains and analyses one member after another,
  taking tasks as JSON lines on its standard input and answering on its standard output. Members
  write everything to the run store, and a member's failure is its own record, never the pool's.
  A worker that dies (killed, out of memory) fails only the member it was running, and a new
  worker takes its place; if workers die before finishing anything, the remaining members fail
  with that reason instead of being retried for ever.
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
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

EXECUTORS = ("local", "ray")  # the CLI's choices; "inline" is for the Python API
POLL_S = 0.25
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

    def run(
        self,
        fn: Callable[[Task], dict[str, Any]],
        tasks: Sequence[Task],
        on_result: OnResult,
        on_cancel: OnCancel | None = None,
    ) -> None:
        """Run ``fn`` on every task; call ``on_result(task, record, None)`` for each result, or
        ``on_result(task, None, error)`` when the task could not report (its worker died, or it
        was cancelled before it started). Returns when every task is accounted for."""
        ...

    def cancel(self) -> None:
        """Stop starting tasks and ask running ones to stop (safe to call from a signal
        handler: it only sets a flag)."""
        ...


def make_executor(
    name: str,
    jobs: int | None = None,
    address: str | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
) -> Executor:
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

    def run(
        self,
        fn: Callable[[Task], dict[str, Any]],
        tasks: Sequence[Task],
        on_result: OnResult,
        on_cancel: OnCancel | None = None,
    ) -> None:
        for task in tasks:
            if self._cancel.is_set():
                on_result(task, None, "cancelled before it started")
                continue
            on_result(task, fn(task), None)


# --------------------------------------------------------------------------- local
WORKER_START_FAILURES = 2  # workers that die before they are ready: then the rest fail, no loop


def _function_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of an importable module-level function (what a worker imports)."""
    name = f"{fn.__module__}:{fn.__qualname__}"
    if fn.__module__ == "__main__" or "<" in fn.__qualname__:
        raise ValueError(f"the local executor needs an importable module-level function ({name})")
    return name


def _load_function(name: str) -> Callable[[Task], dict[str, Any]]:
    import importlib

    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Worker:
    """One worker process of the local pool and the task it is running, if any."""

    proc: subprocess.Popen
    task: Task | None = None
    ready: bool = False  # it imported the engine and the function
    buffer: bytes = b""


class LocalExecutor:
    """A bounded pool of worker processes on this machine (see the module docstring)."""

    def __init__(self, jobs: int | None = None) -> None:
        self.slots = jobs or cpu_count()
        self._cancel = threading.Event()

    def describe(self) -> str:
        return f"local executor ({self.slots} worker processes)"

    def cancel(self) -> None:
        self._cancel.set()

    def _spawn(self, fn_name: str, threads: int) -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dufm_core.executors", fn_name, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the driver, which cancels members itself
        )
        return _Worker(proc)

    def run(
        self,
        fn: Callable[[Task], dict[str, Any]],
        tasks: Sequence[Task],
        on_result: OnResult,
        on_cancel: OnCancel | None = None,
    ) -> None:
        if not tasks:
            return
        fn_name = _function_name(fn)
        threads = max(1, cpu_count() // self.slots)
        queue = list(tasks)
        workers: list[_Worker] = []
        start_failures = 0
        cancelled = False
        sel = selectors.DefaultSelector()
        try:
            while queue or any(w.task is not None for w in workers):
                if self._cancel.is_set() and not cancelled:
                    cancelled = True
                    for task in queue:
                        on_result(task, None, "cancelled before it started")
                    queue = []
                    for w in workers:
                        if w.task is not None and on_cancel is not None:
                            on_cancel(w.task)
                # keep `slots` workers busy while there is work
                idle = [w for w in workers if w.task is None]
                while queue and len(workers) < self.slots and len(idle) < len(queue):
                    w = self._spawn(fn_name, threads)
                    workers.append(w)
                    idle.append(w)
                    sel.register(w.proc.stdout, selectors.EVENT_READ, w)
                for w in idle:
                    if not queue:
                        break
                    w.task = queue.pop(0)
                    try:
                        w.proc.stdin.write(json.dumps(dict(w.task)).encode() + b"\n")
                        w.proc.stdin.flush()
                    except (BrokenPipeError, OSError):
                        pass  # the worker died: its stdout reaches EOF and is handled below
                for key, _ in sel.select(timeout=POLL_S):
                    w = key.data
                    chunk = os.read(w.proc.stdout.fileno(), 1 << 20)
                    if chunk:
                        w.buffer += chunk
                        while b"\n" in w.buffer:
                            line, w.buffer = w.buffer.split(b"\n", 1)
                            self._deliver(w, line, on_result)
                        continue
                    # EOF: the worker is gone
                    sel.unregister(w.proc.stdout)
                    workers.remove(w)
                    code = w.proc.wait()
                    why = f"the worker process died (exit code {code})"
                    if w.ready:  # killed, or out of memory, while it ran this member
                        if w.task is not None:
                            on_result(w.task, None, why + " while running this member")
                        continue
                    # it never got going (cannot import the engine?): retry a little, then stop
                    if w.task is not None:
                        queue.insert(0, w.task)
                    start_failures += 1
                    if start_failures >= WORKER_START_FAILURES:
                        for task in queue:
                            on_result(task, None, why + " before it could start any member")
                        queue = []
        finally:
            # idle workers exit once their standard input closes; a worker still busy means we
            # are leaving abnormally, and it is stopped. Their interpreters' teardown is not
            # waited for here: a daemon thread reaps them
            for w in workers:
                with contextlib.suppress(OSError):
                    w.proc.stdin.close()
                if w.task is not None:
                    with contextlib.suppress(OSError):
                        w.proc.terminate()
            procs = [w.proc for w in workers]
            threading.Thread(target=_reap, args=(procs,), daemon=True).start()
            sel.close()

    @staticmethod
    def _deliver(w: _Worker, line: bytes, on_result: OnResult) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = {"ok": False, "error": f"unreadable reply from the worker: {line[:200]!r}"}
        if msg.get("ready"):
            w.ready = True
            return
        task, w.task = w.task, None
        if task is None:
            return
        if msg.get("ok"):
            on_result(task, msg["result"], None)
        else:
            on_result(task, None, msg.get("error") or "the worker reported an error")


def _reap(procs: list[subprocess.Popen]) -> None:
    """Wait for finished workers (so none is left a zombie); kill one that hangs on exit."""
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()


def worker_main(fn_name: str, threads: int) -> int:
    """A local-pool worker: import the engine once, then for each JSON task line on standard
    input call the function and answer one JSON line ``{"ok": true, "result": ...}`` (or
    ``{"ok": false, "error": ...}``) until standard input closes. Anything the function prints
    goes to standard error, so it cannot corrupt the replies. The first line, ``{"ready": true}``,
    says the imports worked (a worker that dies before it is not retried for ever)."""
    import torch

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # print() in the function lands on stderr
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    fn = _load_function(fn_name)
    out.write(b'{"ready": true}\n')
    out.flush()
    for raw in sys.stdin.buffer:
        if not raw.strip():
            continue
        try:
            reply = {"ok": True, "result": fn(json.loads(raw))}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    return 0


# --------------------------------------------------------------------------- ray
class RayExecutor:
    """One Ray task per member (see the module docstring)."""

    def __init__(
        self,
        jobs: int | None = None,
        address: str | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
    ) -> None:
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
            runtime_env = {
                "py_modules": [str(ROOT / "dufm_core")],
                "excludes": ["__pycache__", "*.pyc"],
            }
            ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=False)
        else:
            runtime_env = {
                "env_vars": {
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
                    )
                }
            }
            ray.init(
                num_cpus=self.slots,
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=False,
            )
        return True

    def run(
        self,
        fn: Callable[[Task], dict[str, Any]],
        tasks: Sequence[Task],
        on_result: OnResult,
        on_cancel: OnCancel | None = None,
    ) -> None:
        if not tasks:
            return
        started_here = self._init()
        import ray
        from ray.exceptions import TaskCancelledError

        try:
            remote = ray.remote(fn).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
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


if __name__ == "__main__":  # a worker of the local pool: python -m dufm_core.executors FN THREADS
    sys.exit(worker_main(sys.argv[1], int(sys.argv[2])))
