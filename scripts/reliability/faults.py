"""Injected faults: SIGKILL at random moments, and corrupt files under every reading operation.

**Kills.** A small UFM run is trained by ``python -m dufm_core train`` in a child process that
is killed with SIGKILL at a random moment (during start-up, training, a metrics append or a
checkpoint write: wherever it happens to be), then continued with ``train --resume``, again and
again; the last resume runs to the end. The run survived a kill when the next process went on
without a traceback; no data was lost when the final metrics equal, row for row, those of an
uninterrupted run of the same config (resume is bit-exact on one device) and no temporary file
is left behind.

**Corrupt files.** A finished run is copied, one of its files is damaged in one way, and every
operation that reads it is tried (list, status, metrics, queue pump, cancel, report of the
latest checkpoint, resume). Listing, status, metrics, the pump and cancel must not raise at all;
a report or a resume may refuse with one line (the error types the CLI and the pages turn into
one line); anything else is a crash. Data is lost when a good
checkpoint disappears or the metrics up to the newest good checkpoint are not there afterwards.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KILL_CONFIG = ["--K", "3", "--n", "4", "--width", "5", "--depth", "3", "--steps", "60000",
               "--log_points", "300", "--checkpoint_points", "40", "--seed", "7"]
_TIMING_KEYS = ("time",)


@dataclass
class KillResult:
    kills: int = 0
    survived: int = 0
    data_lost: int = 0
    notes: list[str] = field(default_factory=list)


def _env(runs: Path) -> dict[str, str]:
    return {**os.environ, "DUFM_RUNS_DIR": str(runs), "DUFM_LAUNCHER": "0",
            "OMP_NUM_THREADS": "1"}


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in _TIMING_KEYS} for r in rows]


def kill_loop(tmp: Path, kills: int, seed: int = 0, progress: Callable[[str], None] = print
              ) -> KillResult:
    """SIGKILL a training process ``kills`` times at random moments, resuming after each."""
    from dufm_core.store import iter_runs

    rng = random.Random(seed)
    ref_runs, runs = tmp / "ref", tmp / "killed"
    subprocess.run([sys.executable, "-m", "dufm_core", "train", *KILL_CONFIG, "--name", "ref"],
                   env=_env(ref_runs), check=True, capture_output=True)
    (ref,) = list(iter_runs(ref_runs))
    out = KillResult()
    run_dir: Path | None = None
    for i in range(kills + 1):
        args = ["train", "--resume", str(run_dir)] if run_dir else ["train", *KILL_CONFIG,
                                                                     "--name", "killed"]
        proc = subprocess.Popen([sys.executable, "-m", "dufm_core", *args], env=_env(runs),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if i < kills:
            time.sleep(rng.uniform(0.3, 5.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                out.kills += 1
            _, err = proc.communicate()
        else:
            _, err = proc.communicate(timeout=600)
        text = err.decode(errors="replace")
        if "Traceback" in text:
            out.notes.append(f"process {i}: {text.strip().splitlines()[-1][:200]}")
        elif i > 0:
            out.survived += 1
        found = list(iter_runs(runs))
        run_dir = found[0].path if found else None
        if proc.returncode == 0:
            if i < kills:  # finished before the kill: start again from a fresh run folder
                shutil.rmtree(runs)
                run_dir = None
            else:
                break
    out.survived = min(out.survived, out.kills)
    (run,) = list(iter_runs(runs))
    if _comparable(run.metrics()) != _comparable(ref.metrics()):
        out.data_lost += 1
        out.notes.append("final metrics differ from the uninterrupted run")
    if run.status().get("state") != "finished":
        out.data_lost += 1
        out.notes.append(f"final state {run.status().get('state')}")
    tmp_left = [p.name for p in run.path.rglob("*.tmp")]
    if tmp_left:
        out.notes.append(f"temporary files left: {tmp_left[:3]}")
        out.data_lost += 1
    progress(f"  kills {out.kills}, survived {out.survived}, data lost {out.data_lost}")
    return out


# --------------------------------------------------------------------------- corrupt files
def _garbage(p: Path) -> None:
    p.write_bytes(os.urandom(512))


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "status random bytes": ("status.json", _garbage),
    "status []": ("status.json", lambda p: p.write_text("[]")),
    "status empty": ("status.json", lambda p: p.write_text("")),
    "status missing": ("status.json", lambda p: p.unlink()),
    "status step abc": ("status.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "step": "abc"}))),
    "status state 5": ("status.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "state": 5, "total_steps": None}))),
    "status pid string": ("status.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "state": "running", "pid": "x"}))),
    "metrics row step abc": ("metrics.jsonl", lambda p: p.open("a").write('{"step": "abc"}\n')),
    "metrics row without fields": ("metrics.jsonl",
                                   lambda p: p.open("a").write('{"step": 99999}\n')),
    "metrics row a list": ("metrics.jsonl", lambda p: p.open("a").write("[1, 2]\n")),
    "metrics random bytes": ("metrics.jsonl", _garbage),
    "config random bytes": ("config.json", _garbage),
    "config a list": ("config.json", lambda p: p.write_text("[]")),
    "config bad value": ("config.json", lambda p: p.write_text(
        json.dumps({**json.loads(p.read_text()), "K": -4}))),
    "last checkpoint garbage": ("LAST_CKPT", _garbage),
    "last checkpoint truncated": ("LAST_CKPT", lambda p: p.write_bytes(p.read_bytes()[:200])),
    "last checkpoint empty": ("LAST_CKPT", lambda p: p.write_bytes(b"")),
    "every checkpoint garbage": ("ALL_CKPT", _garbage),
    "stale temp files": ("checkpoints/.step_00099999.pt.abc.tmp",
                         lambda p: p.write_bytes(os.urandom(64))),
}


@dataclass
class CorruptResult:
    fault: str
    crashed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    data_lost: list[str] = field(default_factory=list)


OPERATIONS = ("list_runs", "status", "metrics", "pump", "cancel", "report", "resume")
NEVER_RAISE = OPERATIONS[:5]


def _refusal(op: str, exc: BaseException) -> bool:
    """Is ``exc`` from operation ``op`` a documented one-line refusal? Reading a run's table
    row, status or metrics, pumping the queue and cancelling never raise (a damaged file reads
    as state ``unknown``); a report or a resume may refuse with the errors the CLI and the
    pages print as one line."""
    from dufm_core.checkpoints import CheckpointError
    from dufm_core.config import ConfigError

    if op in NEVER_RAISE:
        return False
    one_line = "\n" not in str(exc).strip()
    return one_line and isinstance(exc, (ConfigError, CheckpointError, FileNotFoundError,
                                         RuntimeError))


def _operations(run_dir: Path, runs: Path) -> dict[str, Callable[[], Any]]:
    from dufm_core import kinds, reports
    from dufm_core.process import jobs
    from dufm_core.store import Run, list_runs

    run = Run(run_dir)

    def pump() -> Any:
        real = jobs.start_worker
        jobs.start_worker = lambda r: 0  # never start a process here
        try:
            return jobs.pump(runs, limit=1)
        finally:
            jobs.start_worker = real

    def report() -> Any:
        step = run.latest_checkpoint()
        return None if step is None else reports.analyze(run, step)

    def resume() -> Any:
        return kinds.resume(run_dir, steps=run.config().steps + 40, progress=None)

    return {
        "list_runs": lambda: list_runs(runs),
        "status": run.status,
        "metrics": run.metrics,
        "pump": pump,
        "cancel": lambda: jobs.cancel(run),
        "report": report,
        "resume": resume,
    }


def corrupt_matrix(tmp: Path, progress: Callable[[str], None] = print) -> list[CorruptResult]:
    """Every corruption of :data:`CORRUPTIONS` under every operation."""
    from dufm_core import RunConfig, train
    from dufm_core.store import Run, iter_runs

    base_runs = tmp / "base"
    train(RunConfig(K=3, n=4, width=5, depth=3, steps=400, checkpoint_points=6, log_points=40,
                    seed=3), runs_dir=base_runs, progress=None)
    (base,) = list(iter_runs(base_runs))
    out = []
    for i, (fault, (target, damage)) in enumerate(CORRUPTIONS.items()):
        runs = tmp / f"c{i}"
        run_dir = runs / base.path.name
        shutil.copytree(base.path, run_dir)
        ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
        if target == "LAST_CKPT":
            paths, good = [ckpts[-1]], ckpts[:-1]
        elif target == "ALL_CKPT":
            paths, good = ckpts, []
        else:
            paths, good = [run_dir / target], ckpts
        for p in paths:
            damage(p)
        good_bytes = {p.name: p.read_bytes() for p in good}
        rows_before = Run(base.path).metrics()
        res = CorruptResult(fault)
        for name, op in _operations(run_dir, runs).items():
            try:
                op()
            except BaseException as exc:
                if _refusal(name, exc):
                    res.refused.append(f"{name}: {type(exc).__name__}: {str(exc)[:120]}")
                else:
                    res.crashed.append(f"{name}: {type(exc).__name__}: {str(exc)[:160]}")
        for p in good:
            if not p.is_file() or p.read_bytes() != good_bytes[p.name]:
                res.data_lost.append(f"checkpoint {p.name} lost or changed")
        if target != "metrics.jsonl" and good:  # the rows up to the newest good checkpoint
            last_good = int(good[-1].stem.split("_")[1])
            kept = {r["step"]: r for r in Run(run_dir).metrics()}
            lost = [r["step"] for r in rows_before if r["step"] <= last_good
                    and kept.get(r["step"]) != r]
            if lost:
                res.data_lost.append(f"metrics rows up to step {last_good} lost: {lost[:5]}")
        if res.crashed or res.data_lost:
            progress(f"  {fault}: crashed {res.crashed} lost {res.data_lost}")
        out.append(res)
    return out
