"""Faults that must never lose or corrupt a run (issue #12): trainers killed with SIGKILL at
random moments (during checkpoint writes too) and resumed, damaged run files under every store
operation, two resumes of one run at once, and many pumps of one queue at once.

Trainers and pumps run in processes forked by a small fork server
(:mod:`tests.process.fault_child`), started once for this module, so that a kill-and-resume
costs milliseconds rather than a fresh Python with torch.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from dufm_core import kinds, reports
from dufm_core.checkpoints import CheckpointError
from dufm_core.config import ConfigError, RunConfig
from dufm_core.process import jobs
from dufm_core.runlock import pid_alive
from dufm_core.store import Run, create_run, iter_runs, list_runs, open_run
from tests.helpers import ROOT
from tests.process.fault_child import fake_start_worker

WAIT_S = 60.0  # bound on any wait for a child (they take a few seconds at most)


class ForkServer:
    """Client of :mod:`tests.process.fault_child` (see its docstring for the requests)."""

    def __init__(self, log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.process.fault_child"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True,
        )

    def _ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req, default=str) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT_S)
        assert ready, f"the fork server did not answer {req} (log: {self.log.read_text()})"
        return json.loads(self.proc.stdout.readline())

    def start(self, do: str, **req: Any) -> int:
        """Fork a child for request ``do``; its pid."""
        return int(self._ask(do=do, **req)["pid"])

    def wait(self, pid: int, timeout: float = WAIT_S) -> int:
        """The exit code of child ``pid`` (-9: killed), killing it if it outlives ``timeout``."""
        deadline = time.monotonic() + timeout
        while pid_alive(pid):  # a zombie counts as dead
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                self._ask(do="wait", pid=pid)
                raise AssertionError(f"child {pid} hung (log: {self.log.read_text()[-3000:]})")
            time.sleep(0.005)
        return int(self._ask(do="wait", pid=pid)["exit"])

    def run(self, do: str, **req: Any) -> int:
        return self.wait(self.start(do, **req))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("forks") / "log.txt")
    try:
        yield server
    finally:
        server.close()


def _until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _rows(run: Run) -> list[dict[str, Any]]:
    """Metrics rows without the wall-clock ``time``."""
    return [{k: v for k, v in r.items() if k != "time"} for r in run.metrics()]


def _temps(run: Run) -> list[Path]:
    return [p for p in run.path.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- SIGKILL and resume
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(
    forks: ForkServer, tmp_path: Path
) -> None:
    cfg = RunConfig(K=3, n=4, width=6, depth=2, steps=16000, log_points=80, checkpoint_points=40,
                    schedule="linear", seed=3)
    ref = create_run(cfg, tmp_path / "ref")
    assert forks.run("train", run=ref.path) == 0
    run = create_run(cfg, tmp_path / "runs")
    rng = random.Random(12)
    # (request, when to kill): after the first checkpoint, at a random moment of training, at
    # once (while it truncates metrics and writes status), in a checkpoint write (stall)
    plan = [("train", "trained"), ("resume", "trained"), ("resume", "early"),
            ("resume", "stall"), ("resume", "trained"), ("resume", "trained")]
    kills = in_checkpoint_write = 0
    for i, (do, when) in enumerate(plan):
        marker, result = tmp_path / f"marker{i}", tmp_path / f"result{i}.json"
        stall = rng.randint(2, 4) if when == "stall" else 0
        pid = forks.start(do, run=run.path, stall=stall, marker=marker, result=result)
        if when == "stall":
            _until(lambda m=marker, p=pid: m.exists() or not pid_alive(p), "a checkpoint write")
        elif when == "early":
            time.sleep(rng.uniform(0.0, 0.03))
        else:
            _until(lambda p=pid: (run.status()["pid"] == p and run.checkpoints() != [])
                   or not pid_alive(p), "training")
            time.sleep(rng.uniform(0.02, 0.25))
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        if forks.wait(pid) == -signal.SIGKILL:
            kills += 1
            if marker.exists():  # killed between writing a checkpoint and renaming it
                assert [p.name for p in _temps(run)
                        if p.parent == run.checkpoint_dir and p.name.startswith(".step_")]
                in_checkpoint_write += 1
    assert kills >= 5 and in_checkpoint_write == 1
    assert run.status()["state"] in ("interrupted", "finished")
    result = tmp_path / "final.json"
    assert forks.run("resume", run=run.path, result=result) == 0, result.read_text()
    # nothing lost, nothing left over: the run is the uninterrupted one, row for row
    status = run.status()
    assert (status["state"], status["step"], status["total_steps"]) == ("finished", 16000, 16000)
    assert run.config() == cfg
    assert _rows(run) == _rows(ref)
    assert run.checkpoints() == ref.checkpoints()
    a, b = (kinds.load_checkpoint(r.checkpoint_path(16000)).model.state_dict() for r in (run, ref))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _temps(run) == []


# --------------------------------------------------------------------------- one trainer a run
def test_two_resumes_at_once_one_trains_the_other_is_refused(
    forks: ForkServer, tmp_path: Path
) -> None:
    cfg = RunConfig(K=3, n=4, width=6, depth=2, steps=300, log_points=20, checkpoint_points=4)
    run = create_run(cfg, tmp_path / "runs")
    assert forks.run("train", run=run.path) == 0
    asks = {6000: tmp_path / "a.json", 9000: tmp_path / "b.json"}  # ~1 s of training
    pids = {steps: forks.start("resume", run=run.path, steps=steps, result=out)
            for steps, out in asks.items()}
    codes = {steps: forks.wait(pid) for steps, pid in pids.items()}
    results = {steps: json.loads(out.read_text()) for steps, out in asks.items()}
    trained = [s for s, r in results.items() if "state" in r]
    refused = [s for s, r in results.items() if "error" in r]
    assert len(trained) == 1 and len(refused) == 1, results
    (won,), (lost,) = trained, refused
    assert (codes[won], codes[lost]) == (0, 1)
    assert results[lost]["type"] == "RunBusyError"
    assert results[lost]["error"] == f"run {run.id} is being trained by pid {pids[won]}"
    # the config, the status and the metrics all say the winner's steps
    status = run.status()
    assert run.config().steps == status["total_steps"] == status["step"] == won
    assert status["state"] == "finished" and run.metrics()[-1]["step"] == won
    assert run.latest_checkpoint() == won


def test_cli_resume_of_a_run_being_trained_is_one_line_and_changes_nothing(
    runs_dir: Path,
) -> None:
    cfg = RunConfig(K=3, n=4, width=6, depth=2, steps=50, log_points=5, checkpoint_points=2)
    run = kinds.train(cfg, runs_dir, progress=None).run
    before = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with run.lock():  # this process trains it, as far as anyone can tell
        proc = subprocess.run(
            [sys.executable, "-m", "dufm_core", "train", "--resume", str(run.path), "--steps",
             "500"], capture_output=True, text=True, env=env, timeout=WAIT_S,
        )
    assert proc.returncode == 2
    assert proc.stderr == f"error: run {run.id} is being trained by pid {os.getpid()}\n"
    after = {p.name: p.read_bytes() for p in run.path.iterdir() if p.is_file()}
    assert after == before


# --------------------------------------------------------------------------- the queue limit
def test_concurrent_pumps_never_exceed_the_limit(
    forks: ForkServer, runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = RunConfig(K=2, n=2, width=2, depth=1, steps=10)
    queued = [create_run(cfg, runs_dir).id for _ in range(20)]
    log = tmp_path / "starts.log"
    log.touch()
    monkeypatch.setattr(jobs, "start_worker", fake_start_worker(runs_dir, str(log), os.getpid()))
    deadline = time.monotonic() + WAIT_S

    def states() -> list[str]:
        return [r.status()["state"] for r in iter_runs(runs_dir)]

    def pump_thread() -> None:
        while "queued" in states() and time.monotonic() < deadline:
            jobs.pump(runs_dir, limit=2)

    children = [forks.start("pump", runs=runs_dir, limit=2, log=log, owner=os.getpid(),
                            seconds=WAIT_S) for _ in range(3)]
    threads = [threading.Thread(target=pump_thread) for _ in range(3)]
    for t in threads:
        t.start()
    rng = random.Random(5)
    while set(states()) != {"finished"}:  # workers end one by one, at random
        assert time.monotonic() < deadline, states()
        time.sleep(0.01)
        running = [r for r in iter_runs(runs_dir) if r.status()["state"] == "running"]
        if running:
            rng.choice(running).write_status(state="finished")
    for t in threads:
        t.join(WAIT_S)
    assert [forks.wait(pid) for pid in children] == [0, 0, 0]
    starts = [line.split() for line in log.read_text().splitlines()]
    assert sorted(run_id for run_id, _ in starts) == sorted(queued)  # each started once
    assert max(int(n) for _, n in starts) == 2  # and never more than two at a time


# --------------------------------------------------------------------------- damaged files
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A finished run with checkpoints at 0, 75, 150, 225, 300 (copied by each case)."""
    cfg = RunConfig(K=3, n=4, width=6, depth=2, steps=300, log_points=20, checkpoint_points=4,
                    schedule="linear")
    return kinds.train(cfg, tmp_path_factory.mktemp("base"), progress=None).run


