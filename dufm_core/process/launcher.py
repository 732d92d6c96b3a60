"""A fork server that starts training workers without paying for Python and torch start-up.

Starting a fresh worker process costs ~2 s on a small machine, almost all of it importing torch.
The launcher is a long-lived process that has already imported the engine; asked over a Unix
socket to train a run folder, it ``fork()``s, and the child (in its own session, output to the
run's ``log.txt``) trains at once. The dashboard starts the launcher when a page loads
(:func:`ensure_launcher`), and :func:`dufm_core.process.jobs.start_worker` falls back to a fresh
process whenever the launcher is not there, so nothing depends on it being up.

This module is the protocol, its client and the server loop; what the server imports before it
forks and what a child runs are the worker's (:func:`dufm_core.process.worker.serve_launcher`,
which hands :func:`serve` the child's body), so the launcher imports no part of the engine but
:mod:`dufm_core.runlock`'s process-identity helpers (standard library only).

The server never runs a torch kernel itself (fork after OpenMP threads exist is unsafe) and reaps
its children automatically (SIGCHLD ignored). It lives no longer than the dashboard that started
it: :func:`ensure_launcher` hands it the starting process's pid and start time
(``$DUFM_LAUNCHER_PARENT``), and the server exits within about a second once that process is gone
(a pid reused by another process does not count). ``$DUFM_LAUNCHER_IDLE`` seconds (default 1800)
without a request end it too, whoever started it.

The socket lives in a private folder of this user, ``<temp>/dufm-<uid>/`` (mode 0700): a socket
with a predictable name in the shared temp folder would let another user answer in the launcher's
place (say ``ok <pid>`` of a process of theirs, which a later cancel would then signal). The
folder is made with mode 0700; an existing one is used only if it is a real folder (not a link)
owned by this user with no group or other permissions, else there is no launcher and workers
start as fresh processes.

Protocol: one line per connection, ``train <run_dir>`` → ``ok <pid>`` or ``error <message>``;
``ping`` → ``pong``; ``quit`` → ``bye``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from dufm_core import runlock
from dufm_core.process.env import spawn_detached, worker_command

IDLE_ENV = "DUFM_LAUNCHER_IDLE"
ENABLE_ENV = "DUFM_LAUNCHER"
PARENT_ENV = "DUFM_LAUNCHER_PARENT"  # "<pid>:<start time>" of the process the server serves
DEFAULT_IDLE_S = 1800.0
PARENT_POLL_S = 1.0  # how often the server looks whether its parent is still there
# sun_path holds 108 bytes with its final NUL; stay well below
MAX_SOCKET_PATH = 100
_SOCKET_NAME_LEN = len("launcher-0123456789ab.sock") + 1


class LauncherDirError(RuntimeError):
    """The launcher's private socket folder is missing, or not safe to use (one line)."""


def _private_dir(folder: Path, create: bool) -> Path:
    """``folder`` once it is certain that only this user can use it: made with mode 0700 (if
    ``create``); an existing one must be a real folder owned by this uid with no permission for
    group or others. Raises LauncherDirError naming the folder and the reason."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        raise LauncherDirError(f"{folder}: no such folder") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LauncherDirError(f"{folder}: not a folder (a symbolic link or a file): not used")
    if st.st_uid != os.getuid():
        raise LauncherDirError(f"{folder}: owned by uid {st.st_uid}, not by this user: not used")
    if st.st_mode & 0o077:
        raise LauncherDirError(
            f"{folder}: open to group or others (mode {stat.S_IMODE(st.st_mode):04o}, must be "
            "0700): not used"
        )
    return folder


def socket_dir(create: bool = True) -> Path:
    """This user's private folder for launcher sockets, ``<temp>/dufm-<uid>`` (``/tmp/dufm-<uid>``
    when the temp folder's path is too long for a Unix socket path). Made if ``create``;
    LauncherDirError if it is not safe (see :func:`_private_dir`)."""
    name = f"dufm-{os.getuid()}"
    folder = Path(tempfile.gettempdir()) / name
    if len(os.fsencode(folder)) + _SOCKET_NAME_LEN > MAX_SOCKET_PATH:
        folder = Path("/tmp") / name
    return _private_dir(folder, create)


def socket_path(runs_dir: str | Path, create: bool = True) -> Path:
    """Socket of the launcher serving ``runs_dir``: one per user and runs folder, in the user's
    private :func:`socket_dir`, a short path (Unix sockets allow about 107 bytes).
    LauncherDirError if that folder is not safe to use."""
    key = hashlib.sha1(str(Path(runs_dir).resolve()).encode()).hexdigest()[:12]
    return socket_dir(create) / f"launcher-{key}.sock"


def parent_token(pid: int | None = None) -> str:
    """``"<pid>:<start time>"`` naming one process for good (the pid alone may be reused later);
    the start time is empty where /proc is not there."""
    pid = os.getpid() if pid is None else pid
    start = runlock.process_start(pid)
    return f"{pid}:{'' if start is None else start}"


def parent_alive(token: str) -> bool:
    """Is the process that :func:`parent_token` named still running? False once it has exited
    (or is a zombie), or its pid belongs to a process started at another time
    (:func:`dufm_core.runlock.same_process`). A malformed pid names nothing to watch: True."""
    pid_text, _, start = token.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    if pid <= 0:
        return True
    if start and not start.isdigit():
        return False  # a start time that no process has
    return runlock.same_process(pid, int(start) if start else None)


def _request(runs_dir: str | Path, line: str, timeout: float = 2.0) -> str | None:
    """Send one request line to the launcher of ``runs_dir``; its one-line reply, or None when
    no launcher answers (or its folder is not safe: then nothing is asked)."""
    try:
        path = socket_path(runs_dir, create=False)
    except LauncherDirError:
        return None
    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(line.encode() + b"\n")
            return s.makefile().readline().strip()
    except OSError:
        return None


def ping(runs_dir: str | Path) -> bool:
    """Is a launcher serving ``runs_dir``?"""
    return _request(runs_dir, "ping", timeout=0.5) == "pong"


def launch_via_server(runs_dir: str | Path, run_dir: str | Path) -> int | None:
    """Ask the launcher to train ``run_dir``; the worker's pid, or None if no launcher answered."""
    reply = _request(runs_dir, f"train {Path(run_dir).resolve()}")
    if reply and reply.startswith("ok "):
        return int(reply.split()[1])
    return None


