"""Benchmark: whole-network top-10 eigenvalues and trace of a ResNet-20, ours vs PyHessian vs
curvlinops, at equal accuracy (issue #16, "Benchmarks").

The operator is the fit Hessian of a ResNet-20 + the run's head (``model: resnet20``, digits, N =
10·n images, every parameter, BatchNorm in eval mode) — a *trained* state when ``--train-steps``
> 0 (the engine's own training step, ``training.real.batch_gradient`` + ``Optimizer``, full batch,
cached under ``/tmp``), else the seeded initialisation. Every method gets the same network in the
same dtype and the same data in one batch, so all three multiply by the same Hessian; one product
of each peer is checked against ours first (``max rel. diff``).

* **ours**: :class:`NetworkHessianOperator` (forward-over-reverse, vmapped blocks) with
  ``top_eigenpairs`` (block Krylov; knobs ``tol`` and ``block``) and ``hutch_pp``;
* **ours-mixed**: the engine's operator in float32 under ``top_eigenpairs``, which keeps its
  basis in float64 for a float32 operator (products in float32, orthogonalisation and
  Rayleigh–Ritz in float64); ``--blocks`` includes blocks smaller than 10 (the wanted values are
  simple), down to one vector;
* **ours-eigsh** (a diagnostic row, not an engine path): the engine's operator, one vector per
  product, under the same ``eigsh`` as curvlinops — product cost apart from product count;
* **PyHessian**: ``hessian(model, criterion, data=(x, onehot), cuda=False)``: ``eigenvalues(
  top_n=10, tol, maxIter)`` (power iteration with deflation, one double-backward product per
  vector through a retained gradient graph) and ``trace(maxIter, tol=0)`` (Hutchinson);
* **curvlinops**: ``HessianLinearOperator`` → ``to_scipy()`` → ``scipy.sparse.linalg.eigsh(k=10,
  which="LA", tol)`` (ARPACK, one product per call) and ``hutchpp_trace`` (block products).

**Reference**: our ``top_eigenpairs`` at tol 1e-10 (``--ref-tol``) gives the top-10; a long
Hutch++ run (``--ref-trace-products``) gives the trace, with its standard error.

**Equal accuracy**: for each level in ``--levels`` (max relative error of the 10 values), each
method's knob is swept from loose to tight and the loosest setting that meets the level is kept
(the cheapest one, as a user would pick it); then those settings are timed round-robin
(``--repeats`` rounds), so that background load hits every method alike. A setting that does not
meet a level within its caps (``--peer-max-iter``, ``--budget``) is reported as such. For the
trace, each estimator runs at each of ``--trace-budgets`` products over ``--seeds`` seeds; the
table gives the mean |relative error| against the reference and seconds.

``--dtypes float64,float32`` adds a second part where every method runs in float32 (the way the
peers are usually run); errors are still against the float64 references.

Peers are benchmark-only: they are imported if present (e.g. ``pip install --no-deps --target
/tmp/peers pyhessian curvlinops-for-pytorch ...`` and ``PYTHONPATH=/tmp/peers:.``) and skipped
with one line otherwise.

    PYTHONPATH=/tmp/peers:. python -m benchmarks.bench_network_peers --n 5 --threads 1
    python -m benchmarks.bench_network_peers --quick --only ours --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dufm_core.config import RunConfig
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.curvature.params import unflatten
from dufm_core.curvature.trace import hutch_pp
from dufm_core.data import load_data
from dufm_core.networks import build_network
from dufm_core.training import Optimizer
from dufm_core.training.real import batch_gradient

METHODS = ("ours", "ours-mixed", "ours-eigsh", "pyhessian", "curvlinops")
OURS = ("ours", "ours-mixed", "ours-eigsh")
EXTERNAL = {"pyhessian": "pyhessian", "curvlinops": "curvlinops"}
CACHE = Path("/tmp/dufm_bench_network_peers")
OUR_TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
PYH_TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-8)
EIGSH_TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)


F32_MIN_TOL = 1e-4  # tightest tolerance swept for the peers in float32 (their solves stall)


class OverBudgetError(RuntimeError):
    """A peer's run passed its product budget (the sweep's cap)."""


# ---------------------------------------------------------------------------- the problem
def build(n: int, steps: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor,
                                                   str]:
    """(network in float64, eval mode; inputs; labels; what state it is in). A trained state
    is cached under ``CACHE`` (keyed by n, steps, seed) so a rerun does not train again."""
    cfg = RunConfig.from_dict({"model": "resnet20", "dataset": "digits", "n": n, "seed": seed})
    data = load_data(cfg)
    model = build_network(cfg, device=torch.device("cpu"))
    x, y = data.x_train, data.y_train
    state = "seeded initialisation"
    if steps > 0:
        path = CACHE / f"resnet20_digits_n{n}_steps{steps}_seed{seed}.pt"
        if path.exists():
            model.load_state_dict(torch.load(path))
            state = f"trained {steps} full-batch steps (cached {path})"
        else:
            t0 = time.perf_counter()
            params = list(model.parameters())
            opt = Optimizer([p.data for p in params], cfg)
            model.train()
            for _ in range(steps):
                grads, _, _ = batch_gradient(model, params, x.to(params[0].dtype), y, cfg)
                opt.step(list(grads))
            CACHE.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
            state = (f"trained {steps} full-batch steps in {time.perf_counter() - t0:.0f} s "
                     f"(cached {path})")
    model = model.double().eval()
    with torch.no_grad():
        acc = float((model(x.double()).argmax(1) == y).double().mean())
    return model, x.double(), y, f"{state}; train accuracy {acc:.2f}"


class FitCriterion(torch.nn.Module):
    """The engine's MSE fit term ‖Z − Y‖²/(2B) on one-hot targets (``fit_term``), for the peers;
    ``reduction = "sum"`` tells curvlinops not to rescale (the 1/B is inside, one batch)."""

    reduction = "sum"

    def forward(self, logits: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return (logits - onehot).square().sum() / (2 * logits.shape[0])


def rel_err(values: list[float], ref: np.ndarray) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1][: ref.size]
    if v.size < ref.size:
        return math.inf
    return float(np.max(np.abs(v - ref) / np.abs(ref)))


def available(name: str) -> bool:
    return importlib.util.find_spec(EXTERNAL[name]) is not None


class Problem:
    """The network, data and operators of one dtype, and each method's top-10 and trace."""

    def __init__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.net = copy.deepcopy(model).to(dtype).eval()
        self.x = x.to(dtype)
        self.y = y
        self.onehot = torch.nn.functional.one_hot(y, int(model.K)).to(dtype)
        self.op = NetworkHessianOperator(self.net, self.x, y, "mse", "all", dtype=dtype)
        self.dim = self.op.dim
        self._mixed: NetworkHessianOperator | None = None

    @property
    def mixed(self) -> NetworkHessianOperator:
        """The float32 operator (``ours-mixed``; the solver keeps a float64 basis for it),
        built on first use."""
        if self._mixed is None:
            self._mixed = self.op if self.dtype == torch.float32 else NetworkHessianOperator(
                copy.deepcopy(self.net).float(), self.x.float(), self.y, "mse", "all",
                dtype=torch.float32)
        return self._mixed

    # ------------------------------------------------------------------ ours
    def ours_top(self, k: int, tol: float, block: int, seed: int = 0,
                 mixed: bool = False) -> dict:
        op = self.mixed if mixed else self.op
        before = op.matvecs
        t0 = time.perf_counter()
        res = top_eigenpairs(op, k, block=block, tol=tol, seed=seed)
        dt = time.perf_counter() - t0
        return {"seconds": dt, "values": res.values.tolist(), "products": op.matvecs - before,
                "over_budget": not res.all_converged}

    def ours_trace(self, budget: int, seed: int, mixed: bool = False) -> dict:
        t0 = time.perf_counter()
        est = hutch_pp(self.mixed if mixed else self.op, matvecs=budget, seed=seed)
        return {"seconds": time.perf_counter() - t0, "value": est.value, "products": est.matvecs,
                "stderr": est.stderr}

    def ours_eigsh(self, k: int, tol: float, seed: int = 0) -> dict:
        """Our products (one vector a call) under scipy's eigsh: the solver of curvlinops' row
        with the engine's operator, to separate product cost from product count."""
        from scipy.sparse.linalg import LinearOperator, eigsh

        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        before = self.op.matvecs
        t0 = time.perf_counter()

        def mv(v: np.ndarray) -> np.ndarray:
            col = torch.from_numpy(np.ascontiguousarray(v, dtype=np_dtype)).reshape(-1, 1)
            return self.op.matmat(col)[:, 0].numpy()

        v0 = np.random.default_rng(seed).standard_normal(self.dim).astype(np_dtype)
        vals = eigsh(LinearOperator((self.dim, self.dim), matvec=mv, dtype=np_dtype), k=k,
                     which="LA", tol=tol, v0=v0, return_eigenvectors=False)
        return {"seconds": time.perf_counter() - t0, "values": sorted(vals.tolist(), reverse=True),
                "products": self.op.matvecs - before}

    # ------------------------------------------------------------------ PyHessian
    def _pyhessian(self, budget: int | None) -> tuple[object, Callable[[], int], Callable]:
        from pyhessian import hessian

        module = importlib.import_module("pyhessian.hessian")
        original = module.hessian_vector_product
        count = [0]

        def counted(*args: object, **kwargs: object) -> object:
            count[0] += 1
            if budget is not None and count[0] > budget:
                raise OverBudgetError(f"over {budget} products")
            return original(*args, **kwargs)

        module.hessian_vector_product = counted

        def restore() -> None:
            module.hessian_vector_product = original
            self.net.zero_grad(set_to_none=True)  # break the create_graph reference cycle

        h = hessian(self.net, FitCriterion(), data=(self.x, self.onehot), cuda=False)
        return h, lambda: count[0], restore

    def pyhessian_top(self, k: int, tol: float, max_iter: int, budget: int | None,
                      seed: int = 0) -> dict:
        prev = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)  # PyHessian draws its vectors in the default dtype
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        h, count, restore = self._pyhessian(budget)
        try:
            vals, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        except OverBudgetError:
            return {"seconds": time.perf_counter() - t0, "values": [], "products": count(),
                    "over_budget": True}
        finally:
            restore()
            torch.set_default_dtype(prev)
        return {"seconds": time.perf_counter() - t0, "values": sorted(vals, reverse=True),
                "products": count()}

    def pyhessian_trace(self, budget: int, seed: int) -> dict:
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        h, count, restore = self._pyhessian(None)
        try:
            samples = h.trace(maxIter=budget, tol=0.0)  # tol 0: a fixed budget of probes
        finally:
            restore()
        return {"seconds": time.perf_counter() - t0, "value": float(np.mean(samples)),
                "products": count()}

    # ------------------------------------------------------------------ curvlinops
    def _curvlinops(self) -> object:
        from curvlinops import HessianLinearOperator

        params = [p for p in self.net.parameters() if p.requires_grad]
        return HessianLinearOperator(self.net, FitCriterion(), params, [(self.x, self.onehot)],
                                     check_deterministic=False)

    def curvlinops_top(self, k: int, tol: float, seed: int = 0) -> dict:
        from scipy.sparse.linalg import LinearOperator, eigsh

        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        count = [0]
        t0 = time.perf_counter()
        Hs = self._curvlinops().to_scipy(dtype=np_dtype)

        def mv(v: np.ndarray) -> np.ndarray:
            count[0] += 1
            return Hs.matvec(v)

        v0 = np.random.default_rng(seed).standard_normal(self.dim).astype(np_dtype)
        vals = eigsh(LinearOperator(Hs.shape, matvec=mv, dtype=np_dtype), k=k, which="LA",
                     tol=tol, v0=v0, return_eigenvectors=False)
        return {"seconds": time.perf_counter() - t0, "values": sorted(vals.tolist(), reverse=True),
                "products": count[0]}

    def curvlinops_trace(self, budget: int, seed: int) -> dict:
        from curvlinops import hutchpp_trace

        torch.manual_seed(seed)
        t0 = time.perf_counter()
        value = float(hutchpp_trace(self._curvlinops(), num_matvecs=budget))
        return {"seconds": time.perf_counter() - t0, "value": value, "products": budget}

    # ------------------------------------------------------------------ one product each
    def product_check(self, peers: list[str]) -> dict[str, float]:
        """Largest relative difference of each peer's H·v from ours, one seeded vector."""
        v = torch.randn(self.dim, 1, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(7)).to(self.dtype)
        ref = self.op.matmat(v)[:, 0].double()
        out: dict[str, float] = {}
        for name in peers:
            if name == "pyhessian":
                h, _, restore = self._pyhessian(None)
                try:
                    hv = importlib.import_module("pyhessian.hessian").hessian_vector_product(
                        h.gradsH, h.params, [t[0] for t in unflatten(v, self.op.shapes)])
                finally:
                    restore()
                got = torch.cat([t.reshape(-1) for t in hv]).double()
            else:
                got = (self._curvlinops() @ v[:, 0]).reshape(-1).double()
            out[name] = float((got - ref).abs().max() / ref.abs().max())
        return out