def _full_status(run: Run) -> dict[str, Any]:
    return {**json.loads((run.path / "status.json").read_text()), "step": "abc"}


BAD_ROWS = [b'{"step": "abc", "loss": 1.0}', b"[1, 2, 3]", b'{"loss": 0.5}', b'{"step": 5}',
            b'{"step": 40, "loss": "x", "nc1": "y", "sv": [[1.0, "z"]]}', b"\x8f\xfe\x00\xff",
            b'{"step": 41, "nc1": [0.5], "sv": [[2.0]]}']
GARBAGE = b"\x8f\xfe\x00garbage\xff" * 7

DAMAGE: dict[str, Callable[[Run], None]] = {
    "status random bytes": lambda r: (r.path / "status.json").write_bytes(GARBAGE),
    "status []": lambda r: (r.path / "status.json").write_text("[]"),
    "status step abc": lambda r: (r.path / "status.json").write_text(json.dumps(_full_status(r))),
    "status empty": lambda r: (r.path / "status.json").write_bytes(b""),
    "status missing": lambda r: (r.path / "status.json").unlink(),
    "metrics bad rows": lambda r: r.metrics_path.open("ab").write(b"\n".join(BAD_ROWS) + b"\n"),
    "config garbage": lambda r: (r.path / "config.json").write_bytes(GARBAGE),
    "config []": lambda r: (r.path / "config.json").write_text("[]"),
    "checkpoint garbage": lambda r: r.checkpoint_path(300).write_bytes(GARBAGE),
    "checkpoint truncated": lambda r: r.checkpoint_path(300).write_bytes(
        r.checkpoint_path(300).read_bytes()[:700]),
    "checkpoint zero bytes": lambda r: r.checkpoint_path(300).write_bytes(b""),
}


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_file_breaks_nothing_and_loses_nothing(
    case: str, trained: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui import figures

    runs = tmp_path / "runs"
    run = Run(Path(shutil.copytree(trained.path, runs / trained.id)))
    good_rows, good_steps = _rows(run), run.checkpoints()
    DAMAGE[case](run)
    kind = case.split()[0]

    # listing, status, metrics and the pages' figures of them
    (summary,) = list_runs(runs)
    status = run.status()
    assert isinstance(status["state"], str)
    assert isinstance(status["step"], int) and isinstance(status["total_steps"], int)
    if kind in ("status", "config"):
        assert summary.state == "unknown" and _one_line(summary.error)
    else:
        assert summary.state == status["state"] == "finished"
    rows = run.metrics()
    assert all(isinstance(r["step"], int) for r in rows)
    assert [r for r in good_rows if r not in _rows(run)] == []  # every good row is still read
    for fig in (figures.metric_curves({run.id: rows}, "loss"), figures.layer_curves(rows, "nc1"),
                figures.singular_values_over_training(rows, 1)):
        assert fig.data

    # the queue goes on: a queued run beside it starts, the damaged one never does
    started: list[str] = []
    monkeypatch.setattr(jobs, "start_worker", lambda r: started.append(r.id))
    queued = create_run(RunConfig(K=2, n=2, width=2, depth=1, steps=5), runs)
    assert [r.id for r in jobs.pump(runs, limit=2)] == [queued.id] == started
    shutil.rmtree(queued.path)
    assert _one_line(jobs.cancel(run)).startswith("nothing to cancel")
    if kind == "checkpoint":  # the analysis of the bad checkpoint is one line
        with pytest.raises(CheckpointError) as err:
            reports.analyze(run)
        _one_line(err.value)

    # resume: a damaged status is repaired, a bad checkpoint is set aside and the one before is
    # used; a damaged config is one line and changes nothing
    said: list[str] = []
    if kind == "config":
        before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
        with pytest.raises(ConfigError) as err:
            kinds.resume(run.path, progress=said.append)
        assert _one_line(err.value).startswith("config.json: ")
        assert {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file()} == before
    else:
        result = kinds.resume(run.path, progress=said.append)
        assert (result.state, result.step) == ("finished", 300)
        assert run.status()["state"] == "finished"
        assert run.checkpoints() == good_steps
        assert [r for r in good_rows if r not in _rows(run)] == []
        if kind == "checkpoint":
            assert (run.checkpoint_dir / "step_00000300.pt.unreadable").is_file()
            assert any(line.startswith("skipped checkpoint step_00000300.pt") for line in said)
            assert _rows(run) == good_rows  # retrained from 225: the same rows again
            series = reports.analyze_series(run)
            assert series["steps"] == good_steps
    assert _temps(run) == []

    jobs.delete(run)
    assert not run.path.exists() and list_runs(runs) == []


def test_resume_whose_checkpoints_are_all_unreadable_keeps_the_run_as_it_was(
    trained: Run, tmp_path: Path
) -> None:
    run = Run(Path(shutil.copytree(trained.path, tmp_path / trained.id)))
    for step in run.checkpoints():
        run.checkpoint_path(step).write_bytes(b"")
    config = (run.path / "config.json").read_bytes()
    with pytest.raises(RuntimeError) as err:
        kinds.resume(run.path, steps=600, progress=lambda _msg: None)
    msg = _one_line(err.value)
    assert re.search(r"no checkpoint to resume from \(set aside as unreadable: step_00000300\.pt, "
                     r".*step_00000000\.pt\)$", msg), msg
    status = open_run(run.path).status()
    assert status["state"] == "finished" and status["error"] is None  # not relabelled failed
    assert (run.path / "config.json").read_bytes() == config  # steps 600 was never written
