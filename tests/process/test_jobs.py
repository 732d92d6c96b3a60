"""Worker processes: launch, the concurrency limit and its queue, cancel, delete."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dufm_core.config import RunConfig
from dufm_core.process import jobs
from dufm_core.runlock import identity
from dufm_core.store import Run, create_run, list_runs


def _cfg(steps: int) -> RunConfig:
    return RunConfig(K=3, n=5, width=6, depth=3, steps=steps, log_points=20, checkpoint_points=2)


def _wait(run: Run, states: set[str], timeout: float = 90) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = run.status()["state"]
        if state in states:
            return state
        time.sleep(0.1)
    raise AssertionError(f"{run.id} stayed {run.status()} (log: {run.log_path.read_text()!r})")


def test_queue_respects_limit_and_drains(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUFM_MAX_JOBS", "1")
    first = jobs.launch(_cfg(3000), runs_dir)
    second = jobs.launch(_cfg(50), runs_dir)
    assert first.status()["state"] == "running"
    assert second.status()["state"] == "queued"
    # when the first worker ends it starts the queued one
    assert _wait(first, {"finished"}) == "finished"
    assert _wait(second, {"finished"}) == "finished"
    assert "finished at step 3000" in first.log_path.read_text()
    assert {r.state for r in list_runs(runs_dir)} == {"finished"}


def test_cancel_queued_and_running_then_delete(runs_dir: Path) -> None:
    running = jobs.launch(_cfg(10_000_000), runs_dir, limit=1)
    queued = jobs.launch(_cfg(100), runs_dir, limit=1)
    assert queued.status()["state"] == "queued"
    assert "was queued" in jobs.cancel(queued)
    assert queued.status()["state"] == "cancelled"
    assert jobs.pump(runs_dir, limit=5) == []  # a cancelled run is never started
    _wait(running, {"running"})
    deadline = time.time() + 60
    while running.status().get("step", 0) == 0 and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(RuntimeError, match="cancel it before deleting"):
        jobs.delete(running)
    assert "SIGTERM" in jobs.cancel(running)
    assert _wait(running, {"cancelled"}) == "cancelled"
    assert running.latest_checkpoint() == running.status()["step"]
    jobs.delete(running)
    jobs.delete(queued)
    assert list_runs(runs_dir) == []


def test_worker_failure_is_recorded(runs_dir: Path) -> None:
    cfg = _cfg(10)
    cfg.device = "cuda"
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    run = jobs.launch(cfg, runs_dir)
    assert _wait(run, {"failed"}) == "failed"
    assert "no CUDA GPU" in run.status()["error"]


def test_fork_server_starts_workers(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dufm_core.process import launcher

    monkeypatch.setenv("DUFM_LAUNCHER_IDLE", "60")  # never outlives the test run for long
    runs_dir.mkdir(parents=True)
    assert not launcher.ping(runs_dir)
    launcher.ensure_launcher(runs_dir)
    try:
        deadline = time.time() + 60
        while not launcher.ping(runs_dir):
            assert time.time() < deadline, "launcher did not come up"
            time.sleep(0.1)
        with monkeypatch.context() as m:  # the worker must come from the fork server
            m.setattr(jobs, "_spawn_process", lambda run: pytest.fail("spawned, not forked"))
            run = jobs.launch(_cfg(200), runs_dir)
        assert _wait(run, {"finished"}) == "finished"
        assert "finished at step 200" in run.log_path.read_text()
        assert launcher.launch_via_server(runs_dir, runs_dir / "nope") is None
    finally:
        assert launcher.stop(runs_dir)
    time.sleep(0.2)
    assert not launcher.ping(runs_dir)
    # with no launcher, workers still start (fresh process)
    run = jobs.launch(_cfg(20), runs_dir)
    assert _wait(run, {"finished"}) == "finished"


# --------------------------------------------------------------------------- cancel: whose pid?
def _sleeper(*args: str) -> subprocess.Popen:
    """A process that sleeps (``args`` end up on its command line)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


def _as_running(run: Run, proc: subprocess.Popen, **override: object) -> None:
    """status.json says ``proc`` is the run's worker (as a worker records itself)."""
    run.write_status(state="running", host=socket.gethostname(),
                     **{**identity(proc.pid), **override})