# ---------------------------------------------------------------------------- sweeps
def sweep_top(prob: Problem, method: str, k: int, levels: list[float], ref: np.ndarray,
              blocks: list[int], max_iter: int, budget: int) -> dict:
    """``{"best": {level: setting, products, error}, "tried": [every run]}``: for each level the
    cheapest (fewest products) setting of ``method``'s knob that meets it, each knob swept from
    loose to tight and stopped once every level is met (or the run is over budget)."""
    if method in ("ours", "ours-mixed"):
        groups = [[{"tol": t, "block": b} for t in OUR_TOLS] for b in blocks]
    elif method == "pyhessian":
        groups = [[{"tol": t, "maxIter": max_iter} for t in PYH_TOLS]]
    else:  # curvlinops and ours-eigsh: eigsh's tol
        groups = [[{"tol": t} for t in EIGSH_TOLS]]
    if prob.dtype != torch.float64 and method not in OURS:  # the peers' float32 solves stall
        groups = [[s for s in g if s["tol"] >= F32_MIN_TOL] for g in groups]
    best: dict[float, dict] = {}
    tried: list[dict] = []
    for group in groups:  # each group: one knob swept from loose to tight
        met: set[float] = set()
        for s in group:
            out = run_top(prob, method, k, s, budget)
            err = rel_err(out["values"], ref)
            over = bool(out.get("over_budget"))
            tried.append({"setting": s, "seconds": out["seconds"], "products": out["products"],
                          "error": err, "over_budget": over})
            print(f"  sweep {method} {s}: {out['products']} products, {out['seconds']:.1f} s, "
                  f"max rel err {err:.1e}{'  (over budget or not converged)' if over else ''}",
                  flush=True)
            for lv in levels:
                if err <= lv:
                    met.add(lv)
                    if lv not in best or out["products"] < best[lv]["products"]:
                        best[lv] = {"setting": s, "products": out["products"], "error": err}
            if over or all(lv in met for lv in levels):
                break  # a tighter tol only costs more
    return {"best": best, "tried": tried}


