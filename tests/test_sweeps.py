"""Sweeps: spec expansion and validation, the local and Ray executors on tiny grids, failing
members, reruns that skip ended members, summary.csv, background launch and cancel, and the
benchmark's quick mode. Tiny configs (K=3, n=5, width 6, depth 2) keep the file fast."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dufm_core import cli, sweeps, theory
from dufm_core.process import executors
from dufm_core.store import open_run
from tests.helpers import ROOT

TINY = """
name = "{name}"
[base]
K = 3
n = 5
width = 6
depth = 2
lam = 0.01
lr = 0.5
steps = {steps}
log_points = 20
checkpoint_points = 2
[grid]
{grid}
"""


def tiny(name: str = "tiny", grid: str = "seed = [0, 1]", steps: int = 2000) -> str:
    return TINY.format(name=name, grid=grid, steps=steps)


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- specs
def test_expansion_is_a_product_in_axis_order() -> None:
    spec = sweeps.load_spec("<t>", tiny(grid="lam = [0.002, 0.02]\nseed = [0, 1, 2]"))
    members = spec.members()
    assert [m.values for m in members[:4]] == [
        {"lam": 0.002, "seed": 0},
        {"lam": 0.002, "seed": 1},
        {"lam": 0.002, "seed": 2},
        {"lam": 0.02, "seed": 0},
    ]
    assert len(members) == 6 and [m.index for m in members] == list(range(6))
    m = members[4]
    assert m.config.lam_w == 0.02 and m.config.lam_h == 0.02 and m.config.seed == 1
    assert m.config.width == 6 and m.config.name.startswith("tiny-")
    assert len({m.key for m in members}) == 6
    # keys are stable: the same spec text gives the same keys
    again = sweeps.load_spec("<t>", tiny(grid="lam = [0.002, 0.02]\nseed = [0, 1, 2]"))
    assert [m.key for m in again.members()] == [m.key for m in members]


def test_lam_over_crit_and_per_layer_axes() -> None:
    spec = sweeps.load_spec("<t>", tiny(grid="lam_over_crit = [0.5, 2.0]\ndepth = [2, 3]"))
    lam_c = theory.lambda_crit(3, 5, 3)
    m = next(m for m in spec.members() if m.values == {"lam_over_crit": 0.5, "depth": 3})
    assert m.config.lam_h == pytest.approx(0.5 * lam_c, rel=1e-12)
    assert m.config.lam_w == m.config.lam_h
    spec = sweeps.load_spec("<t>", tiny(grid="lam_w = [[0.01, 0.02], [0.02, 0.01]]"))
    assert [m.config.lam_w for m in spec.members()] == [[0.01, 0.02], [0.02, 0.01]]
    assert spec.members()[0].config.lam_h == 0.01  # from [base] lam


@pytest.mark.parametrize(
    ("grid", "field", "text"),
    [
        ("colour = [1, 2]", "grid.colour", "unknown axis"),
        ("lam = 0.1", "grid.lam", "non-empty list"),
        ("lam = []", "grid.lam", "non-empty list"),
        ("lam = [0.1]\nlam_h = [0.1]", "grid.lam", "cannot be combined"),
        ("seed = [0, 0]", "grid", "same config as member 0"),
    ],
)
def test_bad_grids_name_the_axis(grid: str, field: str, text: str) -> None:
    with pytest.raises(sweeps.SpecError) as exc:
        sweeps.load_spec("<t>", tiny(grid=grid))
    assert exc.value.field == field and text in str(exc.value)


def test_bad_member_names_member_and_field() -> None:
    with pytest.raises(sweeps.SpecError) as exc:
        sweeps.load_spec("<t>", tiny(grid="lr = [0.1, -1.0]\nseed = [3]"))
    msg = str(exc.value)
    assert msg.startswith("member 1 [lr=-1, seed=3]: lr: must be")
    assert exc.value.field == "lr" and exc.value.member == "member 1 [lr=-1, seed=3]"
    with pytest.raises(sweeps.SpecError, match=r"member 0 \[width=\[6, 6, 6\]\]: width"):
        sweeps.load_spec("<t>", tiny(grid="width = [[6, 6, 6]]"))  # depth is 2


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('name = "a b"\n[grid]\nseed = [0]', "name"),
        ('name = "x"\n[base]\nfoo = 1\n[grid]\nseed = [0]', "base.foo"),
        ('name = "x"\n[grid]\nseed = [0]\n[analysis]\nfull_hessian = 1', "analysis.full_hessian"),
        ('name = "x"\nsteps = 3\n[grid]\nseed = [0]', "steps"),
        ('name = "x"', "grid"),
        ('name = "x"\n[grid\n', "spec"),
    ],
)
def test_bad_spec_shapes(text: str, field: str) -> None:
    with pytest.raises(sweeps.SpecError) as exc:
        sweeps.load_spec("<t>", text)
    assert exc.value.field == field


def test_cli_refuses_a_bad_spec_before_anything_starts(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, tiny(grid="lr = [0.1, -1.0]"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dufm_core",
            "sweep",
            str(spec),
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "member 1 [lr=-1]: lr: must be" in out.stderr
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- local executor
@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One CLI run of a 6-member grid on the local executor: lr 0.5 converges, lr 1e4 diverges,
    and device=cuda fails on a CPU-only machine."""
    tmp = tmp_path_factory.mktemp("local")
    devices = '["cpu", "cuda"]' if not torch.cuda.is_available() else '["cpu"]'
    spec = write_spec(
        tmp, tiny(name="local", grid=f"lr = [0.5, 1e4]\ndevice = {devices}\nseed = [0]")
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dufm_core",
            "sweep",
            str(spec),
            "--executor",
            "local",
            "--jobs",
            "2",
            "--runs-dir",
            str(tmp / "runs"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {"out": out, "runs": tmp / "runs", "spec": spec, "seconds": time.perf_counter() - t0}


def test_local_sweep_prints_its_folder_last(local_sweep: dict) -> None:
    out = local_sweep["out"]
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert folder == (local_sweep["runs"] / "sweeps" / "local").resolve()
    assert (folder / "spec.toml").is_file() and (folder / "summary.csv").is_file()
    assert out.returncode == (0 if torch.cuda.is_available() else 1), out.stderr
    status = json.loads((folder / "driver.json").read_text())
    assert status["state"] == "finished" and status["executor"] == "local"
    # the CLI driver has imported the engine but run no kernel: its workers are forked from it
    # whenever each worker runs one torch thread (2 jobs on at most 3 cores)
    forked = executors.cpu_count() // 2 == 1
    assert ("forked from the driver" in status["executor_detail"]) == forked, status


def test_failed_and_diverged_members_do_not_stop_the_others(local_sweep: dict) -> None:
    rows = sweeps.read_summary(local_sweep["runs"] / "sweeps" / "local")
    states = {(r["lr"], r["device"]): r["state"] for r in rows}
    assert states[(0.5, "cpu")] == "finished"
    assert states[(1e4, "cpu")] == "diverged"
    if not torch.cuda.is_available():
        assert states[(0.5, "cuda")] == "failed" and states[(1e4, "cuda")] == "failed"
        failed = next(r for r in rows if r["device"] == "cuda")
        assert "cuda" in failed["error"].lower()
    diverged = next(r for r in rows if r["state"] == "diverged")
    assert open_run(local_sweep["runs"] / diverged["run"]).status()["state"] == "diverged"


def test_summary_columns_and_values(local_sweep: dict) -> None:
    folder = local_sweep["runs"] / "sweeps" / "local"
    header = (folder / "summary.csv").read_text().splitlines()[0].split(",")
    for col in (
        "member",
        "key",
        "lr",
        "device",
        "seed",
        "run",
        "state",
        "final_loss",
        "gamma_measured",
        "gamma_predicted",
        "outlier_l1",
        "outlier_pred_l1",
        "outlier_count_l2",
        "outlier_ratio_l1",
        "f_mean_l1",
        "nc1_l1",
        "nc2_l2",
        "nc3_l2",
        "outlier_count_max",
        "f_mean",
        "layer_sum_measured",
    ):
        assert col in header, col
    row = next(r for r in sweeps.read_summary(folder) if r["state"] == "finished")
    pred = theory.predict(3, 5, [0.01, 0.01], 0.01)
    assert row["gamma_measured"] == pytest.approx(row["gamma_predicted"], rel=1e-6)
    assert row["gamma_predicted"] == pytest.approx(pred.gamma, rel=1e-12)
    assert row["final_loss"] == pytest.approx(pred.loss, rel=1e-6)
    for l in (1, 2):
        assert row[f"outlier_l{l}"] == pytest.approx(pred.layer_outlier[l - 1], rel=1e-5)
        assert row[f"outlier_count_l{l}"] == 9
    assert row["outlier_ratio_max"] == pytest.approx(1.0, abs=1e-4)
    assert row["f_mean"] == pytest.approx(1.0, abs=1e-6)
    assert row["gamma_diag"] == pytest.approx([pred.gamma] * 3, rel=1e-6)
    # members are ordinary runs in the runs folder, each with its analysis report
    run = open_run(local_sweep["runs"] / row["run"])
    assert run.config().name.startswith("local-") and list(run.analysis_dir.glob("step_*.json"))


def test_rerun_skips_ended_members(local_sweep: dict) -> None:
    folder = local_sweep["runs"] / "sweeps" / "local"
    before = {r["key"]: r for r in sweeps.read_summary(folder)}
    spec = sweeps.load_spec(local_sweep["spec"])
    result = sweeps.run_sweep(spec, runs_dir=local_sweep["runs"], executor="local", jobs=2)
    after = {r["key"]: r for r in sweeps.read_summary(folder)}
    ended = [k for k, r in before.items() if r["state"] in ("finished", "diverged")]
    assert result.skipped == len(ended) == 2
    assert result.ran == len(before) - len(ended)
    for key in ended:  # the same run folders, untouched
        assert after[key]["run"] == before[key]["run"]
    for key in set(before) - set(ended):  # failed members were tried again in new folders
        assert after[key]["state"] == "failed" and after[key]["run"] != before[key]["run"]


# --------------------------------------------------------------------------- ray
RAY_SCENARIO_TIMEOUT_S = 300


def _ray_scenario(runs_dir: str) -> None:
    """A local Ray instance started by the caller runs a sweep (members train in Ray workers) and
    refuses members that ask for more than it has; asserts inside (run in a fresh process by
    :func:`test_ray_executor_on_a_local_instance`)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = sweeps.load_spec("<t>", tiny(name="ray", grid="lr = [0.5, 1e4]\nseed = [0, 1]"))
        result = sweeps.run_sweep(spec, runs_dir=runs_dir, executor="ray")
        assert ray.is_initialized()  # an instance the caller started is left running
        # members that ask for more than the cluster has fail at once instead of waiting
        gpus = ray.cluster_resources().get("GPU", 0.0)
        greedy = sweeps.load_spec(
            "<t>", tiny(name="greedy", grid="seed = [0, 1]") + f"[resources]\ngpus = {gpus + 1}\n"
        )
        t0 = time.perf_counter()
        refused = sweeps.run_sweep(greedy, runs_dir=runs_dir, executor="ray")
        assert time.perf_counter() - t0 < 30 and refused.counts == {"failed": 2}
        errors = {r["error"] for r in sweeps.read_summary(refused.folder)}
        assert len(errors) == 1 and "GPU" in errors.pop()
    finally:
        ray.shutdown()
    assert result.counts == {"finished": 2, "diverged": 2}
    rows = sweeps.read_summary(result.folder)
    assert {r["host"] for r in rows} and all(r["run"] for r in rows)
    pids = {sweeps.read_record(result.folder, r["key"])["pid"] for r in rows}
    assert pids.isdisjoint({__import__("os").getpid()})  # trained in Ray workers, not here
    for r in rows:
        if r["state"] == "finished":
            assert r["gamma_measured"] == pytest.approx(r["gamma_predicted"], rel=1e-6)


def test_ray_executor_on_a_local_instance(tmp_path: Path) -> None:
    """:func:`_ray_scenario` in a fresh process. On a loaded machine (other Ray instances
    starting at the same moment) ray.init has been seen to wait for ever for a raylet that never
    started; a hung attempt is killed with its process group and tried once more, so a stuck Ray
    fails this test with its output instead of holding the whole run."""
    pytest.importorskip("ray")
    hung = []
    for attempt in range(2):
        runs = tmp_path / f"runs{attempt}"
        code = f"from tests.test_sweeps import _ray_scenario; _ray_scenario({str(runs)!r})"
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            out, _ = proc.communicate(timeout=RAY_SCENARIO_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            hung.append(out[-2000:])
            continue
        assert proc.returncode == 0, out[-4000:]
        return
    pytest.fail(f"ray.init hung {len(hung)} times (> {RAY_SCENARIO_TIMEOUT_S} s); last output:\n"
                + hung[-1])


# --------------------------------------------------------------------------- background
def _wait(predicate, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_launch_in_background_cancel_and_resume(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    spec = sweeps.load_spec("<t>", tiny(name="bg", grid="seed = [0, 1, 2]", steps=2_000_000))
    folder = sweeps.launch_sweep(spec, runs, jobs=2)
    assert sweeps.driver_status(folder)["state"] in ("starting", "running")

    def two_running() -> bool:
        rows = sweeps.summary_rows(folder)
        return sum(r["state"] == "running" and (r["step"] or 0) > 0 for r in rows) == 2

    _wait(two_running)
    assert "SIGTERM" in sweeps.cancel_sweep(folder)
    _wait(lambda: sweeps.driver_status(folder)["state"] == "cancelled")
    rows = sweeps.summary_rows(folder)
    assert [r["state"] for r in rows] == ["cancelled"] * 3
    started = [r for r in rows if r["run"]]
    assert len(started) == 2  # the third never started: no run folder
    assert "before it started" in next(r for r in rows if not r["run"])["error"]
    for r in started:  # stopped by the signal mid-run, with a checkpoint there
        run = open_run(runs / r["run"])
        assert run.status()["state"] == "cancelled"
        assert run.latest_checkpoint() == run.status()["step"] > 0
    # the workers are gone with the driver
    assert "exited" in sweeps.cancel_sweep(folder) or "nothing" in sweeps.cancel_sweep(folder)
    todo, skipped = sweeps.pending_members(spec, folder)
    assert skipped == 0 and len(todo) == 3


def test_rerun_resumes_a_cancelled_member_in_its_own_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    spec = sweeps.load_spec("<t>", tiny(name="resume", grid="seed = [0]"))
    first = sweeps.run_sweep(spec, runs_dir=runs, executor="inline")
    key = spec.members()[0].key
    record = sweeps.read_record(first.folder, key)
    run = open_run(runs / record["run"])
    # make it look cancelled half-way: drop the last checkpoint, mark run and record cancelled
    run.checkpoint_path(run.latest_checkpoint()).unlink()
    run.write_status(state="cancelled", step=run.latest_checkpoint())
    record["state"] = "cancelled"
    (first.folder / "members" / f"{key}.json").write_text(json.dumps(record))
    second = sweeps.run_sweep(spec, runs_dir=runs, executor="inline")
    again = sweeps.read_record(second.folder, key)
    assert second.ran == 1 and again["resumed"] is True and again["run"] == record["run"]
    assert again["state"] == "finished" and run.status()["step"] == spec.members()[0].config.steps
    # a finished member whose analysis failed is analysed again, not retrained
    again["analysis_error"] = "RuntimeError: simulated"
    (first.folder / "members" / f"{key}.json").write_text(json.dumps(again))
    for report in run.analysis_dir.glob("step_*.json"):
        report.unlink()
    mtime = run.checkpoint_path(run.latest_checkpoint()).stat().st_mtime_ns
    third = sweeps.run_sweep(spec, runs_dir=runs, executor="inline")
    last = sweeps.read_record(third.folder, key)
    assert third.ran == 1 and last["run"] == record["run"] and last["state"] == "finished"
    assert "analysis_error" not in last and list(run.analysis_dir.glob("step_*.json"))
    assert run.checkpoint_path(run.latest_checkpoint()).stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------- benchmark
def test_bench_sweep_quick(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_sweep", "--quick", "--no-ray", "--out", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    res = json.loads(out.read_text())
    assert res["members"] == 4 and res["sequential_seconds"] > 0
    assert res["local_seconds"] > 0 and res["local_finished"] == 4


# --------------------------------------------------------------------------- executors, failures
def probe_task(task: dict) -> dict:
    """A stand-in member for the executor tests (importable, so a fresh worker can load it)."""
    action = task["action"]
    if action == "raise":
        raise ValueError("boom")
    if action == "die":
        os._exit(3)
    if action == "print":
        print("noise from a member")
    return {"index": task["index"], "pid": os.getpid()}


PROBES = ["ok", "raise", "die", "print", "ok", "ok"]


def _outcomes(ex: executors.Executor, probes: list[str]) -> dict[int, tuple]:
    """{task index: (record, error)} of running ``probes`` (actions of :func:`probe_task`)."""
    out: dict[int, tuple] = {}
    tasks = [{"index": i, "action": a} for i, a in enumerate(probes)]
    ex.run(probe_task, tasks, lambda t, rec, err: out.setdefault(t["index"], (rec, err)))
    return out


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_local_executor_isolates_failing_members(start: str, capfd: pytest.CaptureFixture) -> None:
    if start == "fork" and (why := executors.fork_blocker(1)):
        # e.g. the browser tests left threads in this process: check forking in a fresh one
        if os.environ.get("DUFM_FORK_SUBPROCESS"):
            pytest.fail(f"cannot fork even in a fresh test process: {why}")
        node = f"{__file__}::test_local_executor_isolates_failing_members[fork]"
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
            env={**os.environ, "DUFM_FORK_SUBPROCESS": "1"}, cwd=ROOT,
            capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-3000:]
        return
    # as many slots as cores: one torch thread per worker, so forking is allowed on any machine
    jobs = max(2, executors.cpu_count()) if start == "fork" else 2
    ex = executors.LocalExecutor(jobs=min(jobs, 4), start=start)
    out = _outcomes(ex, PROBES)
    assert ex.forked is (start == "fork")
    assert sorted(out) == list(range(len(PROBES)))  # every member accounted for, once
    assert out[1] == (None, "ValueError: boom")
    assert out[2][0] is None and "exit code 3" in out[2][1] and "while running" in out[2][1]
    done = [out[i][0] for i in (0, 3, 4, 5)]
    assert all(rec is not None for rec in done)  # the others ran on, a new worker took over
    pids = {rec["pid"] for rec in done}
    assert os.getpid() not in pids
    captured = capfd.readouterr()
    assert "noise from a member" not in captured.out  # a member's print goes to stderr
    assert "noise from a member" in captured.err
    if start == "fork":  # forked workers are reaped before run() returns: no zombies
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_inline_executor_isolates_a_raising_member() -> None:
    out = _outcomes(executors.InlineExecutor(), ["ok", "raise", "ok"])  # no "die": in-process
    assert out[1] == (None, "ValueError: boom")
    assert out[0][0] is not None and out[2][0] is not None


def test_fork_is_refused_while_other_threads_run() -> None:
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert "thread" in executors.fork_blocker(1)
        with pytest.raises(RuntimeError, match="cannot fork"):
            executors.LocalExecutor(jobs=2, start="fork").describe()
        assert "fresh processes" in executors.LocalExecutor(jobs=2, start="auto").describe()
    finally:
        stop.set()
        t.join()
    assert "torch threads" in executors.fork_blocker(2)
    with pytest.raises(ValueError, match="start method"):
        executors.LocalExecutor(jobs=2, start="vfork")


def test_summary_has_every_column_when_no_member_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dufm_core.training import Trainer

    def broken(self, resume: bool = False):
        raise RuntimeError("simulated training failure")

    monkeypatch.setattr(Trainer, "train", broken)
    spec = sweeps.load_spec("<t>", tiny(name="allfail", grid="lam = [0.002, 0.02]"))
    result = sweeps.run_sweep(spec, runs_dir=tmp_path / "runs", executor="inline")
    assert result.counts == {"failed": 2}
    header = (result.folder / "summary.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["member", "key", "lam"]
    for col in (
        "state",
        "final_loss",
        "gamma_measured",
        "gamma_predicted",
        "outlier_l2",
        "outlier_pred_l2",
        "outlier_count_l2",
        "outlier_ratio_l2",
        "f_mean_l2",
        "nc1_l2",
        "nc3_l2",
    ):
        assert col in header, col
    assert "full_top" not in header  # the spec did not ask for the full Hessian
    rows = sweeps.read_summary(result.folder)
    assert all("simulated training failure" in r["error"] for r in rows)


def test_an_executor_failure_marks_the_sweep_failed_and_the_cli_still_prints_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def unreachable(self, fn):
        raise ConnectionError("cluster unreachable")

    monkeypatch.setattr(executors.LocalExecutor, "_open", unreachable)
    spec = write_spec(tmp_path, tiny(name="broken"))
    code = cli.main(["sweep", str(spec), "--runs-dir", str(tmp_path / "runs"), "--jobs", "2"])
    captured = capsys.readouterr()
    folder = (tmp_path / "runs" / "sweeps" / "broken").resolve()
    assert code == 1 and captured.out.strip().splitlines()[-1] == str(folder)
    assert "cluster unreachable" in captured.err
    status = sweeps.driver_status(folder)
    assert status["state"] == "failed" and "ConnectionError" in status["error"]


def test_launch_refuses_a_running_sweep_without_touching_its_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    spec = sweeps.load_spec("<t>", tiny(name="busy"))
    folder = sweeps.prepare(spec, runs)
    (folder / sweeps.CANCEL_FILE).touch()  # a cancel in progress
    driver = subprocess.Popen(["sleep", "60"])  # stands in for the live driver process
    try:
        for state in ("starting", "running"):
            (folder / "driver.json").write_text(
                json.dumps({"state": state, "pid": driver.pid, "host": socket.gethostname()})
            )
            before = (folder / "sweep.json").read_text()
            other = sweeps.load_spec("<t>", tiny(name="busy", grid="seed = [5, 6, 7]"))
            with pytest.raises(RuntimeError, match="already running"):
                sweeps.launch_sweep(other, runs)
            assert (folder / "sweep.json").read_text() == before
            assert (folder / sweeps.CANCEL_FILE).exists()
            with pytest.raises(RuntimeError, match="already being run"):
                sweeps.run_sweep(other, runs_dir=runs, executor="inline")  # nor a second driver
    finally:
        driver.kill()
        driver.wait()


def test_a_member_cancelled_before_it_starts_is_recorded(tmp_path: Path) -> None:
    spec = sweeps.load_spec("<t>", tiny(name="late"))
    folder = sweeps.prepare(spec, tmp_path / "runs")
    (folder / sweeps.CANCEL_FILE).touch()
    m = spec.members()[0]
    task = {
        "key": m.key,
        "index": m.index,
        "values": m.values,
        "config": m.config.to_dict(),
        "runs_dir": str((tmp_path / "runs").resolve()),
        "sweep_dir": str(folder),
    }
    record = sweeps.execute_member(task)
    assert record["state"] == "cancelled" and record["run"] is None
    assert sweeps.read_record(folder, m.key)["state"] == "cancelled"
    row = next(r for r in sweeps.summary_rows(folder) if r["key"] == m.key)
    assert row["state"] == "cancelled" and "before it started" in row["error"]


# --------------------------------------------------------------------------- model kinds
RESNET20 = """
name = "rn"
[base]
model = "resnet20"
dataset = "digits"
K = 10
n = 3
width = 64
depth = 1
steps = 2
dtype = "float32"
test_fraction = 0.0
checkpoint_points = 1
[grid]
seed = [0]
"""


def test_a_resnet20_member_is_trained_as_a_resnet20(tmp_path: Path) -> None:
    """A member goes through training's model-kind dispatch: ``model = "resnet20"`` trains the
    ResNet-20 feature map and its head (the checkpoint holds the backbone), not a UFM."""
    from dufm_core.kinds import load_checkpoint
    from dufm_core.networks import RealNetwork

    spec = sweeps.load_spec("<t>", RESNET20)
    result = sweeps.run_sweep(spec, runs_dir=tmp_path / "runs", executor="inline")
    (row,) = sweeps.read_summary(result.folder)
    assert row["state"] == "finished" and row["error"] is None, row["error"]
    assert row["steps_done"] == 2 and row["final_loss"] is not None
    run = open_run(tmp_path / "runs" / row["run"])
    saved = torch.load(run.checkpoint_path(run.latest_checkpoint()), weights_only=True)
    backbone = [k for k in saved["model"] if k.startswith("backbone.")]
    assert backbone, f"no backbone tensors in the checkpoint: {sorted(saved['model'])}"
    assert isinstance(load_checkpoint(run.checkpoint_path(2)).model, RealNetwork)
    # its predictions are the UFM's at λ_H,UFM = λ_H/N (the run penalises the mean ‖h‖²)
    cfg = run.config()
    assert cfg.N == 30 and cfg.ufm_lam_h == pytest.approx(cfg.lam_h / 30)
    expected = theory.gamma(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h / cfg.N)
    assert float(row["gamma_predicted"]) == pytest.approx(expected, rel=1e-12)
    assert float(row["gamma_predicted"]) != pytest.approx(
        theory.gamma(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h), rel=1e-9
    )  # not the UFM at the run's own λ_H


# --------------------------------------------------------------------------- Ray is optional
def _hide_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Ray look uninstalled (``find_spec('ray')`` is None), as on a runtime-only install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real(n, *a)
    )


def test_without_ray_the_cli_says_how_to_install_it_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _hide_ray(monkeypatch)
    spec = write_spec(tmp_path, tiny(name="noray"))
    code = cli.main(["sweep", str(spec), "--runs-dir", str(tmp_path / "runs"), "--executor", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "ray needs Ray, which is not installed: pip install 'ray>=2.9,<3'" in err
    assert not (tmp_path / "runs" / "sweeps").exists()  # refused before anything was written
    with pytest.raises(RuntimeError, match=r"pip install 'ray>=2\.9,<3'"):
        sweeps.launch_sweep(sweeps.load_spec("<t>", tiny()), tmp_path / "runs", "ray")
    assert not (tmp_path / "runs" / "sweeps").exists()


# --------------------------------------------------------------------------- issue #12
def test_a_huge_grid_is_refused_at_once() -> None:
    """10⁸ members are counted from the axis lengths and refused before any is built."""
    axes = "\n".join(f"{k} = {list(range(1, 101))}" for k in ("seed", "n", "log_points", "steps"))
    text = f'name = "huge"\n[base]\nK = 3\n[grid]\n{axes}\n'
    t0 = time.perf_counter()
    with pytest.raises(sweeps.SpecError) as err:
        sweeps.parse_spec("huge.toml", text)
    assert time.perf_counter() - t0 < 2
    assert str(err.value) == ("grid: has 100000000 members (100 × 100 × 100 × 100), more than "
                              "the limit 10000 (sweeps.spec.MAX_MEMBERS); split the sweep")
    ok = f'name = "ok"\n[base]\nK = 3\nsteps = 10\n[grid]\nseed = {list(range(100))}\n'
    assert len(sweeps.load_spec("ok.toml", ok).members()) == 100


@pytest.mark.parametrize(("content", "words"), [
    (b"\x00\xff binary", "spec: the TOML spec is not UTF-8 text"),
    (b"name = " + b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    (b'name = "a"\n[grid]\nseed = [' + b"9" * 5000 + b"]\n", "a number has too many digits"),
    (b'name = "a"\n[grid]\nseed = [1e999]\n', "seed: must be an integer"),
    (b'name = "a"\n[grid]\nseed = [' + b"[" * 300 + b"]" * 300 + b"]\n", "seed: must be"),
    (b'name = "a"\n[grid]\nlam_over_crit = [1e999]\n', "lam_over_crit: must be a finite"),
    (b'name = "a"\n[grid]\nlam_over_crit = [' + b"9" * 400 + b"]\n", "lam_over_crit: must be"),
    (b"# comment\n" * 200_000, "larger than 1024 KiB"),
])
def test_bad_spec_files_are_one_line(content: bytes, words: str, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(content)
    with pytest.raises(sweeps.SpecError) as err:
        sweeps.load_spec(path)
    msg = str(err.value)
    assert words in msg and len(msg.splitlines()) == 1 and len(msg) < 400, msg
