"""The one loop against faults: one trainer a run (the run lock), a resume that falls back past
an unloadable checkpoint, and a resume that fails before training leaving the run as it was.
(tests/test_faults.py drives the same from other processes, with SIGKILL and damaged files.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from dufm_core import kinds
from dufm_core.config import RunConfig
from dufm_core.runlock import RunBusyError
from dufm_core.store import Run


def _trained(runs_dir: Path, steps: int = 120) -> Run:
    cfg = RunConfig(K=3, n=4, width=5, depth=2, steps=steps, log_points=10, checkpoint_points=3,
                    schedule="linear")
    return kinds.train(cfg, runs_dir, progress=None).run


def _files(run: Run) -> dict[str, bytes]:
    return {str(p.relative_to(run.path)): p.read_bytes()
            for p in sorted(run.path.rglob("*")) if p.is_file() and p.name != "lock"}


def test_a_second_trainer_of_a_run_is_refused_and_changes_nothing(runs_dir: Path) -> None:
    run = _trained(runs_dir)
    before = _files(run)
    errors: list[BaseException] = []

    def sweep_member_style() -> None:  # what a sweep member or a queue worker does
        try:
            kinds.trainer_for(run, run.config()).train(resume=True)
        except BaseException as exc:
            errors.append(exc)

    with run.lock():  # someone else trains it
        t = threading.Thread(target=sweep_member_style)
        t.start()
        t.join(60)
    (err,) = errors
    assert isinstance(err, RunBusyError)
    assert str(err).startswith(f"run {run.id} is being trained by pid ")
    assert _files(run) == before


def test_fallback_without_a_progress_callback_says_so_on_stderr(
    runs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _trained(runs_dir)
    last = run.latest_checkpoint()
    assert last == 120
    run.checkpoint_path(last).write_bytes(b"not a checkpoint")
    rows = [{k: v for k, v in r.items() if k != "time"} for r in run.metrics()]
    result = kinds.trainer_for(run, run.config()).train(resume=True)  # progress=None
    assert (result.state, result.step) == ("finished", 120)
    err = capsys.readouterr().err
    assert "skipped checkpoint step_00000120.pt (set aside as step_00000120.pt.unreadable): " in err
    assert str(run.checkpoint_path(120)) in err  # the reason names the file
    assert [{k: v for k, v in r.items() if k != "time"} for r in run.metrics()] == rows
    assert run.checkpoints() == [0, 40, 80, 120]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("state", ["finished", "cancelled", "diverged", "failed"])
def test_a_resume_that_fails_before_training_keeps_the_runs_last_word(
    runs_dir: Path, state: str
) -> None:
    run = _trained(runs_dir)
    run.write_status(state=state, error=None if state == "finished" else "as it was")
    before = _files(run)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        kinds.resume(run.path, steps=500, device="cuda", progress=None)
    after = _files(run)
    assert after.pop("status.json") == before.pop("status.json")  # not relabelled failed
    assert after == before  # config.json keeps 120 steps and the cpu device
    assert run.config().steps == 120


def test_orphaned_temp_files_are_removed_when_training_starts(runs_dir: Path) -> None:
    import subprocess
    import sys

    from dufm_core import store

    run = _trained(runs_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = run.checkpoint_dir / f".step_00000080.pt.{store._HOST_TAG}-{dead.pid}-x1y2z3.tmp"
    orphan.write_bytes(b"half a checkpoint")
    said: list[str] = []
    kinds.resume(run.path, progress=said.append)
    assert not orphan.exists()
    assert f"removed an orphaned temp file checkpoints/{orphan.name}" in said
