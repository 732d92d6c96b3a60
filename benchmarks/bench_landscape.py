"""Benchmark: a P×P loss-landscape grid evaluated by whole rows per vmapped pass
(:func:`dufm_core.landscape.grid_losses`) against a plain loop of forward passes, one per point
(:func:`dufm_core.landscape.loop_losses`), side by side in one run.

Models: docs/theory.md case A (K=3, n=40, d=60, L=5, λ_W = λ_H = 1e-2, linear, MSE) at its
closed-form optimum, the same sizes with ReLU, and a small ReLU UFM (K=3, n=4, d=6, L=3)
where the cost of a forward pass is mostly overhead. Plane: two filter-normalised random
directions over all weights, radius 1, fit term and total loss both; float64; one CPU thread
(both sides). Each side is timed ``--repeats`` times and the best kept (on a shared machine the
best is the least disturbed); the largest difference between the two grids is printed too (they
must agree to ~1e-12).

    python -m benchmarks.bench_landscape [--points 41] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from dufm_core import landscape as ls
from dufm_core.config import RunConfig
from dufm_core.curvature.params import param_set
from dufm_core.models import build_model
from dufm_core.runtime import cpu_threads

CASES = {  # name: (K, n, width, depth, activation)
    "case A, linear": (3, 40, 60, 5, "linear"),
    "case A, relu": (3, 40, 60, 5, "relu"),
    "small, relu": (3, 4, 6, 3, "relu"),
}


def _case(name: str) -> tuple[torch.nn.Module, RunConfig]:
    K, n, width, depth, activation = CASES[name]
    cfg = RunConfig(K=K, n=n, width=width, depth=depth, lam_w=1e-2, lam_h=1e-2, init="optimum",
                    activation=activation, seed=0)
    cfg.validate()
    return build_model(cfg), cfg


def _time(fn: Any, call: tuple, repeats: int) -> tuple[float, Any]:
    """(best wall time, the result) of ``fn(*call)`` over ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*call)
        times.append(time.perf_counter() - t0)
    return min(times), out


def run(points: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for name in CASES:
        model, cfg = _case(name)
        pset = param_set(model, "weights")
        dirs = torch.stack([ls.random_direction(model, pset, 0, i) for i in (1, 2)], dim=1)
        theta = pset.vector(model)
        grid = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
        call = (model, pset, theta, dirs, grid, grid, cfg.loss, cfg.lam_ws, cfg.lam_h)
        with cpu_threads(1):
            t_vmap, (fit_v, tot_v) = _time(ls.grid_losses, call, repeats)
            t_loop, (fit_l, tot_l) = _time(ls.loop_losses, call, repeats)
        rows.append({
            "model": name, "points": points * points, "dim": pset.dim,
            "vmap_seconds": t_vmap, "loop_seconds": t_loop, "speedup": t_loop / t_vmap,
            "vmap_points_per_s": points * points / t_vmap,
            "loop_points_per_s": points * points / t_loop,
            "max_abs_diff": float(max((fit_v - fit_l).abs().max(), (tot_v - tot_l).abs().max())),
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=41)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = run(a.points, a.repeats)
    print(f"{a.points}×{a.points} grid, fit + total, float64, 1 thread, best of {a.repeats}")
    print(f"{'model':<16} {'params':>7} {'vmap rows s':>12} {'loop s':>9} {'speed-up':>9} "
          f"{'max |diff|':>11}")
    for r in rows:
        print(f"{r['model']:<16} {r['dim']:>7} {r['vmap_seconds']:>12.3f} "
              f"{r['loop_seconds']:>9.3f} {r['speedup']:>8.1f}× {r['max_abs_diff']:>11.1e}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
