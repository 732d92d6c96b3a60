"""Benchmark: where a whole-network Hessian product spends its time (issue #16, item 1).

One product is H·V for a block of ``--block`` vectors, H the fit Hessian of a ResNet-20 + head
over N digits images and every parameter (BatchNorm in eval mode). Ways of computing the same
product, timed round-robin in one run so that background load hits them alike:

* ``fwd-over-rev, vmap``: ``jvp`` of ``grad``, vmapped over the block (the engine's way,
  :class:`dufm_core.curvature.network.NetworkHessianOperator`; in float64 on the CPU with its
  channels-last layout and passes of ≤ ``PASS_ROWS`` directions × samples), and the same
  ``before #16`` (row-major, one pass per batch of 512);
* ``fwd-over-rev, loop``: the same, one vector at a time;
* ``rev-over-rev, loop``: double backward (``autograd.grad`` with ``create_graph``, then the
  gradient of ⟨g, v⟩), one vector at a time — what PyHessian does;
* ``rev-over-rev, one graph``: the gradient graph built once per batch, then one backward per
  vector through it (``retain_graph``);

each in float64 and float32 (``--dtypes``). Variants of the engine's way in the same round-robin:
other ``--batch-sizes`` (samples per pass) and ``--chunks`` (directions per vmapped pass), and
``--channels-last`` (the network and images in channels-last memory format). BatchNorm is in eval
mode throughout (the operator's contract). Every row also gives its largest relative difference
from the float64 vmapped product (exactness), and the rate in products (vectors) per second.

    python -m benchmarks.bench_products --n 10 --block 8 --repeats 3
    python -m benchmarks.bench_products --n 10 --block 16 --repeats 2 --threads 1 \
        --batch-sizes 25 --chunks 4 --channels-last
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.func import functional_call

from dufm_core.config import RunConfig
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.curvature.params import unflatten
from dufm_core.data import load_data
from dufm_core.models import fit_term
from dufm_core.networks import build_network, eval_mode


def _grads(op: NetworkHessianOperator, theta: dict, params: list, xb: torch.Tensor,
           yb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The batch's share of the fit gradient, with its graph kept (for a second backward)."""
    z = functional_call(op.model, {**op.frozen, **theta, **op.buffers}, (xb,))
    loss = fit_term(z, yb, op.loss) * (xb.shape[0] / op.N)
    return torch.autograd.grad(loss, params, create_graph=True)


def _double_backward(op: NetworkHessianOperator, one_graph: bool) -> Callable:
    """H·V by reverse-over-reverse on ``op``'s network, parameters and data (eval mode)."""

    def matmat(V: torch.Tensor) -> torch.Tensor:
        V = V.to(op.dtype)
        out = torch.zeros_like(V)
        with eval_mode(op.model):
            for a in range(0, op.N, op.batch_size):
                xb, yb = op.x[a : a + op.batch_size], op.y[a : a + op.batch_size]
                theta = {n: t.clone().requires_grad_(True) for n, t in op.theta.items()}
                params = [theta[n] for n in op.names]

                g = _grads(op, theta, params, xb, yb) if one_graph else None
                for j in range(V.shape[1]):
                    if not one_graph:
                        g = _grads(op, theta, params, xb, yb)
                    vs = unflatten(V[:, j : j + 1], op.shapes)
                    dot = sum((gi * vi[0]).sum() for gi, vi in zip(g, vs, strict=True))
                    hv = torch.autograd.grad(dot, params, retain_graph=one_graph)
                    out[:, j] += torch.cat([h.reshape(-1) for h in hv])
        return out

    return matmat


def _loop(op: NetworkHessianOperator) -> Callable:
    def matmat(V: torch.Tensor) -> torch.Tensor:
        return torch.cat([op.matmat(V[:, j : j + 1]) for j in range(V.shape[1])], dim=1)

    return matmat


