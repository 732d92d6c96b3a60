"""Worker processes: launch, the concurrency limit and its queue, cancel, delete."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dufm_core.config import RunConfig
from dufm_core.process import jobs
from dufm_core.store import Run, list_runs


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