def run_top(prob: Problem, method: str, k: int, s: dict, budget: int) -> dict:
    if method in ("ours", "ours-mixed"):
        return prob.ours_top(k, s["tol"], s["block"], mixed=method == "ours-mixed")
    if method == "pyhessian":
        return prob.pyhessian_top(k, s["tol"], s["maxIter"], budget)
    if method == "ours-eigsh":
        return prob.ours_eigsh(k, s["tol"])
    return prob.curvlinops_top(k, s["tol"])


def run_trace(prob: Problem, method: str, budget: int, seed: int) -> dict | None:
    if method == "ours-eigsh":
        return None  # the same estimator as ours
    if method in ("ours", "ours-mixed"):
        return prob.ours_trace(budget, seed, mixed=method == "ours-mixed")
    if method == "pyhessian":
        return prob.pyhessian_trace(budget, seed)
    return prob.curvlinops_trace(budget, seed)


# ---------------------------------------------------------------------------- one part (dtype)
def part(prob: Problem, methods: list[str], k: int, ref: np.ndarray, ref_trace: float,
         a: argparse.Namespace) -> dict:
    """The top-k table (sweep, then round-robin timing of each level's settings) and the trace
    table for one dtype."""
    sweeps = {m: sweep_top(prob, m, k, a.levels, ref, a.blocks, a.peer_max_iter, a.budget)
              for m in methods}
    runs: dict[tuple[float, str], list[dict]] = {}
    for _ in range(a.repeats):  # round-robin: every level's settings once per round
        for lv in a.levels:
            for m in methods:
                best = sweeps[m]["best"].get(lv)
                if best is None:
                    continue
                out = run_top(prob, m, k, best["setting"], a.budget)
                out["error"] = rel_err(out["values"], ref)
                runs.setdefault((lv, m), []).append(out)
    top_rows = []
    for lv in a.levels:
        ours = runs.get((lv, "ours"))
        base = statistics.median(r["seconds"] for r in ours) if ours else None
        for m in methods:
            rs = runs.get((lv, m))
            if not rs:
                top_rows.append({"level": lv, "method": m, "met": False})
                continue
            sec = statistics.median(r["seconds"] for r in rs)
            top_rows.append({"level": lv, "method": m, "met": True,
                             "setting": sweeps[m]["best"][lv]["setting"], "seconds": sec,
                             "products": rs[-1]["products"],
                             "error": max(r["error"] for r in rs),
                             "vs_ours": sec / base if base else None})
    trace: dict[tuple[str, int], list[dict]] = {}
    for budget in a.trace_budgets:
        for seed in range(a.seeds):
            for m in methods:  # round-robin over the methods
                out = run_trace(prob, m, budget, seed)
                if out is None:
                    continue
                out["rel_err"] = abs(out["value"] - ref_trace) / abs(ref_trace)
                trace.setdefault((m, budget), []).append(out)
    trace_rows = [{"method": m, "budget": b,
                   "products": statistics.median(r["products"] for r in rs),
                   "mean_abs_rel_err": statistics.fmean(r["rel_err"] for r in rs),
                   "seconds": statistics.median(r["seconds"] for r in rs)}
                  for (m, b), rs in trace.items()]
    return {"dtype": str(prob.dtype).removeprefix("torch."), "sweeps": sweeps,
            "top": top_rows, "trace": trace_rows}


