"""A small fork server for the fault tests (tests/test_faults.py): it imports the engine once,
then forks one child per request, so a test can start, kill (SIGKILL) and resume trainers many
times in a few seconds instead of paying the ~2 s start of a fresh Python with torch each time.

Run as ``python -m tests.process.fault_child``; one JSON request per line on standard input, one
JSON reply per line on standard output:

* ``{"do": "train", "run": DIR, "stall": K, "marker": FILE}`` — a child runs the queue worker's
  body (``worker.train_run``) on the queued run DIR;
* ``{"do": "resume", "run": DIR, "steps": S, "stall": K, "marker": FILE, "result": FILE}`` — a
  child resumes DIR (``kinds.resume``) and writes what happened to ``result`` as JSON;
* ``{"do": "pump", "runs": DIR, "limit": N, "log": FILE, "owner": PID, "seconds": T}`` — a child
  pumps DIR's queue for T seconds with a fake ``start_worker`` (:func:`fake_start_worker`);

  each answered ``{"pid": P}`` at once;
* ``{"do": "wait", "pid": P}`` — answered ``{"exit": CODE}`` when child P ends (-9: SIGKILL).

With ``stall`` K > 0 the child's K-th fsync of a checkpoint temp file writes the temp file's name
to ``marker`` and sleeps, so that the test can kill it in the middle of a checkpoint write.
The server never runs a torch kernel itself (fork with live OpenMP threads is unsafe).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import dufm_core.kinds  # imported once, before any fork
from dufm_core.process import jobs, worker
from dufm_core.runlock import identity
from dufm_core.store import Run, iter_runs


def stall_checkpoint_writes(stall: int, marker: str) -> None:
    """Make the ``stall``-th fsync of a checkpoint temp file hang after naming it in ``marker``."""
    real_fsync = os.fsync
    seen = [0]

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "/checkpoints/.step_" in name:
            seen[0] += 1
            if seen[0] == stall:
                Path(marker).write_text(name)
                time.sleep(120)
        real_fsync(fd)

    os.fsync = fsync


def fake_start_worker(root: Path, log: str, owner: int) -> Any:
    """A ``start_worker`` that starts nothing: it appends ``RUN_ID RUNNING`` to ``log`` (RUNNING:
    how many runs are running once this one is) and marks the run running as process ``owner``
    (alive for the whole test, so the run stays running until the test ends it)."""
    who = identity(owner)

    def start(run: Run) -> int:
        running = sum(1 for r in iter_runs(root) if r.status()["state"] == "running")
        with open(log, "a") as fh:
            fh.write(f"{run.id} {running + 1}\n")
        time.sleep(random.uniform(0, 0.005))  # widen the window a racing pump would use
        run.write_status(state="running", host=socket.gethostname(), **who)
        return owner

    return start


def pump_for(runs: str, limit: int, log: str, owner: int, seconds: float) -> int:
    """Pump ``runs`` with :func:`fake_start_worker` until no run is queued (or ``seconds``)."""
    root = Path(runs)
    jobs.start_worker = fake_start_worker(root, log, owner)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs.pump(root, limit)
        if not any(r.status()["state"] == "queued" for r in iter_runs(root)):
            return 0
        time.sleep(random.uniform(0, 0.01))
    return 1


def resume_to(run: str, steps: int | None, result: str) -> int:
    """``kinds.resume`` and write ``{"state", "step"}`` or ``{"error", "type"}`` to ``result``."""
    try:
        res = dufm_core.kinds.resume(run, steps=steps, progress=None)
        out: dict[str, Any] = {"state": res.state, "step": res.step}
    except Exception as exc:
        out = {"error": str(exc), "type": type(exc).__name__}
    Path(result).write_text(json.dumps(out))
    return 0 if "state" in out else 1


def child(req: dict[str, Any]) -> int:
    """What a forked child does for request ``req``."""
    if req.get("stall"):
        stall_checkpoint_writes(int(req["stall"]), req["marker"])
    if req["do"] == "train":
        return worker.train_run(req["run"])
    if req["do"] == "resume":
        return resume_to(req["run"], req.get("steps"), req["result"])
    if req["do"] == "pump":
        return pump_for(req["runs"], int(req["limit"]), req["log"], int(req["owner"]),
                        float(req["seconds"]))
    return 3


def serve() -> None:
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        if req["do"] == "wait":
            _, status = os.waitpid(int(req["pid"]), 0)
            out.write(json.dumps({"exit": os.waitstatus_to_exitcode(status)}) + "\n")
            out.flush()
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)  # the reply pipe is the server's
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                random.seed(os.getpid())
                code = child(req)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
