"""The CLI (docs/design.md §4): train, theory, runs, and every validation rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dufm_core.cli import main

SMALL = ["--K", "3", "--n", "4", "--width", "5", "--depth", "2", "--steps", "20"]


def test_train_prints_run_folder_last(tmp_path: Path) -> None:
    runs = tmp_path / "r"
    out = subprocess.run(
        [sys.executable, "-m", "dufm_core", "train", *SMALL, "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    run_dir = Path(out.stdout.strip().splitlines()[-1])
    assert run_dir.parent == runs and (run_dir / "status.json").is_file()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    table = subprocess.run(
        [sys.executable, "-m", "dufm_core", "runs", "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert run_dir.name in table and "finished" in table


def test_config_file_and_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("K = 4\nn = 3\nwidth = [6, 5]\ndepth = 2\nlam = 0.003\n")
    assert main(["train", "--config", str(cfg), "--lam-h", "0.02", "--dry-run"]) == 0
    data = json.loads(capsys.readouterr().out)["config"]
    assert data["K"] == 4 and data["width"] == [6, 5]
    assert data["lam_w"] == 0.003 and data["lam_h"] == 0.02
    assert (
        main(["train", "--lam", "0.05", "--lam-w", "0.01,0.02", "--depth", "2", "--dry-run"]) == 0
    )
    data = json.loads(capsys.readouterr().out)["config"]
    assert data["lam_w"] == [0.01, 0.02] and data["lam_h"] == 0.05


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--K", "1"], "K"),
        (["--K", "three"], "K"),
        (["--n", "0"], "n"),
        (["--width", "0"], "width"),
        (["--width", "4,5"], "width"),  # depth 5 needs 5 values
        (["--depth", "0"], "depth"),
        (["--depth", "2.5"], "depth"),
        (["--activation", "tanh"], "activation"),
        (["--loss", "hinge"], "loss"),
        (["--lam", "-1"], "lam_w"),
        (["--lam-h", "nan"], "lam_h"),
        (["--lam-w", "0.1,0.2"], "lam_w"),
        (["--optimizer", "lbfgs"], "optimizer"),
        (["--lr", "0"], "lr"),
        (["--lr", "inf"], "lr"),
        (["--momentum", "1"], "momentum"),
        (["--betas", "0.9"], "betas"),
        (["--steps", "0"], "steps"),
        (["--schedule", "cosine"], "schedule"),
        (["--log-points", "1"], "log_points"),
        (["--checkpoint-points", "0"], "checkpoint_points"),
        (["--seed", "-3"], "seed"),
        (["--dtype", "float16"], "dtype"),
        (["--device", "tpu"], "device"),
        (["--init", "zeros"], "init"),
        (["--init-scale", "0"], "init_scale"),
        (["--init-noise", "-1"], "init_noise"),
        (["--init", "optimum", "--width", "2"], "init"),
        (["--model", "vgg"], "model"),
    ],
)
def test_every_validation_rule(args, field, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    code = main(["train", *args, "--runs-dir", str(runs)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"error: {field}: "), err[0]
    assert "must" in err[0] or "needs" in err[0], err[0]
    assert not runs.exists()  # refused before any run folder is made


def test_unknown_config_key_in_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text('{"K": 3, "widht": 5}')
    assert main(["train", "--config", str(cfg), "--runs-dir", str(tmp_path / "r")]) == 2
    assert "widht: unknown config key" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "config: file not found" in capsys.readouterr().err


def test_theory_warnings_are_not_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--width", "2", "--dry-run"]) == 0
    assert "width 2 < K = 3" in capsys.readouterr().err
    assert main(["train", "--lam", "0.05", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "above the critical value" in err and "λ_crit = 0.0310665" in err


def test_cuda_without_gpu_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", *SMALL, "--device", "cuda", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_theory_json(capsys: pytest.CaptureFixture) -> None:
    assert main(["theory", "--K", "3", "--n", "40", "--depth", "5", "--lam", "0.01"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("gamma", "lambda_crit", "nontrivial", "loss", "layer_outlier", "full_outliers"):
        assert key in out
    assert out["gamma"] == pytest.approx(0.9422774667, rel=1e-9)
    assert out["layer_outlier"] == pytest.approx([0.1632425698] * 5, rel=1e-9)
    assert len(out["full_outliers"]) == 9
    assert (
        main(
            [
                "theory",
                "--K",
                "3",
                "--n",
                "4",
                "--depth",
                "3",
                "--lam-w",
                "0.01,0.02,0.005",
                "--lam-h",
                "0.01",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["gamma"] == pytest.approx(0.9566223530, rel=1e-9)
    assert main(["theory", "--K", "3", "--n", "4", "--depth", "3", "--lam", "-1"]) == 2
    assert main(["theory", "--K", "3", "--n", "4", "--depth", "2", "--lam-w", "0.1"]) == 2
    assert "lam" in capsys.readouterr().err


def test_resume_takes_only_steps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "--resume takes only --steps" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_resume_can_move_a_run_to_another_device(tmp_path: Path, capsys) -> None:
    """A run trained on a GPU continues on the CPU with ``--resume RUN --device cpu``: the
    device is the one config key a resume may change (it is recorded in config.json)."""
    runs = tmp_path / "runs"
    assert main(["train", "--runs-dir", str(runs), "--steps", "10", "--K", "2", "--n", "2",
                 "--width", "3", "--depth", "2", "--device", "cpu"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    cfg_path = Path(run_dir) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["device"] = "cuda"  # as if trained on a GPU machine
    cfg_path.write_text(json.dumps(cfg))
    assert main(["train", "--resume", run_dir, "--steps", "20", "--device", "cpu"]) == 0
    assert json.loads(cfg_path.read_text())["device"] == "cpu"
    assert json.loads((Path(run_dir) / "status.json").read_text())["step"] == 20
    assert main(["train", "--resume", run_dir, "--device", "tpu"]) == 2
    assert "device" in capsys.readouterr().err


def test_steps_take_the_same_number_forms_for_train_and_resume(tmp_path: Path, capsys) -> None:
    """``--steps 1e3`` is 1000 steps for a new run and for ``--resume`` alike (issue #12)."""
    runs = tmp_path / "runs"
    assert main(["train", *SMALL[:-2], "--steps", "1e1", "--runs-dir", str(runs)]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads((Path(run_dir) / "config.json").read_text())["steps"] == 10
    assert main(["train", "--resume", run_dir, "--steps", "2e1"]) == 0
    assert json.loads((Path(run_dir) / "status.json").read_text())["step"] == 20
    capsys.readouterr()
    for bad in ("2.55e1", "lots", "9" * 5000, "1e999"):
        assert main(["train", "--resume", run_dir, "--steps", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: steps: must be an integer in"), err


def test_integers_are_checked_as_integers(capsys) -> None:
    """A seed near 2**63 is exact (it used to go through float and be refused)."""
    top = str(2**63 - 1)
    assert main(["train", "--seed", top, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["seed"] == 2**63 - 1
    assert main(["train", "--seed", str(2**63), "--dry-run"]) == 2
    assert "seed: must be an integer in [0, 9223372036854775807]" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["--K", "1e3x"], ["--K", "9" * 5000], ["--n", "0"], ["--depth", "65"], ["--lam", "[]"],
    ["--lam-w", "0.1,nan", "--lam-h", "0.1", "--depth", "2"], ["--tau", "inf"],
])
def test_theory_options_are_one_line_errors(args: list[str], capsys) -> None:
    base = {"--K": "3", "--n": "4", "--depth": "3", "--lam": "0.01"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    if "--lam-w" in base:
        base.pop("--lam")
    argv = ["theory", *[x for kv in base.items() for x in kv]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 300, err


@pytest.mark.parametrize(("content", "words"), [
    (b"\xff\xfe\x00binary", "is not UTF-8 text"),
    (b"[1, 2, 3]", "must hold a table/object of keys (got list)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"K": ' + b"9" * 5000 + b"}", "a number has too many digits"),
    (b'{"K": 1e999}', "K: must be an integer in [2, 10000] (got inf)"),
    (b'{"K": ' + b"[" * 500 + b"]" * 500 + b"}", "K: must be an integer in [2, 10000]"),
    (b'{"K": 3,', "cannot parse"),
])
def test_bad_config_files_are_one_line(content: bytes, words: str, tmp_path: Path,
                                       capsys) -> None:
    for suffix in (".json", ".toml") if content.startswith(b"\xff") else (".json",):
        path = tmp_path / f"c{suffix}"
        path.write_bytes(content)
        assert main(["train", "--config", str(path), "--runs-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and len(err[0]) < 400, err
        assert not (tmp_path / "r").exists()


def test_runs_refuses_a_file_as_runs_folder(tmp_path: Path, capsys) -> None:
    f = tmp_path / "not_a_folder"
    f.write_text("x")
    assert main(["runs", "--runs-dir", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a runs folder" in err[0]
    assert main(["runs", "--runs-dir", str(tmp_path / "missing")]) == 0  # empty: no runs yet
