"""Who is training a run: the run lock, and whether a pid recorded in ``status.json`` is still
the process that recorded it (docs/design.md §3.6).

**The run lock.** Anything that trains a run (a queue worker, ``train --resume``, a sweep member)
or deletes it first takes an exclusive ``fcntl.flock`` on the file ``lock`` in the run folder
(:func:`hold`). A second taker is refused at once with :class:`RunBusyError` ("run X is being
trained by pid P") and changes nothing. The kernel drops the lock when its process dies, however it
dies, so a lock is never stale; the file itself stays (removing it would let two processes lock
two different files). Inside one process the lock is re-entrant for the thread that holds it
(the worker takes it, then the trainer it calls takes it again); another thread is refused like
another process. A child forked while the lock is held does not hold it (its copy of the
descriptor is closed at once, which leaves the parent's lock in place).

**Process identity.** A pid alone names a process only until it exits: the kernel then hands the
number to another process. A worker therefore records ``pid_start``, its start time (field 22 of
``/proc/<pid>/stat``, clock ticks since boot) and ``pid_cmd``, a digest of its command line;
:func:`worker_problem` says whether a live process with that pid is still that worker, before
anything signals it, and :func:`same_process` whether a ``running`` run's worker still lives.
Without ``/proc`` (not Linux) a start time cannot be read: liveness then falls back to the pid,
and signalling is refused because the process cannot be verified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "lock"
# what the command line of a process that trains runs contains: the package (``python -m
# dufm_core ...``, ``python -m dufm_core.process.worker run|launcher|pool ...``) or the console
# script ``dufm``
OUR_MODULE = "dufm_core"
OUR_SCRIPT = "dufm"


class RunBusyError(RuntimeError):
    """Another process (or thread) holds the run lock; the message names the run and the pid."""


# --------------------------------------------------------------------------- process identity
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
    except OverflowError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (field 22 of ``/proc/<pid>/stat``),
    or None if it cannot be read (no such process, or no ``/proc``)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        # the command name (field 2) is in parentheses and may hold spaces or ')': split after
        # the last ')'; what follows starts with field 3
        return int(data.rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_cmdline(pid: int) -> str | None:
    """The command line of process ``pid`` (arguments joined by spaces), or None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def cmdline_digest(cmdline: str) -> str:
    """A short digest of a command line (what ``status.json`` records as ``pid_cmd``)."""
    return hashlib.sha256(cmdline.encode()).hexdigest()[:16]


def identity(pid: int | None = None) -> dict[str, int | str | None]:
    """``pid``, ``pid_start`` and ``pid_cmd`` of process ``pid`` (default: this one), the fields
    that ``status.json`` records for a run's worker."""
    pid = os.getpid() if pid is None else pid
    cmd = process_cmdline(pid)
    return {
        "pid": pid,
        "pid_start": process_start(pid),
        "pid_cmd": None if cmd is None else cmdline_digest(cmd),
    }


def looks_ours(cmdline: str) -> bool:
    """Does a command line run DUFM Lab (the package, or its ``dufm`` console script)?"""
    if OUR_MODULE in cmdline:
        return True
    return any(os.path.basename(arg) == OUR_SCRIPT for arg in cmdline.split()[:2])


def same_process(pid: int, start: int | None) -> bool:
    """Is the process that recorded (``pid``, ``start``) still alive? A live process with that
    pid but another start time is another process (the pid was reused). When either start time
    is unknown, the pid alone decides."""
    if not pid_alive(pid):
        return False
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start


def worker_problem(pid: int, start: int | None, cmd_digest: str | None = None) -> str | None:
    """None when ``pid`` is the live worker that recorded ``start`` (and ``cmd_digest``), else
    why it must not be signalled: gone, a reused pid, unverifiable, or not running our code.

    The command line must look like DUFM Lab's (:func:`looks_ours`) or be the one the worker
    recorded (a worker run from a user's script or a Ray task has another command line)."""
    if pid <= 0:
        return "no worker pid is recorded"
    if not pid_alive(pid):
        return f"process {pid} is gone"
    now = process_start(pid)
    if now is None:
        return f"process {pid} cannot be verified (no /proc/{pid}/stat)"
    if start is not None and now != start:
        return f"pid {pid} now belongs to another process (its start time differs)"
    cmd = process_cmdline(pid)
    if cmd is None:
        return f"process {pid} cannot be verified (no /proc/{pid}/cmdline)"
    if looks_ours(cmd) or (start is not None and cmd_digest == cmdline_digest(cmd)):
        return None
    return f"pid {pid} runs {cmd[:80]!r}, not a DUFM Lab worker"


# --------------------------------------------------------------------------- the run lock
@dataclass
class _Held:
    fd: int
    thread: int
    purpose: str
    depth: int = 1


_held: dict[str, _Held] = {}  # real path of the run folder → the lock this process holds
_guard = threading.Lock()


def _forget_in_child() -> None:
    """After ``fork``: the child holds no run lock (closing its copies leaves the parent's)."""
    global _guard
    _guard = threading.Lock()
    for held in _held.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _holder_text(fd: int) -> tuple[str, str]:
    """What the lock file says about its holder: (what it does, ``pid P``), as far as known."""
    try:
        pid, _, purpose = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
    except OSError:
        return "trained", "another process"
    return purpose or "trained", f"pid {pid}" if pid.isdigit() else "another process"


def _busy(name: str, purpose: str, who: str) -> RunBusyError:
    return RunBusyError(f"run {name} is being {purpose} by {who}")


def _acquire(key: str, name: str, purpose: str) -> _Held:
    fd = os.open(os.path.join(key, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        what, who = _holder_text(fd)
        os.close(fd)
        raise _busy(name, what, who) from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # who holds it, for the refusal message of others
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {purpose}\n".encode(), 0)
    return _Held(fd=fd, thread=threading.get_ident(), purpose=purpose)


@contextlib.contextmanager
def hold(run_dir: str | Path, purpose: str = "trained") -> Iterator[None]:
    """Hold the run lock of ``run_dir`` for the block, or raise :class:`RunBusyError` at once.

    ``purpose`` (``trained``, ``deleted``) is what others are told. Re-entrant for the holding
    thread; the folder must exist (FileNotFoundError otherwise)."""
    key = os.path.realpath(run_dir)
    name = Path(run_dir).name
    with _guard:
        held = _held.get(key)
        if held is not None and held.thread != threading.get_ident():
            raise _busy(name, held.purpose, f"pid {os.getpid()} (another thread)")
        if held is not None:
            held.depth += 1
        else:
            held = _held[key] = _acquire(key, name, purpose)
    try:
        yield
    finally:
        with _guard:
            held.depth -= 1
            if held.depth == 0 and _held.get(key) is held:
                del _held[key]
                os.close(held.fd)  # the kernel drops the lock with the last descriptor


def holds(run_dir: str | Path) -> bool:
    """Does this thread hold the run lock of ``run_dir``?"""
    held = _held.get(os.path.realpath(run_dir))
    return held is not None and held.thread == threading.get_ident()