def stop(runs_dir: str | Path) -> bool:
    """Ask the launcher of ``runs_dir`` to exit (running workers are not affected)."""
    return _request(runs_dir, "quit", timeout=1.0) == "bye"


def ensure_launcher(runs_dir: str | Path) -> None:
    """Start a launcher for ``runs_dir`` in the background unless one answers; never waits.
    The launcher exits soon after this process does. ``$DUFM_LAUNCHER=off`` disables it
    (workers then always start as fresh processes), and so does an unsafe socket folder (one
    line on stderr)."""
    if os.environ.get(ENABLE_ENV, "on").lower() in ("0", "off", "no", "false") or ping(runs_dir):
        return
    try:
        socket_path(runs_dir)
    except LauncherDirError as exc:
        print(f"DUFM Lab: no fork server: {exc}", file=sys.stderr)
        return
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    spawn_detached(
        worker_command("launcher", str(runs_dir)), extra_env={PARENT_ENV: parent_token()}
    )


def _is_run_of(run_dir: str, root: Path) -> bool:
    """Is ``run_dir`` a run folder directly inside the served runs folder ``root`` (not a link)?
    The server trains nothing else."""
    path = Path(run_dir)
    return (
        path.is_absolute()
        and path.parent == root
        and not path.is_symlink()
        and (path / "config.json").is_file()
    )


def serve(runs_dir: str | Path, child: Callable[[str], NoReturn]) -> int:
    """Serve ``runs_dir`` until told to quit, until the process named by ``$DUFM_LAUNCHER_PARENT``
    (if set) is gone, or until idle for ``$DUFM_LAUNCHER_IDLE`` seconds. For each ``train
    RUN_DIR`` the server forks, and the child calls ``child(RUN_DIR)``, which must never return
    (it leaves with ``os._exit``). The caller has imported what children need. Returns 1 (one
    line on stderr) if the socket folder is not safe to use."""
    idle = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S))
    parent = os.environ.pop(PARENT_ENV, "")  # watched here, not inherited by the workers
    try:
        path = socket_path(runs_dir)
    except LauncherDirError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 1
    if ping(runs_dir):
        return 0  # another launcher already serves this runs folder
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(min(idle, PARENT_POLL_S) if parent else idle)
    my_inode = path.stat().st_ino
    root = Path(runs_dir).resolve()
    last_request = next_look = time.monotonic()
    try:
        while True:
            if parent and time.monotonic() >= next_look:  # requests or not, look every second
                if not parent_alive(parent):
                    return 0  # the dashboard that started it is gone
                next_look = time.monotonic() + PARENT_POLL_S
            try:
                conn, _ = server.accept()
            except TimeoutError:
                if time.monotonic() - last_request >= idle:
                    return 0
                continue
            last_request = time.monotonic()
            with conn:
                conn.settimeout(5.0)
                try:
                    line = conn.makefile().readline().strip()
                except OSError:
                    continue
                if line == "ping":
                    conn.sendall(b"pong\n")
                elif line == "quit":
                    conn.sendall(b"bye\n")
                    return 0
                elif line.startswith("train "):
                    run_dir = line[len("train ") :]
                    if not _is_run_of(run_dir, root):
                        conn.sendall(f"error not a run folder of {root}: {run_dir}\n".encode())
                        continue
                    pid = os.fork()
                    if pid == 0:
                        conn.close()
                        server.close()
                        child(run_dir)
                    conn.sendall(f"ok {pid}\n".encode())
                else:
                    conn.sendall(b"error unknown request\n")
    finally:
        server.close()
        with contextlib.suppress(OSError):
            if path.stat().st_ino == my_inode:
                path.unlink()
