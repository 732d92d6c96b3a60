"""Run store: atomic writes, torn metrics lines, listing, dead workers, safe checkpoint loading."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dufm_core.config import RunConfig
from dufm_core.store import atomic_write_json, create_run, list_runs, open_run, read_jsonl


def small_cfg(**kw) -> RunConfig:
    cfg = RunConfig(K=3, n=4, width=5, depth=2, steps=10, **kw)
    cfg.validate()
    return cfg


def test_create_run_layout(runs_dir: Path) -> None:
    run = create_run(small_cfg(name="my run"), runs_dir)
    assert run.path.parent == runs_dir
    assert "my-run" in run.id
    for name in ("config.json", "status.json", "metrics.jsonl"):
        assert (run.path / name).is_file()
    assert run.checkpoint_dir.is_dir() and run.analysis_dir.is_dir()
    status = run.status()
    assert status["state"] == "queued" and status["total_steps"] == 10
    assert RunConfig.from_dict(json.loads((run.path / "config.json").read_text())) == run.config()


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    for i in range(5):
        atomic_write_json(target, {"i": i})
    assert json.loads(target.read_text()) == {"i": 4}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_torn_metrics_line_is_skipped(runs_dir: Path) -> None:
    run = create_run(small_cfg(), runs_dir)
    run.append_metrics({"step": 0, "loss": 1.0})
    run.append_metrics({"step": 1, "loss": 0.5})
    with run.metrics_path.open("a") as fh:
        fh.write('{"step": 2, "loss": 0.2')  # crash mid-line
    rows = run.metrics()
    assert [r["step"] for r in rows] == [0, 1]
    assert len(read_jsonl(run.metrics_path)) == 2
    # the runs table still reads the last good row
    (summary,) = list_runs(runs_dir)
    assert summary.loss == 0.5


def test_metrics_later_duplicate_wins_and_truncate(runs_dir: Path) -> None:
    run = create_run(small_cfg(), runs_dir)
    for s, v in [(0, 1.0), (5, 0.5), (9, 0.1), (5, 0.4)]:
        run.append_metrics({"step": s, "loss": v})
    assert [(r["step"], r["loss"]) for r in run.metrics()] == [(0, 1.0), (5, 0.4), (9, 0.1)]
    run.truncate_metrics(5)
    assert [r["step"] for r in run.metrics()] == [0, 5]


def test_running_with_dead_pid_is_interrupted(runs_dir: Path) -> None:
    run = create_run(small_cfg(), runs_dir)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    run.write_status(state="running", pid=proc.pid, host=socket.gethostname())
    assert run.status()["state"] == "interrupted"
    assert list_runs(runs_dir)[0].state == "interrupted"
    run.write_status(state="running", pid=os.getpid())
    assert run.status()["state"] == "running"


def test_list_runs_empty_and_missing(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "nope") == []
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        open_run(tmp_path)


def test_to_jsonable_plain_values_or_type_error() -> None:
    import numpy as np

    from dufm_core.store import to_jsonable

    assert to_jsonable({"a": torch.ones(2), "b": (np.float64(1.5), torch.tensor(2.0))}) == {
        "a": [1.0, 1.0], "b": [1.5, 2.0]
    }  # fmt: skip
    assert to_jsonable({1: np.arange(2), "n": None}) == {"1": [0, 1], "n": None}
    with pytest.raises(TypeError):
        to_jsonable(object())


def test_find_run_accepts_only_listed_plain_names(runs_dir: Path, tmp_path: Path) -> None:
    from dufm_core.store import find_run, iter_runs

    run = create_run(small_cfg(), runs_dir)
    assert find_run(run.id, runs_dir) == run
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (runs_dir / "link").symlink_to(outside)
    for bad in ["link", str(outside), "../outside", "..", ".", "", "a/b", "nope", run.id + "/"]:
        assert find_run(bad, runs_dir) is None, bad
    assert [r.id for r in iter_runs(runs_dir)] == [run.id]
