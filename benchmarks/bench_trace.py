"""Trace estimators side by side: Hutchinson and Hutch++ at equal numbers of Hessian–vector
products against the exact trace, on the full fit Hessian of a UFM (issue #14, item 5).

    python -m benchmarks.bench_trace [--quick] [--repeats R] [--out FILE.json]

For each model and budget it prints the exact trace, both estimates' mean absolute relative
error over R seeds, their mean reported standard error, and the products and seconds they took.
The exact trace is the sum of the layer blocks' traces (linear MSE: tr P·tr Q) or the dense
diagonal (ReLU). PyHessian's ``trace()`` (Hutchinson with its own loop) is not compared: the
package is not installed here (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dufm_core.config import RunConfig
from dufm_core.curvature.spectrum import hessian_operator
from dufm_core.curvature.trace import full_fit_trace, hutch_pp, hutchinson
from dufm_core.models import build_model


def _case(activation: str, width: int, depth: int) -> tuple[torch.nn.Module, RunConfig]:
    cfg = RunConfig(K=3, n=10, width=width, depth=depth, activation=activation, seed=1,
                    init="optimum", init_noise=0.05, lam_w=0.01, lam_h=0.01)
    cfg.validate()
    return build_model(cfg), cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, few repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cases = [("linear", 8, 3), ("relu", 8, 3)] if a.quick else [("linear", 30, 4),
                                                               ("relu", 20, 3)]
    budgets = [30, 99] if a.quick else [30, 99, 300]
    repeats = 2 if a.quick else a.repeats
    rows = []
    for act, width, depth in cases:
        model, _ = _case(act, width, depth)
        op = hessian_operator(model, "weights", "mse", "fit")
        exact = full_fit_trace(model, "weights", "mse")
        if exact is None:
            exact = float(op.diagonal().sum())
        for budget in budgets:
            for name, fn in (("Hutchinson", hutchinson), ("Hutch++", hutch_pp)):
                errs, ses, t0 = [], [], time.perf_counter()
                for s in range(repeats):
                    est = fn(op, budget, seed=s)
                    errs.append(abs(est.value - exact) / abs(exact))
                    ses.append(est.stderr / abs(exact))
                secs = (time.perf_counter() - t0) / repeats
                rows.append({"model": f"{act} d={width} L={depth}", "dim": op.dim,
                             "exact": exact, "method": name, "products": budget,
                             "rel_error": sum(errs) / repeats, "rel_stderr": sum(ses) / repeats,
                             "seconds": secs})
    print(f"{'model':<18}{'dim':>6}{'method':>12}{'products':>9}{'rel. error':>12}"
          f"{'rel. s.e.':>11}{'s':>8}")
    for r in rows:
        print(f"{r['model']:<18}{r['dim']:>6}{r['method']:>12}{r['products']:>9}"
              f"{r['rel_error']:>12.2e}{r['rel_stderr']:>11.2e}{r['seconds']:>8.3f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
