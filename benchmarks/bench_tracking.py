"""Benchmark: eigenspace tracking over training — block solves with and without warm starts.

A ReLU and a linear MSE UFM (K=3, n=20, width 80, L=3, λ=5e-3, lr 0.2, float64) are trained
with C checkpoints. The ReLU model's two 80×80 layers (6 400 weights each) are above the dense
limit (4 096), so the report's Hessians of those layers use the block-Krylov solver, as does
the full Hessian over all weights (13 040) of both models (the linear model's layers are exact
Kronecker spectra: no solve to warm-start). At every checkpoint after the first, each of those
solves runs twice on the same operator: from a random start block (cold, what a single
``analyze`` does) and from the previous checkpoint's K² eigenvectors as kept in its vectors file
(float32, re-orthonormalised: what ``analyze --all-steps`` does). Reported side by side: how
far the space moved (1 − overlap with the previous checkpoint's), the operator products and
seconds of each, the products from the checkpoint's *own* kept vectors (the limit of a warm
start: a space that did not move, up to float32), and the largest difference of the converged
top-K² eigenvalues relative to λ_1 (the solver's tolerance is 1e-10 on residuals).

Also: the size of a vectors file for theory.md case A (5 layers of 60×60, K = 3) and for a
ResNet-20 head (64 → 64 → 64 → 10, K = 10), written with random orthonormal vectors of the
kept shapes.

    python -m benchmarks.bench_tracking [--checkpoints 8] [--steps 3000] [--quick]
                                        [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from dufm_core import tracking
from dufm_core.config import RunConfig
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.spectrum import hessian_operator
from dufm_core.kinds import load_checkpoint, train
from dufm_core.tracking import Eigenspace, StepVectors

TOL = 1e-10


def solve(op, K: int, v0: torch.Tensor | None) -> tuple[int, float, torch.Tensor, torch.Tensor]:
    """(products, seconds, top-K² values, K² vectors) of the report's block solve of ``op``."""
    K2 = K * K
    m = min(K2 + K, op.dim)
    t0 = time.perf_counter()
    res = top_eigenpairs(op, m, block=max(m, K2 + K), tol=TOL, need=min(K2, m), v0=v0)
    assert bool(res.converged[:K2].all()), "the K² outliers must converge"
    return res.matvecs, time.perf_counter() - t0, res.values[:K2], res.vectors[:, :K2]


def kept(U: torch.Tensor) -> torch.Tensor:
    """The vectors as a later checkpoint reads them from the file (float32, orthonormal)."""
    return torch.linalg.qr(U.to(torch.float32).double())[0]


def tracking_run(cfg: RunConfig) -> list[dict]:
    """One row per (checkpoint after the first, Hessian): cold vs warm."""
    with tempfile.TemporaryDirectory() as tmp:
        run = train(cfg, runs_dir=tmp, progress=None).run
        steps = run.checkpoints()
        models = [load_checkpoint(run.checkpoint_path(s)).model.double() for s in steps]
    # the report's block solves: layers above the dense limit (not for linear MSE, whose layers
    # are exact Kronecker spectra) and the full Hessian over all weights
    exact = cfg.activation == "linear" and cfg.loss == "mse"
    targets = [f"layer:{l}" for l in range(1, cfg.depth + 1)
               if cfg.dims[l - 1] * cfg.dims[l] > 4096 and not exact] + ["weights"]
    rows = []
    prev: dict[str, torch.Tensor] = {}
    for step, model in zip(steps, models, strict=True):
        for target in targets:
            op = hessian_operator(model, target, loss=cfg.loss, part="fit")
            n_cold, t_cold, v_cold, U = solve(op, cfg.K, None)
            if target in prev:
                n_warm, t_warm, v_warm, _ = solve(op, cfg.K, prev[target])
                n_self = solve(op, cfg.K, kept(U))[0]
                rows.append({
                    "step": step, "hessian": "full (weights)" if target == "weights" else target,
                    "dim": op.dim, "overlap_prev": tracking.overlap(prev[target], kept(U)),
                    "cold_products": n_cold, "warm_products": n_warm, "self_products": n_self,
                    "cold_s": t_cold, "warm_s": t_warm,
                    "max_rel_diff": float((v_warm - v_cold).abs().max() / v_cold[0].abs()),
                })
            prev[target] = kept(U)
    return rows