def reference(prob: Problem, k: int, a: argparse.Namespace) -> tuple[dict, dict]:
    """The reference top-k (ours at ``ref_tol``) and trace (long Hutch++), cached under
    ``CACHE`` so that further parts (float32, other methods) reuse the same reference."""
    path = CACHE / (f"ref_n{a.n}_steps{a.train_steps}_seed{a.seed}_k{k}_tol{a.ref_tol:g}_"
                    f"tr{a.ref_trace_products}.json")
    if path.exists() and not a.quick:
        cached = json.loads(path.read_text())
        return cached["top"], cached["trace"]
    t0 = time.perf_counter()
    res = top_eigenpairs(prob.op, k, block=max(a.blocks), tol=a.ref_tol)
    ref = np.sort(res.values.numpy())[::-1].copy()
    top = {"values": ref.tolist(), "tol": a.ref_tol, "products": res.matvecs,
           "seconds": time.perf_counter() - t0,
           "max_rel_residual": float(res.residual_norms.max() / abs(ref[0])),
           "converged": bool(res.all_converged)}
    t0 = time.perf_counter()
    est = hutch_pp(prob.op, matvecs=a.ref_trace_products, seed=10_000)
    trace = {"value": est.value, "stderr": est.stderr, "matvecs": est.matvecs,
             "products": est.matvecs, "seconds": time.perf_counter() - t0}
    if not a.quick:
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"top": top, "trace": trace}) + "\n")
    return top, trace