def test_cancel_signals_only_the_runs_own_worker(runs_dir: Path) -> None:
    runs = [create_run(_cfg(10), runs_dir) for _ in range(4)]
    stranger, recycled, legacy, ours = (_sleeper(), _sleeper(), _sleeper(), _sleeper("dufm_core"))
    try:
        # a live process that is not ours (its start time matches; the command line that was
        # recorded does not)
        _as_running(runs[0], stranger, pid_cmd="0" * 16)
        msg = jobs.cancel(runs[0])
        assert msg.startswith(f"not signalled: pid {stranger.pid} runs ")
        assert msg.endswith("not a DUFM Lab worker")
        # the pid now names a process started at another time (the worker is long gone)
        _as_running(runs[1], recycled, pid_start=identity(recycled.pid)["pid_start"] - 5)
        assert runs[1].status()["state"] == "interrupted"
        assert jobs.cancel(runs[1]) == (f"not signalled: pid {recycled.pid} now belongs to "
                                        "another process (its start time differs)")
        # an old status without a start time: only a DUFM Lab command line is signalled
        _as_running(runs[2], legacy, pid_start=None, pid_cmd=None)
        assert jobs.cancel(runs[2]).startswith("not signalled")
        assert [p.poll() for p in (stranger, recycled, legacy)] == [None, None, None]
        # the run's own worker gets SIGTERM
        _as_running(runs[3], ours)
        assert jobs.cancel(runs[3]) == f"sent SIGTERM to worker {ours.pid}"
        assert ours.wait(30) == -signal.SIGTERM
    finally:
        for p in (stranger, recycled, legacy, ours):
            p.kill()
            p.wait()
    # a worker that has gone: nothing is signalled, and it says so
    assert jobs.cancel(runs[0]) == f"not signalled: process {stranger.pid} is gone"


def test_a_worker_recorded_by_itself_outside_dufm_core_can_be_cancelled(runs_dir: Path) -> None:
    """A trainer run from a user's script (its command line names no dufm_core) is recognised by
    the digest of its command line that it recorded with its start time."""
    run = create_run(_cfg(10), runs_dir)
    proc = _sleeper()
    try:
        _as_running(run, proc, pid_cmd="0" * 16)  # another command line than the one recorded
        assert jobs.cancel(run).endswith("not a DUFM Lab worker")
        assert proc.poll() is None
        _as_running(run, proc)  # as the process itself records it (identity())
        assert jobs.cancel(run) == f"sent SIGTERM to worker {proc.pid}"
        assert proc.wait(30) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_delete_is_refused_while_something_trains_the_run(runs_dir: Path) -> None:
    run = create_run(_cfg(10), runs_dir)
    run.write_status(state="finished")
    (run.path / "status.json").write_bytes(b"\x00garbage")  # whatever status.json says
    with run.lock():
        with pytest.raises(RuntimeError, match=rf"^run {run.id} is being trained by pid "
                                               rf"{os.getpid()} \(another thread\): cancel it "
                                               "before deleting$"):
            threading_delete(run)
        assert run.path.is_dir()
    jobs.delete(run)
    assert not run.path.exists()


def threading_delete(run: Run) -> None:
    """``jobs.delete`` from another thread (the lock is re-entrant for its own thread)."""
    import threading

    errors: list[BaseException] = []

    def body() -> None:
        try:
            jobs.delete(run)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def test_pump_counts_a_claimed_run_that_is_starting(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(jobs, "start_worker", lambda run: started.append(run.id))
    starting, waiting = create_run(_cfg(10), runs_dir), create_run(_cfg(10), runs_dir)
    (starting.path / "claim").write_text("another pump\n")  # claimed, worker not yet running
    assert jobs.pump(runs_dir, limit=1) == [] and started == []
    old = time.time() - 2 * jobs.STARTING_S  # a claim that never started (its pump died)
    os.utime(starting.path / "claim", (old, old))
    assert [r.id for r in jobs.pump(runs_dir, limit=1)] == [waiting.id] == started


def test_a_worker_that_cannot_start_fails_the_run_not_the_pump(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork(run: Run) -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(jobs, "start_worker", no_fork)
    run = create_run(_cfg(10), runs_dir)
    assert jobs.pump(runs_dir) == []
    status = run.status()
    assert status["state"] == "failed"
    assert status["error"] == ("could not start a worker: [Errno 11] Resource temporarily "
                               "unavailable")


def test_a_worker_refused_by_the_run_lock_changes_nothing(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dufm_core.process import worker

    monkeypatch.setattr(jobs, "start_worker", lambda run: 0)
    run = create_run(_cfg(10), runs_dir)
    (run.path / "claim").write_text("x\n")
    before = (run.path / "status.json").read_bytes()
    result: list[int] = []
    with run.lock():
        import threading

        t = threading.Thread(target=lambda: result.append(worker.train_run(run.path)))
        t.start()
        t.join()
    assert result == [2]
    assert capsys.readouterr().err.endswith(
        f"error: run {run.id} is being trained by pid {os.getpid()} (another thread)\n")
    assert (run.path / "status.json").read_bytes() == before
