"""Training: fast gradients vs autograd, closed-form convergence, resume, cancel, divergence."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dufm_core import theory
from dufm_core.config import RunConfig
from dufm_core.kinds import load_checkpoint, resume, train
from dufm_core.models import build_model, fit_term
from dufm_core.store import open_run
from dufm_core.training import schedule
from dufm_core.training.ufm import GradientFn


def _cfg(**kw) -> RunConfig:
    base = {
        "K": 3,
        "n": 5,
        "width": 6,
        "depth": 3,
        "lam_w": 0.01,
        "lam_h": 0.01,
        "lr": 0.2,
        "steps": 200,
        "log_points": 20,
        "checkpoint_points": 4,
    }
    base.update(kw)
    cfg = RunConfig(**base)
    cfg.validate()
    return cfg


@pytest.mark.parametrize(
    "kw",
    [
        {"depth": 1, "width": 4},
        {"depth": 3, "width": [6, 7, 5], "lam_w": [0.01, 0.02, 0.03], "lam_h": 0.04},
        {"depth": 5, "width": 9, "K": 4, "n": 2},
    ],
)
def test_fast_linear_mse_gradient_matches_autograd(kw) -> None:
    cfg = _cfg(**kw)
    model = build_model(cfg)
    fast, fit, reg = GradientFn(model, cfg)(want_loss=True)
    total = fit_term(model(), model.labels, "mse") + model.reg_term(cfg.lam_ws, cfg.lam_h)
    ref = torch.autograd.grad(total, list(model.parameters()))
    for a, b in zip(fast, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    assert fit + reg == pytest.approx(float(total), rel=1e-13)


def test_schedule_is_log_spaced_with_ends() -> None:
    s = schedule(10_000, 40, "log")
    assert s[0] == 0 and s[-1] == 10_000
    assert {1, 2, 3} <= set(s)  # early dynamics are captured
    assert s == sorted(set(s))
    lin = schedule(100, 10, "linear")
    assert lin == list(range(0, 101, 10))


def test_case_a_converges_to_closed_form(runs_dir: Path) -> None:
    """Theory.md case A (K=3, n=40, d=60, L=5, λ=0.01), GD lr 0.2 from N(0, 1/d), float64."""
    cfg = RunConfig(steps=10_000, log_points=60, checkpoint_points=3)
    result = train(cfg, runs_dir=runs_dir, progress=None)
    assert result.state == "finished"
    pred = theory.predict(3, 40, [0.01] * 5, 0.01)
    last = open_run(result.run.path).metrics()[-1]
    assert last["step"] == 10_000
    assert last["loss"] == pytest.approx(pred.loss, rel=1e-6)
    assert last["fit"] == pytest.approx(pred.fit, rel=1e-6)
    assert last["gamma_measured"] == pytest.approx(pred.gamma, rel=1e-6)
    assert [len(sv) for sv in last["sv"]] == [4, 4, 4, 4, 3]  # top K+1 (W_L has only K)
    for sv, sig in zip(last["sv"], pred.sigma, strict=True):
        assert sv[:3] == pytest.approx([sig] * 3, rel=1e-6)
        assert all(x < 1e-6 * sig for x in sv[3:])
    assert max(last["nc1"]) < 1e-10
    assert max(last["nc2"]) < 1e-6
    assert max(last["nc3"]) < 1e-10
    # the checkpoint at the final step holds the same model
    ck = load_checkpoint(result.run.checkpoint_path(10_000))
    loss = fit_term(ck.model(), ck.labels, "mse") + ck.model.reg_term(cfg.lam_ws, cfg.lam_h)
    assert float(loss) == pytest.approx(pred.loss, rel=1e-6)
    status = open_run(result.run.path).status()
    assert status["state"] == "finished" and status["step"] == 10_000


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"optimizer": "momentum", "lr": 0.05},
        {"optimizer": "adam", "lr": 0.01},
        {"activation": "relu"},
        {"loss": "ce", "lr": 0.5},
    ],
)
def test_resume_reproduces_uninterrupted_run(runs_dir: Path, kw) -> None:
    full = train(_cfg(steps=200, **kw), runs_dir=runs_dir, progress=None)
    part = train(_cfg(steps=90, **kw), runs_dir=runs_dir, progress=None)
    resumed = resume(part.run.path, steps=200, progress=None)
    assert resumed.state == "finished" and resumed.step == 200
    a = load_checkpoint(full.run.checkpoint_path(200))
    b = load_checkpoint(resumed.run.checkpoint_path(200))
    for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(x, y)
    steps = [r["step"] for r in open_run(resumed.run.path).metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 200
    assert open_run(resumed.run.path).config().steps == 200


def test_resume_refuses_fewer_steps_than_checkpoint(runs_dir: Path) -> None:
    res = train(_cfg(steps=50), runs_dir=runs_dir, progress=None)
    with pytest.raises(ValueError, match="steps"):
        resume(res.run.path, steps=10, progress=None)


def test_divergence_is_reported(runs_dir: Path) -> None:
    res = train(_cfg(lr=50.0, steps=500), runs_dir=runs_dir, progress=None)
    assert res.state == "diverged"
    status = open_run(res.run.path).status()
    assert status["state"] == "diverged"
    assert "--lr" in status["error"] and "step" in status["error"]
    # every logged line is strict JSON (non-finite values become null)
    for line in (res.run.path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_relu_and_ce_training_decrease_loss(runs_dir: Path) -> None:
    for kw in (
        {"activation": "relu"},
        {"loss": "ce", "lr": 0.5},
        {"optimizer": "adam", "lr": 0.01},
    ):
        res = train(_cfg(steps=300, **kw), runs_dir=runs_dir, progress=None)
        rows = open_run(res.run.path).metrics()
        assert res.state == "finished"
        assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
        assert len(rows[-1]["nc1"]) == 4 and len(rows[-1]["nc3"]) == 3 and len(rows[-1]["sv"]) == 3


def _start_worker(runs_dir: Path, steps: int) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dufm_core",
            "train",
            "--K",
            "3",
            "--n",
            "5",
            "--width",
            "6",
            "--depth",
            "3",
            "--steps",
            str(steps),
            "--schedule",
            "linear",
            "--log-points",
            "2000",
            "--checkpoint-points",
            "1000",
            "--runs-dir",
            str(runs_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        runs = list(runs_dir.glob("*/status.json")) if runs_dir.exists() else []
        if runs:
            status = json.loads(runs[0].read_text())
            if status.get("state") == "running" and status.get("step", 0) > 0:
                return proc, runs[0].parent
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("worker did not start")


def test_sigterm_checkpoints_and_cancels(runs_dir: Path) -> None:
    proc, run_dir = _start_worker(runs_dir, 10_000_000)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out.strip().splitlines()[-1] == str(run_dir)
    run = open_run(run_dir)
    status = run.status()
    assert status["state"] == "cancelled" and "SIGTERM" in status["error"]
    last = run.latest_checkpoint()
    assert last == status["step"] > 0
    res = resume(run_dir, steps=last + 50, progress=None)
    assert res.state == "finished" and res.step == last + 50


def test_killed_worker_leaves_readable_folder(runs_dir: Path) -> None:
    proc, run_dir = _start_worker(runs_dir, 10_000_000)
    time.sleep(0.3)
    proc.kill()
    proc.communicate(timeout=30)
    run = open_run(run_dir)
    assert run.status()["state"] == "interrupted"
    rows = run.metrics()
    assert rows and rows[0]["step"] == 0
    step = run.latest_checkpoint()
    assert step is not None
    load_checkpoint(run.checkpoint_path(step))
    res = resume(run_dir, steps=step + 20, progress=None)
    assert res.state == "finished"