def run(a: argparse.Namespace) -> dict:
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    model, x, y, state = build(a.n, a.train_steps, a.seed)
    methods, skipped = [], {}
    for m in a.only:
        if m not in OURS and not available(m):
            skipped[m] = f"{EXTERNAL[m]} is not installed (benchmark-only; see the docstring)"
            continue
        methods.append(m)
    k = a.k
    p64 = Problem(model, x, y, torch.float64)
    ones = torch.ones(p64.dim, 1, dtype=torch.float64)
    p64.op.matmat(ones)  # warm-up (first-call costs of torch.func)
    t0 = time.perf_counter()
    p64.op.matmat(ones)
    product_s = time.perf_counter() - t0
    ref_top, ref_tr = reference(p64, k, a)
    ref = np.array(ref_top["values"])
    est = argparse.Namespace(**ref_tr)
    print(f"reference top-{k}: {ref_top['products']} products, {ref_top['seconds']:.0f} s, "
          f"largest residual {ref_top['max_rel_residual']:.1e} × λ_max; reference trace "
          f"{est.value:.6g} ± {est.stderr:.2g} ({est.matvecs} products, "
          f"{ref_tr['seconds']:.0f} s)", flush=True)
    parts = []
    for d in a.dtypes:
        prob = p64 if d == "float64" else Problem(model, x, y, getattr(torch, d))
        check = prob.product_check([m for m in methods if m in EXTERNAL])
        print(f"[{d}] one product of each peer vs ours, max rel. diff: {check}", flush=True)
        res = part(prob, methods, k, ref, est.value, a)
        res["product_check"] = check
        parts.append(res)
    return {"N": int(x.shape[0]), "dim": p64.dim, "state": state, "k": k, "threads": a.threads,
            "seconds_per_product_f64": product_s, "reference_top": ref_top,
            "reference_trace": ref_tr, "methods": methods, "skipped": skipped, "parts": parts,
            "load_start": load0[0], "load_end": os.getloadavg()[0],
            "total_seconds": time.perf_counter() - t_start, "torch": torch.__version__}


# ---------------------------------------------------------------------------- output
def _setting(s: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in s.items())


