"""Data-parallel Hessian products (curvature/sharded.py): W workers over data shards give the
same operator as one process over the whole set, to rounding; the eigensolver runs on it
unchanged; bad options and failing workers are one line."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dufm_core.cli import main
from dufm_core.config import RunConfig
from dufm_core.curvature import top_eigenpairs
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.curvature.sharded import (
    DataParallel,
    ShardedHessianOperator,
    ShardError,
    data_parallel,
    shard_bounds,
)
from dufm_core.network_report import network_full
from tests.curvature.test_network import _tiny

F64 = torch.float64


def test_shard_bounds_cover_the_set_evenly() -> None:
    for n, w in [(10, 3), (9, 3), (7, 7), (1000, 16)]:
        b = shard_bounds(n, w)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(w - 1))
        sizes = [hi - lo for lo, hi in b]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_local_workers_equal_one_process() -> None:
    """One operator, started once: 3 workers over N = 14 (shards of 5, 5, 4), cross-entropy,
    every parameter; products and the eigensolver on top against one process."""
    model, x, y = _tiny(K=2, n=7)
    one = NetworkHessianOperator(model, x, y, "ce", "all", batch_size=4)
    V = torch.randn(one.dim, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    ref = one.matmat(V)
    with ShardedHessianOperator(model, x, y, "ce", "all", workers=3, threads=1,
                                batch_size=4) as op:
        assert op.dim == one.dim
        assert op.weights == [5 / 14, 5 / 14, 4 / 14]
        got = op.matmat(V)
        assert torch.allclose(got, ref, rtol=1e-11, atol=1e-12 * ref.abs().max())
        a = top_eigenpairs(op, 4, block=4, tol=1e-10)
        b = top_eigenpairs(one, 4, block=4, tol=1e-10)
        assert torch.allclose(a.values, b.values, rtol=1e-8)
        assert op.matvecs == a.matvecs + 3
        assert "3 workers (local processes, 1 threads each), shards of 4 or 5" in op.describe()
    with pytest.raises(ShardError, match="closed"):
        op.matmat(V)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"workers": 0}, "workers: must be an integer in 1..12"),
        ({"workers": 13}, "workers: must be an integer in 1..12"),
        ({"workers": 2.0}, "workers: must be an integer"),
        ({"executor": "mpi"}, "executor: must be one of local | ray"),
        ({"address": "10.0.0.1:6379"}, "address: only for the ray executor"),
        ({"gpus": 1.0}, "gpus: a GPU per worker is for the ray executor"),
        ({"params": "conv"}, "params must be one of head | all"),
        ({"loss": "hinge"}, r"loss must be mse \| ce"),
    ],
)
def test_bad_options_are_one_line_before_any_worker_starts(kwargs: dict, match: str) -> None:
    model, x, y = _tiny(K=3, n=4)
    with pytest.raises(ValueError, match=match):
        ShardedHessianOperator(model, x, y, **kwargs)


def test_a_worker_that_dies_is_one_line_not_a_hang() -> None:
    """MSE, head parameters: a product first (against one process), then a killed worker."""
    model, x, y = _tiny(K=3, n=4)
    op = ShardedHessianOperator(model, x, y, "mse", "head", workers=2, threads=1)
    try:
        V = torch.randn(op.dim, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
        ref = NetworkHessianOperator(model, x, y, "mse", "head").matmat(V)
        assert torch.allclose(op.matmat(V), ref, rtol=1e-11, atol=1e-13)
        op._pool.procs[1].kill()
        op._pool.procs[1].join(timeout=10)
        with pytest.raises(ShardError, match="worker 1 exited"):
            op.matmat(torch.zeros(op.dim, 1, dtype=F64))
    finally:
        op.close()
    assert op._pool is None


def test_the_report_path_shards_inside_a_data_parallel_block() -> None:
    """network_full (the report's whole-network block) is unchanged code: inside
    data_parallel(2 workers) it gets the sharded operator and the same top values."""
    model, x, y = _tiny(K=2, n=3)
    cfg = RunConfig(K=2, n=3, width=[4, 5], depth=2, loss="mse")
    data = SimpleNamespace(x_train=x, y_train=y)
    one = network_full(model, cfg, data, tol=1e-9)
    with data_parallel(DataParallel(workers=2, threads=1)):
        two = network_full(model, cfg, data, tol=1e-9)
    assert "2 workers (local processes" in two["method"]
    assert "workers" not in one["method"]
    assert two["converged"]
    assert torch.allclose(torch.tensor(two["top"]), torch.tensor(one["top"]), rtol=1e-9)


def test_cli_refuses_workers_where_they_do_not_apply(tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "--runs-dir", str(runs), "--steps", "10", "--K", "2", "--n", "2",
                 "--width", "3", "--depth", "2"]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    for argv, message in [
        (["--workers", "2"], "workers: data-parallel products are for the whole-network"),
        (["--workers", "0"], "workers: must be an integer in 1..256"),
        (["--address", "1.2.3.4:6379"], "address: only for --executor ray"),
        (["--worker-gpus", "1"], "GPUs per worker need --executor ray"),
    ]:
        assert main(["analyze", run_dir, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_ray_actors_equal_one_process() -> None:
    """The same operator on two Ray actors of a local Ray (started and shut down here)."""
    pytest.importorskip("ray", reason="Ray is a dev dependency (requirements-dev.txt)")
    model, x, y = _tiny(K=2, n=3)
    one = NetworkHessianOperator(model, x, y, "mse", "all")
    V = torch.randn(one.dim, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    with ShardedHessianOperator(model, x, y, "mse", "all", workers=2, executor="ray",
                                threads=1) as op:
        assert "2 workers (local Ray, 1 threads each)" in op.describe()
        assert torch.allclose(op.matmat(V), one.matmat(V), rtol=1e-11, atol=1e-13)
    import ray

    assert not ray.is_initialized()  # started here, so shut down here
