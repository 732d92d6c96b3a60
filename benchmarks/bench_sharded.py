"""Benchmark: data-parallel whole-network Hessian products (issue #16, item 2) against one process.

A ResNet-20 + 3-layer head on digits (N = 10·n images, every one of its ~278 k parameters, float64,
BatchNorm in eval mode). One **product** is H·V for a block of ``--block`` vectors. Rows:

* ``one process``: :class:`NetworkHessianOperator` in this process with ``--threads`` threads;
* ``local W``: :class:`ShardedHessianOperator` over W spawned processes, ``--threads`` each;
* ``ray W``: the same on W actors of a local Ray (``--ray``).

Each row gives the median seconds per product over ``--repeats`` (after one warm-up), the speed-up
over one process, the ideal (W when every worker has its own cores; at most cores/threads here),
the start-up time of the workers (paid once per analysis) and the largest relative difference of
its product from one process's (rounding only: the sums are taken in another order).

    python -m benchmarks.bench_sharded --n 20 --workers 1,2 --threads 1 --ray
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from dufm_core.config import RunConfig
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.curvature.sharded import ShardedHessianOperator
from dufm_core.data import load_data
from dufm_core.networks import build_network


def _median_product(op, V: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    out = op.matmat(V)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = op.matmat(V)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(n: int, workers: list[int], threads: int, block: int, repeats: int,
        ray: bool) -> list[dict]:
    cfg = RunConfig.from_dict({"model": "resnet20", "dataset": "digits", "n": n})
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_network(cfg, device=torch.device("cpu")).double()
    x, y = data.x_train.double(), data.y_train
    torch.set_num_threads(threads)
    one = NetworkHessianOperator(model, x, y, cfg.loss, "all")
    V = torch.randn(one.dim, block, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    base, ref = _median_product(one, V, repeats)
    rows = [{"row": "one process", "workers": 1, "threads": threads, "seconds": base,
             "speedup": 1.0, "ideal": 1.0, "startup": 0.0, "max_rel_diff": 0.0,
             "N": int(x.shape[0]), "dim": one.dim, "block": block}]
    cores = os.cpu_count() or 1
    for executor in ["local", *(["ray"] if ray else [])]:
        for w in workers:
            t0 = time.perf_counter()
            with ShardedHessianOperator(model, x, y, cfg.loss, "all", workers=w,
                                        executor=executor, threads=threads) as op:
                startup = time.perf_counter() - t0
                sec, out = _median_product(op, V, repeats)
            diff = float(((out - ref).abs().max() / ref.abs().max()).item())
            rows.append({"row": f"{executor} {w}", "workers": w, "threads": threads,
                         "seconds": sec, "speedup": base / sec,
                         "ideal": min(w, max(1, cores // threads)), "startup": startup,
                         "max_rel_diff": diff, "N": int(x.shape[0]), "dim": one.dim,
                         "block": block})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20, help="digits images per class (N = 10·n)")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per worker")
    p.add_argument("--block", type=int, default=16, help="vectors per product")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ray", action="store_true", help="also on a local Ray")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    rows = run(a.n, [int(w) for w in a.workers.split(",")], a.threads, a.block, a.repeats, a.ray)
    r0 = rows[0]
    print(f"ResNet-20 + head on digits, N = {r0['N']}, {r0['dim']} parameters, blocks of "
          f"{r0['block']} vectors, {a.threads} thread(s) per worker; load average "
          f"{os.getloadavg()[0]:.2f} at the end")
    print("| row | s per product | speed-up | ideal | workers' start s | max rel. diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['seconds']:.2f} | {r['speedup']:.2f}× | {r['ideal']}× | "
              f"{r['startup']:.1f} | {r['max_rel_diff']:.1e} |")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
