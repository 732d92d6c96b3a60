"""Benchmark: the exact full spectrum of one linear-MSE layer Hessian from its Kronecker factors.

docs/theory.md case A (K=3, n=40, L=5, λ=0.01, float64) at width d (default 512): the layer-l fit
Hessian is P ⊗ Q, a d²×d² matrix (262 144 × 262 144 at d = 512, 550 GB dense). The full spectrum
is every product p_i q_j of the factors' eigenvalues: two d×d ``eigh`` calls and a sort, O(d³).
Goal: < 2 s at d = 512. Timed: building P and Q from the model (``layer_factors``),
the two eigendecompositions and sorting all d² values (``KroneckerSpectrum.values()``).

Checks reported alongside: at the optimum the top K² values equal λ_W γ/(1−γ)
(theory.predict(...).layer_outlier) and everything else is 0; at a random point the top 9 agree
with our block-Krylov solver on the autograd HessianOperator of the same layer.

    python -m benchmarks.bench_kronecker [--width 512] [--layer 3] [--repeats 3] [--quick]
                                         [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from dufm_core import theory  # noqa: E402
from dufm_core.config import RunConfig  # noqa: E402
from dufm_core.curvature import HessianOperator, KroneckerSpectrum, top_eigenpairs  # noqa: E402
from dufm_core.models import build_model  # noqa: E402


def spectrum_time(model: torch.nn.Module, layer: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Median seconds for factors + eigendecompositions + sorted full spectrum."""
    times = []
    vals = torch.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        vals = KroneckerSpectrum.from_model(model, layer).values()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), vals


def run(width: int, layer: int, repeats: int, check_random: bool) -> dict:
    cfg = RunConfig(K=3, n=40, width=width, depth=5, lam_w=0.01, lam_h=0.01, init="optimum")
    cfg.validate()
    model = build_model(cfg)
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    KroneckerSpectrum.from_model(model, layer).values()  # warm-up (LAPACK first call)
    sec, vals = spectrum_time(model, layer, repeats)
    k2 = cfg.K**2
    want = pred.layer_outlier[layer - 1]
    out = {
        "width": width, "layer": layer, "dim": int(vals.numel()), "repeats": repeats,
        "threads": torch.get_num_threads(), "seconds_optimum": sec,
        "top_rel_err": float(((vals[:k2] - want).abs() / want).max()),
        "bulk_max_abs": float(vals[k2:].abs().max()),
        "predicted_outlier": want,
    }
    if check_random:
        rcfg = RunConfig(K=3, n=40, width=width, depth=5, init="random", seed=1)
        rcfg.validate()
        rmodel = build_model(rcfg)
        sec_r, rvals = spectrum_time(rmodel, layer, repeats)
        t0 = time.perf_counter()
        res = top_eigenpairs(HessianOperator(rmodel, f"layer:{layer}"), k2, tol=1e-10)
        out.update({
            "seconds_random": sec_r,
            "krylov_seconds": time.perf_counter() - t0,
            "krylov_vs_kronecker_top9_rel": float(
                ((res.values - rvals[:k2]).abs() / rvals[:k2].abs()).max()
            ),
        })
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="width 32, 1 repeat (CI smoke test)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, repeats = (32, 1) if args.quick else (args.width, args.repeats)
    res = run(width, args.layer, repeats, check_random=True)
    print(
        f"layer {res['layer']} of case A at width {res['width']}: {res['dim']} eigenvalues in "
        f"{res['seconds_optimum']:.3f} s (optimum), {res['seconds_random']:.3f} s (random point)"
    )
    print(
        f"optimum: top 9 rel err {res['top_rel_err']:.1e}, bulk max |λ| {res['bulk_max_abs']:.1e}; "
        f"random point: block Krylov top 9 vs Kronecker {res['krylov_vs_kronecker_top9_rel']:.1e} "
        f"({res['krylov_seconds']:.2f} s)"
    )
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
