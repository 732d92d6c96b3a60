"""How the process wing starts a child: its command line, its environment, and the package root.

Children are ``python -m dufm_core.process.worker ROLE ...`` (a sweep driver: the CLI,
``python -m dufm_core sweep ...``), run by the caller's interpreter (``sys.executable``). The
package is installed in that environment (pyproject.toml; a checkout with ``pip install -e .``),
so a child imports the same ``dufm_core`` as its parent without any ``PYTHONPATH`` or
working-directory games. Its environment is the caller's with unbuffered output, so a worker's
log lines reach ``log.txt`` as they are written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # dufm_core/: what a Ray cluster is shipped
WORKER_MODULE = "dufm_core.process.worker"  # the one worker entry (see its docstring)


def child_env() -> dict[str, str]:
    """The environment of a child process: the caller's, with ``PYTHONUNBUFFERED=1`` unless the
    caller set it."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def cli_command(*args: str) -> list[str]:
    """``python -m dufm_core *args`` (the command-line interface) with this interpreter."""
    return [sys.executable, "-m", "dufm_core", *args]


def worker_command(role: str, *args: str) -> list[str]:
    """``python -m dufm_core.process.worker ROLE *args`` with this interpreter."""
    return [sys.executable, "-m", WORKER_MODULE, role, *args]


def spawn_detached(
    command: list[str], log_path: Path | None = None, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Start ``command`` as a detached process: its own session (it outlives the caller and a
    signal to the caller's group), no standard input, output appended to ``log_path`` (or
    discarded), its environment :func:`child_env` plus ``extra_env``."""
    env = child_env() | dict(extra_env or {})
    if log_path is None:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
