"""Benchmark: top K² eigenpairs of the full weight fit-Hessian, ours vs PyHessian vs curvlinops.

Model: docs/theory.md case A at its closed-form optimum (K=3, n=40, L=5, λ_W = λ_H = 0.01, float64)
at width d (default 256: 4·256² + 3·256 = 262 912 weights). Target: the K² = 9 outliers
(0.8562128489 ×3, 0.7762128489 ×6; theory.predict(...).full_outliers), exactly degenerate.

* ours       dufm_core.curvature: HessianOperator(model, "weights") — generic autograd products
             (vmap'ed reverse-over-reverse, torch.func), the same information the other libraries
             use — + top_eigenpairs(m=9, block=9): block Krylov, full reorthogonalisation,
             explicit residuals; tolerance ``--tol`` on ‖Hv − θv‖/|θ_max|.
* ours-structured  the same solver on LinearHessianOperator(model, "weights"): closed-form
             products of the linear UFM (every product through a K-row matrix), exact like the
             autograd ones but ~5× cheaper here. Only for the linear model.
* ours-range the same solver on RangeSpaceOperator(LinearHessianOperator(...)): the closed-form
             products restricted to a subspace that holds the Hessian's whole range (6 876 of
             262 912 coordinates at width 256; dufm_core/curvature/range_space.py), so the
             solver's basis work shrinks 38×. Only for the linear model.
* ours-report  the report path of ``analyze --full``: ``analysis.analyze_full`` (top K² + K at
             ``--report-tol``, default 1e-10, its SLQ density, bottom, trace, verdict and
             attribution), at the thread count ``analyze`` uses for this width (or
             ``--report-threads``), with the time of each stage (medians) under the table.
* pyhessian  ``hessian(model, criterion, data=(inputs, targets), cuda=False).eigenvalues(top_n=9)``
             at its defaults (power iteration with deflation, maxIter=100, tol=1e-3). The model is
             a wrapper whose forward takes the sample indices as inputs and whose only trainable
             parameters are the weights (H_1 frozen).
* curvlinops HessianLinearOperator(model, criterion, weights, [(inputs, targets)]) →
             .to_scipy() → scipy.sparse.linalg.eigsh(k=9, which="LA") at eigsh's defaults.

The criterion is the fit term sum((logits − onehot)²)/(2N) for all three. Every method is run
once untimed (warm-up: functorch / autograd first-call costs), then ``--repeats`` times,
round-robin so that background load hits all methods alike; the median time is reported, with
the largest relative error of the 9 values (sorted) against the closed form.

    python -m benchmarks.bench_hessian [--width 256] [--repeats 3] [--threads 2] [--tol 1e-8]
                                       [--only ours] [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dufm_core import theory  # noqa: E402
from dufm_core.config import RunConfig  # noqa: E402
from dufm_core.curvature import (  # noqa: E402
    HessianOperator,
    LinearHessianOperator,
    RangeSpaceOperator,
    top_eigenpairs,
)
from dufm_core.models import build_model  # noqa: E402

EXTERNAL = {"pyhessian": "pyhessian", "curvlinops": "curvlinops"}


class IndexModel(torch.nn.Module):
    """nn.Module view of a DeepUFM for other libraries: forward(indices) → logits (B, K).

    Its trainable parameters are W_1..W_L only (H_1 is frozen), so a library that takes
    "all parameters with requires_grad" sees exactly the weight Hessian.
    """

    def __init__(self, ufm: torch.nn.Module) -> None:
        super().__init__()
        self.ufm = ufm
        self.ufm.features.requires_grad_(False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.ufm(idx)


class FitCriterion(torch.nn.Module):
    """The MSE fit term sum((logits − onehot)²)/(2B) over a batch of B samples.

    ``reduction = "sum"`` tells curvlinops not to rescale (the 1/(2N) is inside).
    """

    reduction = "sum"

    def forward(self, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return (logits - onehot).square().sum() / (2 * logits.shape[0])


def case_a(width: int) -> tuple[torch.nn.Module, np.ndarray, RunConfig]:
    cfg = RunConfig(K=3, n=40, width=width, depth=5, lam_w=0.01, lam_h=0.01, init="optimum")
    cfg.validate()
    model = build_model(cfg)
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    return model, np.sort(np.array(pred.full_outliers))[::-1], cfg


def rel_err(values: np.ndarray, ref: np.ndarray) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1][: ref.size]
    return float(np.max(np.abs(v - ref) / np.abs(ref)))


# ---------------------------------------------------------------------------- the methods
def run_ours(
    model: torch.nn.Module, k: int, tol: float, block: int, how: str = "autograd"
) -> dict:
    t0 = time.perf_counter()
    kind = LinearHessianOperator if how in ("structured", "range") else HessianOperator
    op = kind(model, "weights", loss="mse", part="fit")
    if how == "range":  # the same operator restricted to a subspace holding its range
        op = RangeSpaceOperator(op)
    res = top_eigenpairs(op, k, block=block, tol=tol)
    dt = time.perf_counter() - t0
    return {
        "seconds": dt,
        "values": res.values.tolist(),
        "hvps": res.matvecs,
        "iterations": res.iterations,
        "max_residual": float(res.residual_norms.max()),
        "converged": bool(res.all_converged),
    }


def run_pyhessian(model: torch.nn.Module, k: int) -> dict:
    import importlib

    from pyhessian import hessian

    # count its Hessian-vector products: wrap the module-level function its loop calls
    module = importlib.import_module("pyhessian.hessian")
    original = module.hessian_vector_product
    count = [0]

    def counted(*args: object, **kwargs: object) -> object:
        count[0] += 1
        return original(*args, **kwargs)

    module.hessian_vector_product = counted
    wrapped = IndexModel(model)
    idx = torch.arange(model.N)
    targets = model.targets().T.contiguous()
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # PyHessian draws its vectors in the default dtype
    try:
        t0 = time.perf_counter()
        h = hessian(wrapped, FitCriterion(), data=(idx, targets), cuda=False)
        vals, _ = h.eigenvalues(top_n=k)
        dt = time.perf_counter() - t0
    finally:
        torch.set_default_dtype(prev)
        module.hessian_vector_product = original
        wrapped.zero_grad(set_to_none=True)  # break the create_graph reference cycle
    return {"seconds": dt, "values": sorted(vals, reverse=True), "hvps": count[0]}


def run_curvlinops(model: torch.nn.Module, k: int) -> dict:
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh

    wrapped = IndexModel(model)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    data = [(torch.arange(model.N), model.targets().T.contiguous())]
    count = [0]
    t0 = time.perf_counter()
    H = HessianLinearOperator(wrapped, FitCriterion(), params, data, check_deterministic=False)
    Hs = H.to_scipy(dtype=np.float64)

    def mv(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        return Hs.matvec(x)

    vals = eigsh(LinearOperator(Hs.shape, matvec=mv, dtype=np.float64), k=k, which="LA",
                 return_eigenvectors=False)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "values": sorted(vals.tolist(), reverse=True), "hvps": count[0]}


# Stages of the report path, timed by wrapping the functions ``analyze_full`` calls (the engine
# itself is unchanged; the wrappers add two clock reads per call).
REPORT_STAGES = {
    "solve": ("dufm_core.analysis", "top_eigenpairs"),
    "slq": ("dufm_core.analysis", "slq_log_density"),
    "bottom+trace+verdict": ("dufm_core.analysis", "_full_bottom_verdict"),
    "attribution": ("dufm_core.analysis", "attribution"),
    "predicted bases": ("dufm_core.analysis", "predicted_bases"),
}


def run_ours_report(model: torch.nn.Module, cfg: RunConfig, tol: float,
                    layer_traces: list[float], threads: int | None = None) -> dict:
    """The whole ``analyze --full`` part for the full Hessian: ``analysis.analyze_full`` (top K²
    + K to ``tol``, SLQ density, bottom, trace, verdict, attribution), run as ``analyze_model``
    runs it (its thread count, the layers' exact traces handed in), with a time per stage."""
    import importlib

    from dufm_core import analysis
    from dufm_core.runtime import cpu_threads, threads_for

    spent: dict[str, float] = dict.fromkeys(REPORT_STAGES, 0.0)
    originals = []
    for stage, (mod_name, fn_name) in REPORT_STAGES.items():
        mod = importlib.import_module(mod_name)
        fn = getattr(mod, fn_name)
        originals.append((mod, fn_name, fn))

        def timed(*a: object, _fn: Callable = fn, _stage: str = stage, **k: object) -> object:
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                spent[_stage] += time.perf_counter() - t

        setattr(mod, fn_name, timed)
    th = analysis.predictions(cfg, model)
    n_threads = threads if threads else threads_for(max(cfg.dims))
    try:
        t0 = time.perf_counter()
        with cpu_threads(n_threads):
            out = analysis.analyze_full(model, cfg, th, "weights", tol, layer_traces)
        dt = time.perf_counter() - t0
    finally:
        for mod, fn_name, fn in originals:
            setattr(mod, fn_name, fn)
    spent["rest"] = dt - sum(spent.values())
    return {"seconds": dt, "values": out["top"][: cfg.K**2], "hvps": out["matvecs"],
            "bottom_hvps": out["verdict_detail"].get("bottom_matvecs"),
            "converged": out["converged"], "stages": spent,
            "threads": n_threads or torch.get_num_threads()}


# ---------------------------------------------------------------------------- driver
def available(name: str) -> bool:
    return importlib.util.find_spec(EXTERNAL[name]) is not None


def run(width: int, repeats: int, tol: float, block: int, only: list[str],
        report_tol: float = 1e-10, report_threads: int | None = None) -> dict:
    model, ref, cfg = case_a(width)
    k = cfg.K**2
    methods: dict[str, Callable[[], dict]] = {}
    skipped: dict[str, str] = {}
    if "ours" in only:
        methods["ours"] = lambda: run_ours(model, k, tol, block)
    if "ours-structured" in only:
        methods["ours-structured"] = lambda: run_ours(model, k, tol, block, "structured")
    if "ours-range" in only:
        methods["ours-range"] = lambda: run_ours(model, k, tol, block, "range")
    if "ours-report" in only:
        from dufm_core.curvature.kronecker import KroneckerSpectrum

        traces = [KroneckerSpectrum.from_model(model, l).trace()
                  for l in range(1, cfg.depth + 1)]  # the report's layer part has them
        methods["ours-report"] = lambda: run_ours_report(model, cfg, report_tol, traces,
                                                         report_threads)
    for name, fn in (("pyhessian", run_pyhessian), ("curvlinops", run_curvlinops)):
        if name not in only:
            continue
        if not available(name):
            skipped[name] = f"{EXTERNAL[name]} is not installed (benchmark-only dependency)"
            continue
        ext_model = copy.deepcopy(model)
        methods[name] = lambda fn=fn, m=ext_model: fn(m, k)
    cold = {name: fn()["seconds"] for name, fn in methods.items()}  # warm-up, reported too
    times: dict[str, list[float]] = {name: [] for name in methods}
    last: dict[str, dict] = {}
    stages: dict[str, list[dict]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            out = fn()
            times[name].append(out["seconds"])
            stages[name].append(out.get("stages", {}))
            last[name] = out
    results = {}
    for name in methods:
        out = dict(last[name])
        out["seconds"] = statistics.median(times[name])
        out["all_seconds"] = times[name]
        out["cold_seconds"] = cold[name]
        out["max_rel_err"] = rel_err(np.array(out["values"]), ref)
        if "stages" in out:  # median per stage over the timed repeats
            out["stages"] = {st: statistics.median(s[st] for s in stages[name])
                             for st in out["stages"]}
        results[name] = out
    ratios = {}
    for mine in ("ours", "ours-structured", "ours-range", "ours-report"):
        if mine not in results:
            continue
        for name in ("pyhessian", "curvlinops"):
            if name in results:
                ratios[f"{name}/{mine}"] = results[name]["seconds"] / results[mine]["seconds"]
    n_weights = sum(w.numel() for w in model.weights)
    return {
        "case": "A", "K": cfg.K, "n": cfg.n, "L": cfg.depth, "lam": 0.01, "width": width,
        "n_weights": n_weights, "k": k, "tol": tol, "block": block, "repeats": repeats,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "reference": ref.tolist(), "results": results, "ratios": ratios, "skipped": skipped,
    }


def print_table(res: dict) -> None:
    print(
        f"case A optimum, width {res['width']} ({res['n_weights']} weights), top {res['k']}, "
        f"{res['threads']} threads, median of {res['repeats']}"
    )
    print(f"{'method':<16} {'seconds':>9} {'cold s':>8} {'HVPs':>6} {'max rel err':>12}")
    for name, r in res["results"].items():
        hv = r.get("hvps", "")
        print(
            f"{name:<16} {r['seconds']:>9.3f} {r['cold_seconds']:>8.3f} {hv!s:>6} "
            f"{r['max_rel_err']:>12.2e}"
        )
    for name, r in res["results"].items():
        if "stages" in r:
            parts = ", ".join(f"{st} {sec:.3f}" for st, sec in r["stages"].items())
            print(f"{name} stages (s, median): {parts}; bottom HVPs {r.get('bottom_hvps')}, "
                  f"{r.get('threads')} thread(s)")
    for key, val in res["ratios"].items():
        print(f"ratio {key}: {val:.2f}x")
    for name, why in res["skipped"].items():
        print(f"skipped {name}: {why}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2)")
    ap.add_argument("--tol", type=float, default=1e-8, help="our residual tolerance")
    ap.add_argument("--report-threads", type=int, default=0,
                    help="ours-report's threads (0: as analyze chooses for the width)")
    ap.add_argument("--report-tol", type=float, default=1e-10,
                    help="ours-report's tolerance (analyze --full uses 1e-10)")
    ap.add_argument("--block", type=int, default=9, help="our block size (≥ K² = 9)")
    ap.add_argument("--only",
                    default="ours,ours-structured,ours-range,ours-report,pyhessian,curvlinops")
    ap.add_argument("--quick", action="store_true", help="width 12, 1 repeat (CI smoke test)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, repeats = (12, 1) if args.quick else (args.width, args.repeats)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    res = run(width, repeats, args.tol, args.block, only, args.report_tol,
              args.report_threads or None)
    print_table(res)
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