def file_sizes() -> dict[str, int]:
    """Bytes of a vectors file (layers, and layers + full Hessian) for case A and a ResNet-20
    head, written with random orthonormal vectors of the kept shapes."""
    out = {}
    cases = {"case A (K=3, 60-60-60-60-60-3)": (3, [60, 60, 60, 60, 60, 3]),
             "ResNet-20 head (K=10, 64-64-64-10)": (10, [64, 64, 64, 10])}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (K, dims) in cases.items():
            K2 = K * K
            sv = StepVectors(0, K)
            for l in range(1, len(dims)):
                d = dims[l - 1] * dims[l]
                U = torch.linalg.qr(torch.randn(d, min(K2, d), dtype=torch.float64))[0]
                sv.spaces[tracking.layer_key(l)] = Eigenspace(torch.ones(min(K2 + K, d)), U)
            path = tracking.vectors_path(Path(tmp), 0)
            tracking.write_vectors(path, sv)
            out[f"{name}: layers"] = path.stat().st_size
            dim = sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
            sv.spaces[tracking.FULL] = Eigenspace(
                torch.ones(K2 + K), torch.linalg.qr(torch.randn(dim, K2, dtype=torch.float64))[0])
            sv.full_params = "weights"
            tracking.write_vectors(path, sv)
            out[f"{name}: layers + full"] = path.stat().st_size
    return out


def print_table(title: str, rows: list[dict]) -> dict[str, float]:
    """One scenario's rows side by side, with its totals (returned)."""
    print(title)
    print(f"{'step':>6} {'Hessian':>15} {'dim':>6} {'1-overlap':>9} {'cold prod':>9} "
          f"{'warm prod':>9} {'saved':>6} {'self prod':>9} {'cold s':>7} {'warm s':>7} "
          f"{'max |Δλ|/λ1':>11}")
    for r in rows:
        saved = 1 - r["warm_products"] / r["cold_products"]
        print(f"{r['step']:>6} {r['hessian']:>15} {r['dim']:>6} {1 - r['overlap_prev']:>9.1e} "
              f"{r['cold_products']:>9} {r['warm_products']:>9} {saved:>6.0%} "
              f"{r['self_products']:>9} {r['cold_s']:>7.2f} {r['warm_s']:>7.2f} "
              f"{r['max_rel_diff']:>11.1e}")
    tot = {k: sum(r[k] for r in rows) for k in ("cold_products", "warm_products",
                                                 "self_products", "cold_s", "warm_s")}
    print(f"{'total':>6} {'':>15} {'':>6} {'':>9} {tot['cold_products']:>9} "
          f"{tot['warm_products']:>9} {1 - tot['warm_products'] / tot['cold_products']:>6.0%} "
          f"{tot['self_products']:>9} {tot['cold_s']:>7.2f} {tot['warm_s']:>7.2f}\n")
    return tot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="3 checkpoints, 300 steps")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    points, steps = (3, 300) if args.quick else (args.checkpoints, args.steps)
    results = {}
    for activation in ("relu", "linear"):
        cfg = RunConfig(K=3, n=20, width=80, depth=3, lam_w=5e-3, lam_h=5e-3, lr=0.2,
                        steps=steps, activation=activation, loss="mse", dtype="float64",
                        checkpoint_points=points, log_points=10)
        cfg.validate()
        rows = tracking_run(cfg)
        title = (f"{activation} MSE UFM, K=3, n=20, width 80, L=3, λ=5e-3, {steps} steps, "
                 f"{points} checkpoints")
        results[activation] = {"config": cfg.to_dict(), "rows": rows,
                               "totals": print_table(title, rows)}
    sizes = file_sizes()
    for name, size in sizes.items():
        print(f"vectors file, {name}: {size / 1e6:.2f} MB")
    if args.out:
        args.out.write_text(json.dumps({"scenarios": results, "sizes": sizes}, indent=2))


if __name__ == "__main__":
    main()
