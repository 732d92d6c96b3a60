"""A fork server that starts training workers without paying for Python and torch start-up.

Starting a fresh worker process costs ~2 s on a small machine, almost all of it importing torch.
The launcher is a long-lived process that has already imported the engine; asked over a Unix
socket to train a run folder, it ``fork()``s, and the child (in its own session, output to the
run's ``log.txt``) trains at once. The dashboard starts the launcher when a page loads
(:func:`ensure_launcher`), and :func:`dufm_core.process.jobs.start_worker` falls back to a fresh
process whenever the launcher is not there, so nothing depends on it being up.

This module is the protocol, its client and the server loop; what the server imports before it
forks and what a child runs are the worker's (:func:`dufm_core.process.worker.serve_launcher`,
which hands :func:`serve` the child's body), so the launcher imports no part of the engine.

The server never runs a torch kernel itself (fork after OpenMP threads exist is unsafe), reaps its
children automatically (SIGCHLD ignored), and exits after ``$DUFM_LAUNCHER_IDLE`` seconds
(default 1800) without a request.

Protocol: one line per connection, ``train <run_dir>`` → ``ok <pid>`` or ``error <message>``;
``ping`` → ``pong``; ``quit`` → ``bye``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from dufm_core.process.env import spawn_detached, worker_command

IDLE_ENV = "DUFM_LAUNCHER_IDLE"
ENABLE_ENV = "DUFM_LAUNCHER"
DEFAULT_IDLE_S = 1800.0


def socket_path(runs_dir: str | Path) -> Path:
    """Socket of the launcher serving ``runs_dir`` (short path in the temp folder; one per user
    and runs folder)."""
    key = hashlib.sha1(str(Path(runs_dir).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dufm-launcher-{os.getuid()}-{key}.sock"


def _request(runs_dir: str | Path, line: str, timeout: float = 2.0) -> str | None:
    path = socket_path(runs_dir)
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
    ``$DUFM_LAUNCHER=off`` disables it (workers then always start as fresh processes)."""
    if os.environ.get(ENABLE_ENV, "on").lower() in ("0", "off", "no", "false") or ping(runs_dir):
        return
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    spawn_detached(worker_command("launcher", str(runs_dir)))


def serve(runs_dir: str | Path, child: Callable[[str], NoReturn]) -> int:
    """Serve ``runs_dir`` until idle for ``$DUFM_LAUNCHER_IDLE`` seconds or told to quit. For
    each ``train RUN_DIR`` the server forks, and the child calls ``child(RUN_DIR)``, which must
    never return (it leaves with ``os._exit``). The caller has imported what children need."""
    idle = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S))
    path = socket_path(runs_dir)
    if ping(runs_dir):
        return 0  # another launcher already serves this runs folder
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(idle)
    my_inode = path.stat().st_ino
    try:
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return 0
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
                    if not os.path.isfile(os.path.join(run_dir, "config.json")):
                        conn.sendall(f"error not a run folder: {run_dir}\n".encode())
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
