"""Run store: atomic writes, torn metrics lines, listing, dead workers, safe checkpoint loading."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
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


# --------------------------------------------------------------------------- damaged files
def test_status_is_always_well_typed_and_unknown_when_malformed(runs_dir: Path) -> None:
    from dufm_core.run_schema import typed_status

    run = create_run(small_cfg(), runs_dir)
    path = run.path / "status.json"
    cases = {
        b"\xff\xfe\x00\x8f": "status.json is not text",
        b"": "status.json is not valid JSON",
        b"[]": "status.json holds a JSON list, not an object",
        b'"running"': "status.json holds a JSON str, not an object",
        b'{"state": "running", "step": "abc"}': "status.json: step 'abc' is not a whole number",
        b'{"state": "bogus", "step": 3}': "status.json: state 'bogus' is not one of",
        b'{"state": "queued", "total_steps": [1]}': "status.json: total_steps [1] is not",
    }
    for content, why in cases.items():
        path.write_bytes(content)
        status = run.status()
        assert status["state"] == "unknown", content
        assert status["error"].startswith(why), (content, status["error"])
        assert (status["step"], status["total_steps"], status["pid"]) == (
            3 if b"bogus" in content else 0, 0, None)
    path.unlink()
    assert run.status()["error"] == "no status.json"
    # well-formed but odd values are typed, not fatal
    status = typed_status({"state": "finished", "step": 7.0, "total_steps": "9", "pid": "x",
                           "loss": "nan?", "host": 3, "extra": [1]})
    assert (status["state"], status["step"], status["total_steps"]) == ("finished", 7, 9)
    assert (status["pid"], status["loss"], status["host"], status["extra"]) == (None, None,
                                                                               None, [1])
    # writing over a corrupt status.json replaces it
    path.write_bytes(b"\xff\x00")
    run.write_status(state="failed", step=3, total_steps=10, error="x")
    assert (run.status()["state"], run.status()["step"]) == ("failed", 3)


def test_metrics_rows_have_an_int_step_and_typed_fields(runs_dir: Path) -> None:
    run = create_run(small_cfg(), runs_dir)
    lines = [b'{"step": 0, "loss": 1.0, "nc1": [1.0, 2.0], "sv": [[3.0, 2.0]]}',
             b'{"step": "abc", "loss": 0.9}', b"[1, 2]", b'{"loss": 0.8}', b'{"step": true}',
             b'{"step": -1}', b'{"step": 2.5}', b'{"step": "3", "loss": "x", "nc1": "y"}',
             b'{"step": 4.0, "sv": [[1.0, "z"], 5], "nc2": [1, null, "q"], "note": "kept"}',
             b'{"step": 5}']
    run.metrics_path.write_bytes(b"\n".join(lines) + b"\n")
    rows = run.metrics()
    assert [r["step"] for r in rows] == [0, 3, 4, 5]
    assert rows[0] == {"step": 0, "loss": 1.0, "nc1": [1.0, 2.0], "sv": [[3.0, 2.0]]}
    assert rows[1] == {"step": 3, "loss": None}  # a bad scalar is None, a bad list is dropped
    assert rows[2] == {"step": 4, "nc2": [1, None, None], "note": "kept"}
    assert list_runs(runs_dir)[0].loss is None  # the last row has no loss
    run.truncate_metrics(3)
    assert [r["step"] for r in run.metrics()] == [0, 3]
    assert len(run.metrics_path.read_text().splitlines()) == 2  # malformed lines are gone


def test_a_run_whose_config_cannot_be_read_is_listed_unknown(runs_dir: Path) -> None:
    from dufm_core.config import ConfigError

    good, bad, odd = (create_run(small_cfg(), runs_dir) for _ in range(3))
    (bad.path / "config.json").write_bytes(b"\xff\x00{")
    (odd.path / "config.json").write_text(json.dumps({**good.config().to_dict(), "model": "x"}))
    summaries = {s.id: s for s in list_runs(runs_dir)}
    assert summaries[good.id].state == "queued" and summaries[good.id].config["K"] == 3
    assert summaries[bad.id].state == "unknown" and summaries[bad.id].config == {}
    assert summaries[bad.id].error.startswith("config.json: ")
    assert summaries[odd.id].error == "config.json: model 'x' is not one of ufm, resnet20"
    with pytest.raises(ConfigError, match=r"^config\.json: .*is not text"):
        bad.config()


# --------------------------------------------------------------------------- atomic create
def test_create_run_is_atomic_and_one_line_when_the_disk_is_full(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from dufm_core import store

    create_run(small_cfg(), runs_dir)
    before = sorted(p.name for p in runs_dir.iterdir())

    def full(path: Path, obj: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(store, "atomic_write_json", full)
    with pytest.raises(store.StoreError) as err:
        create_run(small_cfg(), runs_dir)
    assert str(err.value) == f"cannot create a run folder in {runs_dir}: No space left on device"
    assert isinstance(err.value, OSError)
    assert sorted(p.name for p in runs_dir.iterdir()) == before  # nothing half-made is left


def test_a_run_being_made_is_never_listed(runs_dir: Path) -> None:
    from dufm_core.store import find_run, iter_runs

    run = create_run(small_cfg(), runs_dir)
    staging = runs_dir / ".new-0123456789abcdef"
    shutil.copytree(run.path, staging)
    assert [r.id for r in iter_runs(runs_dir)] == [run.id]
    assert find_run(staging.name, runs_dir) is None
    create_run(small_cfg(), runs_dir)
    assert staging.is_dir()  # it may still be in the making
    old = time.time() - 7200
    os.utime(staging, (old, old))
    create_run(small_cfg(), runs_dir)
    assert not staging.exists()  # its creator was killed long ago


# --------------------------------------------------------------------------- temp files
def test_stale_temp_files_are_removed_and_live_writers_left_alone(runs_dir: Path) -> None:
    from dufm_core import store

    run = create_run(small_cfg(), runs_dir)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tag = store._HOST_TAG
    names = {
        "dead writer": run.checkpoint_dir / f".step_00000010.pt.{tag}-{dead.pid}-abcd1234.tmp",
        "this process": run.path / f".status.json.{tag}-{os.getpid()}-abcd1234.tmp",
        "live writer": run.analysis_dir / f".step_00000010.json.{tag}-1-abcd1234.tmp",
        "other host": run.path / f".metrics.jsonl.00000000-{dead.pid}-abcd1234.tmp",
        "old, no writer": run.path / ".config.json.abcd1234.tmp",
        "fresh, no writer": run.path / ".status.json.wxyz9876.tmp",
        "not a temp file": run.path / "notes.tmp",
    }
    for path in names.values():
        path.write_bytes(b"x")
    old = time.time() - 120
    os.utime(names["old, no writer"], (old, old))
    removed = run.clean_stale_temps()
    assert sorted(removed) == sorted([names["dead writer"], names["old, no writer"]])
    for what, path in names.items():
        assert path.exists() == (path not in removed), what
    # a temp file of this process's own atomic writes carries its host and pid
    store.atomic_write_json(run.path / "x.json", {"a": 1})
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp") and "x.json" in p.name]


# --------------------------------------------------------------------------- process identity
def test_a_recycled_pid_does_not_keep_a_dead_run_running(runs_dir: Path) -> None:
    from dufm_core.runlock import identity

    run = create_run(small_cfg(), runs_dir)
    me = identity()
    assert isinstance(me["pid_start"], int) and me["pid_cmd"]
    run.write_status(state="running", host=socket.gethostname(), **me)
    assert run.status()["state"] == "running"
    # the same pid, but a process started at another time: the worker is gone
    run.write_status(pid_start=me["pid_start"] - 1)
    assert run.status()["state"] == "interrupted"
    assert list_runs(runs_dir)[0].state == "interrupted"


# --------------------------------------------------------------------------- the run lock
def test_the_run_lock_is_exclusive_reentrant_and_says_who_holds_it(runs_dir: Path) -> None:
    import threading

    from dufm_core.runlock import RunBusyError, holds

    run = create_run(small_cfg(), runs_dir)
    seen: list[str] = []

    def other_thread() -> None:
        try:
            with run.lock():
                seen.append("got it")
        except RunBusyError as exc:
            seen.append(str(exc))

    with run.lock():
        with run.lock():  # the holding thread may take it again
            assert holds(run.path)
        assert holds(run.path)
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        code = (f"import fcntl, os; fd = os.open({str(run.path / 'lock')!r}, os.O_RDWR)\n"
                "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('got it')\n"
                "except BlockingIOError:\n    print('busy')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60).stdout
    assert seen == [f"run {run.id} is being trained by pid {os.getpid()} (another thread)"]
    assert out.strip() == "busy"
    assert not holds(run.path)
    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen[-1] == "got it"  # released with the block
