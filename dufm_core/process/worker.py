"""The one worker entry: what every process that the process wing starts or forks runs.

::

    python -m dufm_core.process.worker run RUN_DIR        a run worker: train a queued run
    python -m dufm_core.process.worker launcher RUNS_DIR  the fork server of a runs folder
    python -m dufm_core.process.worker pool FN THREADS    a sweep pool worker: tasks in, records out

Forked children run the same functions: the fork server's child runs :func:`train_run`, the
local executor's forked worker :func:`serve_tasks`, both inside :func:`run_forked`, which detaches
a forked child and makes sure it leaves with ``os._exit``. The CLI's hidden ``train --run-dir``
and its ``launcher`` verb call :func:`train_run` and :func:`serve_launcher` too.

A run worker trains through :func:`dufm_core.kinds.train`, the model-kind dispatch, so a
ResNet-20 run is trained as one whichever way it was started. This module imports neither the CLI
nor the executors (which import it), so the process wing has no import cycle.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from dufm_core.process import jobs, launcher

Task = Mapping[str, Any]
TaskFn = Callable[[Task], dict[str, Any]]
# what a forked child resets to the default action (it inherits its parent's handlers)
CHILD_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)


# --------------------------------------------------------------------------- run workers
def train_run(run_dir: str | Path) -> int:
    """Train the queued run folder ``run_dir`` (made by :func:`jobs.launch`), then start the next
    queued runs of its runs folder. Prints the run folder last; exit code 0 when it finished, 1
    when it did not, 2 (with one ``error:`` line) for a config or data error or when another
    process already trains the run (then nothing is changed).

    The run lock is held from before the config is read until training ends (and released
    before the queue is pumped: a worker started then must not inherit it)."""
    from dufm_core.runlock import RunBusyError
    from dufm_core.store import open_run

    try:
        run = open_run(run_dir)
    except FileNotFoundError as exc:
        return _error(str(exc))
    try:
        with run.lock():
            return _train_locked(run)
    except RunBusyError as exc:
        return _error(str(exc))
    finally:
        jobs.pump(run.path.parent)


def _train_locked(run: Any) -> int:
    """:func:`train_run`'s body, holding the run lock: a config that cannot be read or is
    invalid marks the run `failed` (its worker is about to exit) and is one ``error:`` line."""
    import time

    from dufm_core import kinds
    from dufm_core.config import ConfigError

    try:
        cfg = run.config()
        cfg.validate()
    except (ConfigError, FileNotFoundError) as exc:
        run.write_status(state="failed", error=str(exc), finished_at=time.time())
        return _error(str(exc))
    try:
        result = kinds.train(cfg, run=run)
    except ConfigError as exc:  # e.g. a real network's data folder (status.json says failed)
        return _error(str(exc))
    print(result.run.path)
    return 0 if result.state == "finished" else 1


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def serve_launcher(runs_dir: str | Path) -> int:
    """Be the fork server of ``runs_dir`` (:func:`dufm_core.process.launcher.serve`): import what
    a run worker needs once, then fork a :func:`train_run` child per request."""
    import dufm_core.kinds
    import dufm_core.theory  # noqa: F401  (torch, the kinds' trainers, scipy: before any fork)

    return launcher.serve(runs_dir, _launcher_child)


def _launcher_child(run_dir: str) -> NoReturn:
    run_forked(lambda: train_run(run_dir), output=os.path.join(run_dir, "log.txt"))


# --------------------------------------------------------------------------- forked children
def run_forked(
    body: Callable[[], int],
    output: str | None = None,
    close: Sequence[int] = (),
    default_signals: Sequence[int] = CHILD_DEFAULT_SIGNALS,
) -> NoReturn:
    """In a child just forked from a warm process: detach (own session, no terminal input, the
    parent's descriptors in ``close`` closed, ``default_signals`` reset), append standard output
    and error to the file ``output`` if given, run ``body`` and leave with ``os._exit`` and its
    code, whatever happens, so that none of the parent's code after the fork (its loop, atexit,
    buffers, ``finally``) runs here."""
    code = 1
    try:
        os.setsid()
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if output is not None:
            log = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
        for sig in default_signals:
            signal.signal(sig, signal.SIG_DFL)
        code = body()
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


# --------------------------------------------------------------------------- sweep pool workers
def call_task(fn: TaskFn, task: Task) -> tuple[dict[str, Any] | None, str | None]:
    """``(fn(task), None)``, or ``(None, "Type: message")`` when it raises: one member's
    exception is that member's failure, never the pool's."""
    try:
        return fn(dict(task)), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def function_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of an importable module-level function (what a fresh worker loads)."""
    name = f"{fn.__module__}:{fn.__qualname__}"
    if fn.__module__ == "__main__" or "<" in fn.__qualname__:
        raise ValueError(f"the local executor needs an importable module-level function ({name})")
    return name


def load_function(name: str) -> TaskFn:
    """The function named ``module:qualname`` (see :func:`function_name`)."""
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def serve_tasks(fn: TaskFn, threads: int, tasks: BinaryIO, replies: BinaryIO) -> int:
    """A pool worker's life: for each JSON task line on ``tasks`` call ``fn`` and answer one JSON
    line ``{"ok": true, "result": ...}`` (or ``{"ok": false, "error": ...}``) on ``replies``,
    until ``tasks`` closes. The first reply, ``{"ready": true}``, says the imports worked (a
    worker that dies before it is not retried for ever). Anything ``fn`` prints goes to standard
    error, so it cannot reach the driver's standard output (whose last line is the sweep folder).
    """
    import torch

    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver cancels members itself
    torch.set_num_threads(threads)
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for raw in tasks:
        if not raw.strip():
            continue
        record, error = call_task(fn, json.loads(raw))
        reply = {"ok": True, "result": record} if error is None else {"ok": False, "error": error}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()
    return 0


def forked_pool_worker(
    fn: TaskFn, threads: int, task_fd: int, reply_fd: int, close: Sequence[int]
) -> NoReturn:
    """In a child forked by the local executor: :func:`serve_tasks` on two pipes, detached from the
    driver (none of its other pipes; SIGPIPE at its default too: a worker whose driver is gone
    ends)."""
    run_forked(
        lambda: serve_tasks(fn, threads, os.fdopen(task_fd, "rb"), os.fdopen(reply_fd, "wb")),
        close=close,
        default_signals=(*CHILD_DEFAULT_SIGNALS, signal.SIGPIPE),
    )


def pool_worker(fn_name: str, threads: int) -> int:
    """A fresh pool worker: tasks on standard input, replies on standard output."""
    import torch  # noqa: F401  (before the ready line: an import failure is a start failure)

    replies = os.fdopen(os.dup(1), "wb")
    return serve_tasks(load_function(fn_name), threads, sys.stdin.buffer, replies)


# --------------------------------------------------------------------------- the entry
USAGE = (
    "usage: python -m dufm_core.process.worker "
    "{run RUN_DIR | launcher RUNS_DIR | pool FN THREADS}"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch on the role (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "run":
        return train_run(args[1])
    if len(args) == 2 and args[0] == "launcher":
        return serve_launcher(args[1])
    if len(args) == 3 and args[0] == "pool":
        return pool_worker(args[1], int(args[2]))
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