def print_tables(res: dict, a: argparse.Namespace) -> None:
    print(f"\nResNet-20 + head on digits, N = {res['N']}, {res['dim']} parameters, "
          f"{res['state']}; {res['threads']} thread(s); one float64 product "
          f"{res['seconds_per_product_f64']:.2f} s; load average {res['load_start']:.2f} at the "
          f"start, {res['load_end']:.2f} at the end; {res['total_seconds']:.0f} s in all")
    rt, tr = res["reference_top"], res["reference_trace"]
    print(f"reference top-{res['k']} (ours, tol {rt['tol']:g}, {rt['products']} products): "
          + ", ".join(f"{v:.10g}" for v in rt["values"]))
    print(f"reference trace (Hutch++, {tr['products']} products): {tr['value']:.6g} ± "
          f"{tr['stderr']:.2g} (relative {tr['stderr'] / abs(tr['value']):.1e})")
    for name, why in res["skipped"].items():
        print(f"skipped {name}: {why}")
    for p in res["parts"]:
        print(f"\n### top-{res['k']}, {p['dtype']} (median of {a.repeats}, round-robin)")
        print("| level (max rel. err) | method | cheapest setting | s | products | max rel. err"
              " | × ours |")
        print("|---|---|---|---:|---:|---:|---:|")
        for r in p["top"]:
            if not r["met"]:
                print(f"| {r['level']:.0e} | {r['method']} | not met in the sweep | | | | |")
                continue
            vs = "—" if r["vs_ours"] is None else f"{r['vs_ours']:.2f}"
            print(f"| {r['level']:.0e} | {r['method']} | {_setting(r['setting'])} | "
                  f"{r['seconds']:.1f} | {r['products']} | {r['error']:.1e} | {vs} |")
        print(f"\n### trace, {p['dtype']} (mean |rel. err| over {a.seeds} seeds vs the reference)")
        print("| method | products | mean abs. rel. err | s (median) |")
        print("|---|---:|---:|---:|")
        for r in p["trace"]:
            print(f"| {r['method']} | {r['products']:g} | {r['mean_abs_rel_err']:.1e} | "
                  f"{r['seconds']:.1f} |")
        for m in dict.fromkeys(r["method"] for r in p["trace"]):
            ok = [r for r in p["trace"] if r["method"] == m
                  and r["mean_abs_rel_err"] <= a.trace_target]
            if ok:
                r = min(ok, key=lambda r: r["products"])
                print(f"trace to {a.trace_target:g}: {m} at {r['products']:g} products, "
                      f"{r['seconds']:.1f} s")
            else:
                print(f"trace to {a.trace_target:g}: {m} not reached at the budgets tried")
        print(f"product check vs ours (max rel. diff): {p['product_check']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="digits images per class (N = 10·n)")
    ap.add_argument("--train-steps", type=int, default=200,
                    help="full-batch training steps before the analysis (0: seeded init)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10, help="top eigenvalues wanted")
    ap.add_argument("--only", default=",".join(METHODS))
    ap.add_argument("--dtypes", default="float64", help="float64 and/or float32")
    ap.add_argument("--levels", default="1e-3,1e-6", help="max rel. error levels of the top-k")
    ap.add_argument("--blocks", default="1,2,4,10", help="our block sizes in the sweep")
    ap.add_argument("--peer-max-iter", type=int, default=200, help="PyHessian's maxIter")
    ap.add_argument("--budget", type=int, default=800,
                    help="most products of one PyHessian run in the sweep")
    ap.add_argument("--ref-tol", type=float, default=1e-10)
    ap.add_argument("--ref-trace-products", type=int, default=600)
    ap.add_argument("--trace-budgets", default="30,90", help="products per trace estimate")
    ap.add_argument("--trace-target", type=float, default=1e-2,
                    help="mean |rel. err| of the trace to report the cost of")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per trace budget")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: N = 10, seeded init, top 3, one level, 1 repeat")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.train_steps, a.k, a.levels, a.blocks, a.ref_tol = 1, 0, 3, "1e-2", "3", 1e-6
        a.ref_trace_products, a.trace_budgets, a.seeds, a.repeats = 12, "6", 1, 1
        a.peer_max_iter, a.budget = 20, 200
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    a.dtypes = [s.strip() for s in a.dtypes.split(",") if s.strip()]
    a.levels = [float(s) for s in a.levels.split(",")]
    a.blocks = [int(s) for s in a.blocks.split(",")]
    a.trace_budgets = [int(s) for s in a.trace_budgets.split(",")]
    res = run(a)
    print_tables(res, a)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
