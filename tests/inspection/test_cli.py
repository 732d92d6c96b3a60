"""``python -m dufm_core inspect``: the report's path last, one-line refusals with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core.cli import main

K2 = 100  # K² for the digits' K = 10


def test_inspect_writes_the_report_and_prints_its_path(tmp_path: Path, mlp, data_npz, capsys
                                                       ) -> None:
    torch.save(mlp.state_dict(), tmp_path / "m.pt")
    out = tmp_path / "rep.json"
    rc = main(["inspect", str(tmp_path / "m.pt"), "--arch", "mlp:64-12-10-10", "--data",
               str(data_npz), "--loss", "mse", "--lam-w", "1e-3", "--full", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0 and cap.out.strip().splitlines()[-1] == str(out)
    rep = json.loads(out.read_text())
    assert len(rep["layers"]) == 1 and rep["layers"][0]["shape"] == [10, 10]
    assert set(rep["accuracy"]) == {"train", "test"} and rep["collapse"]["test"]
    assert {"singular_values", "bulk_edge", "spikes"} <= set(rep["layers"][0]["weights_esd"])
    assert rep["inspection"]["architecture"] == "mlp:64-12-10-10"
    # --full: the whole network's top spectrum (every weight and bias of the MLP)
    assert rep["full_hessian"]["params"] == "all"
    assert rep["full_hessian"]["dim"] == sum(p.numel() for p in mlp.parameters())
    assert len(rep["full_hessian"]["top"]) == K2 + 10


def test_inspect_full_on_two_workers_equals_one_process(tmp_path: Path, mlp, data_npz,
                                                        capsys) -> None:
    """``inspect --full --workers 2``: the whole-network products over two data shards
    (curvature/sharded.py) give the one-process report's top values; without --full the
    option is refused in one line."""
    torch.save(mlp.state_dict(), tmp_path / "m.pt")
    base = ["inspect", str(tmp_path / "m.pt"), "--arch", "mlp:64-12-10-10", "--data",
            str(data_npz), "--loss", "mse", "--lam-w", "1e-3"]
    tops = []
    for extra, out in ((["--full"], "one.json"), (["--full", "--workers", "2"], "two.json")):
        assert main([*base, *extra, "--out", str(tmp_path / out)]) == 0
        tops.append(json.loads((tmp_path / out).read_text())["full_hessian"])
    capsys.readouterr()
    assert "2 workers (local processes" in tops[1]["method"]
    np.testing.assert_allclose(tops[1]["top"][:K2], tops[0]["top"][:K2], rtol=1e-6)
    assert main([*base, "--workers", "2", "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "workers: data-parallel products are for the whole-network" in err
    assert len(err.splitlines()) == 1


def test_benchmark_quick_mode_runs(tmp_path: Path) -> None:
    from benchmarks.bench_inspect import main as bench

    out = tmp_path / "b.json"
    assert bench(["--quick", "--cases", "resnet20-digits", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["case"] == "resnet20-digits" and row["total_s"] > 0


@pytest.mark.parametrize(("argv", "needle"), [
    (["--arch", "vgg"], "unknown architecture 'vgg'"),
    (["--arch", "mlp:64-12-10-10", "--head", "4"], "head: must be in 1..3"),
    (["--arch", "mlp:64-12-10-10", "--lam-w", "1,2"], "lam-w: give one value or one per head"),
    (["--arch", "mlp:64-12-10-10", "--data", "LABELS"], "y must be in 0..9"),
    (["--arch", "mlp:64-12-10-10", "--data", "SHAPE"], "cannot take inputs of shape [5]"),
])
def test_inspect_refusals_are_one_line(tmp_path: Path, mlp, data_npz, capsys, argv: list,
                                       needle: str) -> None:
    torch.save(mlp.state_dict(), tmp_path / "m.pt")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 64)), y=np.array([0, 1, 12]))
    np.savez(tmp_path / "shape.npz", x=np.zeros((3, 5)), y=np.array([0, 1, 2]))
    argv = [str(bad) if a == "LABELS" else str(tmp_path / "shape.npz") if a == "SHAPE" else a
            for a in argv]
    if "--data" not in argv:
        argv += ["--data", str(data_npz)]
    rc = main(["inspect", str(tmp_path / "m.pt"), *argv, "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and needle in err[-1] and err[-1].startswith("error: ")
    assert not (tmp_path / "r.json").exists()
