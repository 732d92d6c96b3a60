"""Trace estimators side by side: Hutchinson and Hutch++ at equal numbers of Hessian–vector
products against the exact trace, on the full fit Hessian of a UFM (issue #14, item 5).

    python -m benchmarks.bench_trace [--quick] [--repeats R] [--out FILE.json]

For each model and budget it prints the exact trace, both estimates' mean absolute relative
error over R seeds, their mean reported standard error, and the products and seconds they took.
The exact trace is the sum of the layer blocks' traces (linear MSE: tr P·tr Q) or the dense
diagonal (ReLU). When the ``pyhessian`` package is importable (it is not a dependency: put
it on PYTHONPATH), PyHessian's ``trace(maxIter=p, tol=0)`` runs beside them on the same head as a
plain ``nn.Sequential`` of bias-free ``Linear`` layers (one Hessian–vector product per probe,
autograd double backward), at the same number of probes: the same estimator as ours, so the
comparison is of time at equal accuracy.
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


def _pyhessian_trace(model: torch.nn.Module, probes: int, seed: int) -> tuple[float, float]:
    """(estimate, standard error) from PyHessian's ``trace()`` on the same fit Hessian over the
    weights; ImportError when pyhessian is not installed."""
    from pyhessian import hessian  # optional, benchmark only

    acts = model.activation
    layers: list[torch.nn.Module] = []
    for i, W in enumerate(model.weights):
        if i > 0 and acts == "relu":
            layers.append(torch.nn.ReLU())
        lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False).double()
        lin.weight.data.copy_(W.detach())
        layers.append(lin)
    net = torch.nn.Sequential(*layers)
    x = model.features.detach().T.contiguous()
    y = torch.nn.functional.one_hot(model.labels, model.K).double()

    def criterion(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (out - target).square().sum() / (2 * out.shape[0])

    torch.manual_seed(seed)
    vals = hessian(net, criterion, data=(x, y), cuda=False).trace(maxIter=probes, tol=0.0)
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std() / len(vals) ** 0.5)


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
            try:
                errs, ses, t0 = [], [], time.perf_counter()
                for s in range(repeats):
                    value, err = _pyhessian_trace(model, budget, s)
                    errs.append(abs(value - exact) / abs(exact))
                    ses.append(err / abs(exact))
            except ImportError:
                continue
            rows.append({"model": f"{act} d={width} L={depth}", "dim": op.dim, "exact": exact,
                         "method": "PyHessian", "products": budget,
                         "rel_error": sum(errs) / repeats, "rel_stderr": sum(ses) / repeats,
                         "seconds": (time.perf_counter() - t0) / repeats})
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
