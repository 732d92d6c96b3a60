"""Real-network training (dufm_core.training.real): digits end to end through the CLI, the run
store and checkpoint contract, resume equality with mini-batches, cancel, divergence, and every
new validation rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dufm_core.cli import main
from dufm_core.config import RunConfig
from dufm_core.kinds import load_checkpoint, resume, train
from dufm_core.networks import RealNetwork
from dufm_core.runtime import cpu_threads
from dufm_core.store import create_run, open_run
from dufm_core.training.real import batch_indices, lr_at, steps_per_epoch

UFM_KEYS = {"step", "loss", "fit", "reg", "grad_norm", "nc1", "nc2", "nc3", "sv"}


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """These tiny networks run fastest on one thread, and on a shared 2-core machine a
    two-thread OpenMP team stalls whenever the other core is busy (see dufm_core/runtime.py)."""
    with cpu_threads(1):
        yield


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _cfg(**kw) -> RunConfig:
    base = {"model": "resnet20", "dataset": "digits", "n": 5, "steps": 4}
    base.update(kw)
    cfg = RunConfig.from_dict(base)
    cfg.validate()
    return cfg


def test_digits_end_to_end_through_the_cli(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dufm_core",
            "train",
            "--model",
            "resnet20",
            "--dataset",
            "digits",
            "--n",
            "10",
            "--steps",
            "3",
            "--runs-dir",
            str(runs),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=180,
        check=True,
    )
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == runs
    run = open_run(run_dir)
    cfg = run.config()
    assert (cfg.model, cfg.dataset, cfg.K, cfg.width, cfg.depth, cfg.dtype) == (
        "resnet20",
        "digits",
        10,
        64,
        3,
        "float32",
    )
    status = run.status()
    assert status["state"] == "finished" and status["step"] == 3 and status["total_steps"] == 3
    assert status["steps_per_epoch"] == 1 and status["n_train"] == 100
    rows = run.metrics()
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        assert UFM_KEYS | {"train_acc", "test_acc", "batch_loss", "lr", "epoch"} <= set(r)
        assert len(r["nc1"]) == 4 and len(r["nc2"]) == 4  # h(x), H_2, H_3, logits
        assert len(r["nc3"]) == 3 and [len(s) for s in r["sv"]] == [11, 11, 10]
        assert 0.0 <= r["train_acc"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert r["loss"] == pytest.approx(r["fit"] + r["reg"])
    assert rows[-1]["batch_loss"] < rows[0]["batch_loss"]
    # the checkpoint contract: weights_only loading, model rebuilt from its config
    assert run.checkpoints()[-1] == 3
    raw = torch.load(run.checkpoint_path(3), weights_only=True)
    assert set(raw) >= {"format_version", "config", "step", "model", "optimizer"}
    assert "backbone.stages.2.2.bn2.running_var" in raw["model"]
    ck = load_checkpoint(run.checkpoint_path(3))
    assert isinstance(ck.model, RealNetwork) and ck.step == 3
    assert torch.equal(ck.labels, torch.arange(10).repeat_interleave(10))
    for k, v in ck.model.state_dict().items():
        assert torch.equal(v, raw["model"][k]), k
    ck.model.eval()
    assert ck.model(torch.zeros(2, 1, 8, 8, dtype=torch.float32)).shape == (2, 10)
    # and the analysis report on the head layers (tests/test_network_report.py checks it)
    assert main(["analyze", str(run_dir)]) == 0
    assert (run_dir / "analysis" / "step_00000003.json").is_file()


def test_resume_reproduces_uninterrupted_minibatch_run(runs_dir: Path) -> None:
    kw = {
        "batch_size": 20,
        "lam_backbone": 1e-3,
        "lr_schedule": "constant",
        "checkpoint_points": 2,
        "log_points": 2,
        "test_fraction": 0,
    }
    full = train(_cfg(steps=7, **kw), runs_dir=runs_dir, progress=None)
    part = train(_cfg(steps=4, **kw), runs_dir=runs_dir, progress=None)
    assert full.state == part.state == "finished"
    resumed = resume(part.run.path, steps=7, progress=None)
    assert resumed.state == "finished" and resumed.step == 7
    a = load_checkpoint(full.run.checkpoint_path(7))
    b = load_checkpoint(resumed.run.checkpoint_path(7))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    for k in sa:  # parameters and BatchNorm buffers
        assert torch.equal(sa[k], sb[k]), k
    for x, y in zip(a.optimizer["buf"], b.optimizer["buf"], strict=True):
        assert torch.equal(x, y)
    ra, rb = open_run(full.run.path).metrics(), open_run(resumed.run.path).metrics()
    assert [r["step"] for r in ra] == [0, 1, 7]
    assert [r["step"] for r in rb] == [0, 1, 4, 7]  # 4 was the end of the first part
    assert ra[-1]["loss"] == rb[-1]["loss"] and ra[-1]["batch_loss"] == rb[-1]["batch_loss"]
    assert rb[-1]["test_acc"] is None  # test_fraction 0: no held-out set
    assert rb[-1]["epoch"] == pytest.approx(7 / 3)  # N = 50, batches of 20: 3 steps an epoch


def test_batch_order_and_lr_schedules() -> None:
    assert steps_per_epoch(50, 0) == 1 and steps_per_epoch(50, 20) == 3
    assert batch_indices(50, 0, 0, 5) is None and batch_indices(50, 80, 0, 5) is None
    epoch0 = torch.cat([batch_indices(50, 20, 7, s) for s in range(3)])
    assert sorted(epoch0.tolist()) == list(range(50))  # each epoch is a permutation
    epoch1 = torch.cat([batch_indices(50, 20, 7, s) for s in range(3, 6)])
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(batch_indices(50, 20, 7, 4), batch_indices(50, 20, 7, 4))
    assert not torch.equal(batch_indices(50, 20, 8, 0), batch_indices(50, 20, 7, 0))
    cfg = _cfg(steps=100, lr=0.1)
    assert lr_at(cfg, 0) == lr_at(cfg, 99) == 0.1
    cfg.lr_schedule = "cosine"
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 50) == pytest.approx(0.05)
    cfg.lr_schedule = "step"
    assert [lr_at(cfg, s) for s in (49, 50, 74, 75)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_divergence_is_reported(runs_dir: Path) -> None:
    res = train(_cfg(lr=1e4, steps=30), runs_dir=runs_dir, progress=None)
    assert res.state == "diverged"
    status = open_run(res.run.path).status()
    assert status["state"] == "diverged" and "--lr" in status["error"]
    for line in (res.run.path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_sigterm_checkpoints_and_cancels(runs_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dufm_core",
            "train",
            "--model",
            "resnet20",
            "--n",
            "3",
            "--steps",
            "1000000",
            "--schedule",
            "linear",
            "--log-points",
            "100000",
            "--checkpoint-points",
            "10",
            "--runs-dir",
            str(runs_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    deadline, run_dir = time.time() + 90, None
    while time.time() < deadline and run_dir is None:
        for p in runs_dir.glob("*/status.json") if runs_dir.exists() else []:
            st = json.loads(p.read_text())
            if st.get("state") == "running" and st.get("step", 0) > 0:
                run_dir = p.parent
        time.sleep(0.05)
    if run_dir is None:
        proc.kill()
        pytest.fail("worker did not start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1 and out.strip().splitlines()[-1] == str(run_dir)
    run = open_run(run_dir)
    status = run.status()
    assert status["state"] == "cancelled" and "SIGTERM" in status["error"]
    last = run.latest_checkpoint()
    assert last == status["step"] > 0
    res = resume(run_dir, steps=last + 2, progress=None)
    assert res.state == "finished" and res.step == last + 2


def test_model_defaults_and_ufm_unchanged(capsys: pytest.CaptureFixture) -> None:
    assert RunConfig.from_dict({}) == RunConfig()
    ufm = RunConfig()
    ufm.validate()
    assert (ufm.K, ufm.width, ufm.dtype, ufm.optimizer, ufm.lr) == (3, 60, "float64", "gd", 0.2)
    assert main(["train", "--model", "resnet20", "--dry-run"]) == 0
    data = json.loads(capsys.readouterr().out)["config"]
    assert (data["K"], data["width"], data["depth"], data["dtype"], data["optimizer"]) == (
        10,
        64,
        3,
        "float32",
        "momentum",
    )
    assert (data["lam_w"], data["lam_h"], data["batch_size"], data["amp"]) == (5e-3, 1e-6, 0, False)
    assert (
        main(
            [
                "train",
                "--model",
                "resnet20",
                "--dtype",
                "float64",
                "--width",
                "64,32,32",
                "--batch-size",
                "128",
                "--lr-schedule",
                "cosine",
                "--amp",
                "false",
                "--lam-backbone",
                "1e-4",
                "--data-dir",
                "/x",
                "--dataset",
                "cifar10",
                "--dry-run",
            ]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)["config"]
    assert (data["dtype"], data["width"], data["batch_size"], data["lr_schedule"]) == (
        "float64",
        [64, 32, 32],
        128,
        "cosine",
    )
    assert (data["lam_backbone"], data["data_dir"], data["dataset"]) == (1e-4, "/x", "cifar10")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--model", "resnet20", "--K", "3"], "K"),
        (["--model", "resnet20", "--width", "32"], "width"),
        (["--model", "resnet20", "--dataset", "imagenet"], "dataset"),
        (["--model", "resnet20", "--dataset", "mnist"], "data_dir"),
        (["--model", "resnet20", "--dataset", "cifar10", "--data-dir", "{tmp}/none"], "data_dir"),
        (["--model", "resnet20", "--dataset", "mnist", "--data-dir", "{tmp}"], "data_dir"),
        (["--model", "resnet20", "--n", "500"], "n"),
        (["--model", "resnet20", "--amp", "true", "--device", "cpu"], "amp"),
        (["--model", "resnet20", "--amp", "maybe"], "amp"),
        (["--model", "resnet20", "--amp", "1", "--dtype", "float64", "--device", "cuda"], "amp"),
        (["--model", "resnet20", "--lr-schedule", "linear"], "lr_schedule"),
        (["--model", "resnet20", "--batch-size", "-1"], "batch_size"),
        (["--model", "resnet20", "--test-fraction", "0.95"], "test_fraction"),
        (["--model", "resnet20", "--lam-backbone", "-1"], "lam_backbone"),
        (["--model", "resnet20", "--init", "optimum"], "init"),
        (["--batch-size", "10"], "batch_size"),
        (["--lr-schedule", "cosine"], "lr_schedule"),
        (["--dataset", "mnist"], "dataset"),
        (["--amp", "true"], "amp"),
    ],
)
def test_every_real_network_validation_rule(
    args, field, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(["train", *args, "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {field}: "), err[0]
    assert "must" in err[0] or "needs" in err[0] or "not found" in err[0], err[0]
    assert not runs.exists()  # refused before any run folder is made


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_amp_on_auto_device_without_gpu_is_refused(tmp_path: Path, capsys) -> None:
    assert (
        main(["train", "--model", "resnet20", "--amp", "true", "--runs-dir", str(tmp_path / "r")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: amp: needs a CUDA GPU") and not (tmp_path / "r").exists()


def test_worker_with_bad_data_folder_fails_cleanly(tmp_path: Path, capsys) -> None:
    cfg = _cfg(dataset="mnist", data_dir=str(tmp_path / "missing"))
    run = create_run(cfg, tmp_path / "runs")
    assert main(["train", "--run-dir", str(run.path)]) == 2
    assert "data_dir:" in capsys.readouterr().err
    status = run.status()
    assert status["state"] == "failed" and "train-images-idx3-ubyte" in status["error"]