def run(n: int, block: int, repeats: int, dtypes: list[str], threads: int,
        batch_sizes: tuple[int, ...] = (), chunks: tuple[int, ...] = (),
        channels_last: bool = False) -> list[dict]:
    torch.set_num_threads(threads)
    cfg = RunConfig.from_dict({"model": "resnet20", "dataset": "digits", "n": n})
    data = load_data(cfg)
    torch.manual_seed(0)
    model = build_network(cfg, device=torch.device("cpu")).double()
    x, y = data.x_train.double(), data.y_train
    ops = {d: NetworkHessianOperator(model, x, y, cfg.loss, "all", chunk=block,
                                     dtype=getattr(torch, d)) for d in dtypes}
    dim = ops[dtypes[0]].dim
    V = torch.randn(dim, block, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ways: dict[str, Callable] = {}
    for d, op in ops.items():
        ways[f"fwd-over-rev, vmap, {d}"] = op.matmat
        ways[f"fwd-over-rev, loop, {d}"] = _loop(op)
        ways[f"rev-over-rev, loop, {d}"] = _double_backward(op, one_graph=False)
        ways[f"rev-over-rev, one graph, {d}"] = _double_backward(op, one_graph=True)
    extra: dict[str, NetworkHessianOperator] = {}
    for d in dtypes:
        dt = getattr(torch, d)
        for bs in batch_sizes:
            extra[f"fwd-over-rev, vmap, batch {bs}, {d}"] = NetworkHessianOperator(
                model, x, y, cfg.loss, "all", batch_size=bs, chunk=block, dtype=dt)
        for c in chunks:
            extra[f"fwd-over-rev, vmap, chunk {c}, {d}"] = NetworkHessianOperator(
                model, x, y, cfg.loss, "all", chunk=c, dtype=dt)
        if channels_last:
            cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
            extra[f"fwd-over-rev, vmap, channels-last, {d}"] = NetworkHessianOperator(
                cl, x.contiguous(memory_format=torch.channels_last), y, cfg.loss, "all",
                chunk=block, dtype=dt)
    if "float64" in ops:  # the engine as it was before issue #16: row-major, 512 per pass
        before = NetworkHessianOperator(model, x, y, cfg.loss, "all", chunk=block)
        before.cpu_f64 = False  # no channels-last, no split of the pass
        before.theta = {k: t.contiguous() for k, t in before.theta.items()}
        before.frozen = {k: t.contiguous() for k, t in before.frozen.items()}
        before.x = before.x.contiguous()
        extra["fwd-over-rev, vmap, before #16 (row-major, one pass), float64"] = before
    for name, op in extra.items():
        ways[name] = op.matmat
    ref = ops["float64"].matmat(V) if "float64" in ops else None
    times: dict[str, list[float]] = {k: [] for k in ways}
    diffs: dict[str, float] = {}
    for r in range(repeats + 1):  # round-robin; the first round is the warm-up
        for name, fn in ways.items():
            t0 = time.perf_counter()
            out = fn(V.to(ops[name.rsplit(", ", 1)[1]].dtype))
            dt = time.perf_counter() - t0
            if r:
                times[name].append(dt)
            if ref is not None and name not in diffs:
                diffs[name] = float(((out.double() - ref).abs().max() / ref.abs().max()).item())
    base = statistics.median(times[next(iter(ways))])
    return [{"way": k, "seconds": statistics.median(v), "vs_engine": statistics.median(v) / base,
             "vectors_per_s": block / statistics.median(v), "max_rel_diff": diffs.get(k),
             "N": int(x.shape[0]), "dim": dim, "block": block, "threads": threads}
            for k, v in times.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10, help="digits images per class (N = 10·n)")
    p.add_argument("--block", type=int, default=8, help="vectors per product")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", default="float64,float32")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch-sizes", default="",
                   help="engine variants: samples per pass, e.g. 25,50")
    p.add_argument("--chunks", default="", help="engine variants: directions per vmapped pass")
    p.add_argument("--channels-last", action="store_true", help="engine variant: channels-last")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()

    def ints(text: str) -> tuple[int, ...]:
        return tuple(int(t) for t in text.split(",") if t.strip())

    rows = run(a.n, a.block, a.repeats, a.dtypes.split(","), a.threads, ints(a.batch_sizes),
               ints(a.chunks), a.channels_last)
    r0 = rows[0]
    print(f"ResNet-20 + head, digits N = {r0['N']}, {r0['dim']} parameters, blocks of "
          f"{r0['block']} vectors, {a.threads} threads; load average {os.getloadavg()[0]:.2f}")
    print("| way | s per block | × the engine's | vectors/s | max rel. diff vs float64 |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        d = "—" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
        print(f"| {r['way']} | {r['seconds']:.2f} | {r['vs_engine']:.2f} | "
              f"{r['vectors_per_s']:.2f} | {d} |")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
