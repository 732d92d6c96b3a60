"""Benchmark: products needed for the top 10 of a spectrum with *simple* eigenvalues, by block size.

Why: the engine's block Krylov solver was built for the UFM's exactly degenerate K² outliers,
where the block must be at least the cluster's multiplicity. A trained network's top eigenvalues
are simple, and there a wide block spends products on a Krylov space of low degree. This table
counts the products each block size needs to reach a residual tolerance, and the largest relative
error of the ten values it returns, beside scipy's ``eigsh`` (ARPACK's implicitly restarted
Lanczos, the solver behind curvlinops' usual recipe) on the same matrix. Products are what a
whole-network Hessian pays for (seconds each), so the counts, not the seconds, are the result.

Matrix: A = Q diag(λ) Qᵀ, dense float64, n = 4000 (``--n``): 13 simple outliers 50, 31, 22, 17,
13, 10.5, 9, 8, 7.2, 6.5, 5.9, 5.3, 4.8 over a bulk of N(0, 0.3²) values and 400 Exp(1) values
(both signs, a heavy right edge: the shape of a trained network's Hessian). Seeded.

    python -m benchmarks.bench_block_size [--n 4000] [--blocks 1,2,4,10,12,16]
                                          [--tols 1e-2,1e-3,1e-4,1e-6] [--quick] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dufm_core.curvature import top_eigenpairs

TOP = [50.0, 31.0, 22.0, 17.0, 13.0, 10.5, 9.0, 8.0, 7.2, 6.5, 5.9, 5.3, 4.8]


def spectrum_matrix(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A, its eigenvalues descending)."""
    rng = np.random.default_rng(seed)
    bulk = np.concatenate([rng.normal(0.0, 0.3, n - len(TOP) - 400), rng.exponential(1.0, 400)])
    lam = np.concatenate([TOP, bulk])
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * lam) @ Q.T, np.sort(lam)[::-1]


def rel_err(values: np.ndarray, ref: np.ndarray, k: int) -> float:
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1][:k]
    return float(np.max(np.abs(v - ref[:k]) / np.abs(ref[:k])))


def run(n: int, blocks: list[int], tols: list[float], k: int = 10) -> dict:
    import scipy.sparse.linalg as sla

    A, ref = spectrum_matrix(n)
    At = torch.from_numpy(A)
    rows = []
    for tol in tols:
        row: dict = {"tol": tol}
        for b in blocks:
            res = top_eigenpairs(At, k, block=b, tol=tol, max_basis=max(48, 3 * b))
            row[f"b={b}"] = {"products": res.matvecs, "err": rel_err(res.values.numpy(), ref, k),
                             "converged": bool(res.converged.all())}
        count = [0]

        def mv(x: np.ndarray, _count: list = count) -> np.ndarray:
            _count[0] += 1
            return A @ x

        op = sla.LinearOperator((n, n), matvec=mv, dtype=np.float64)
        vals = sla.eigsh(op, k=k, which="LA", tol=tol)[0]
        row["eigsh"] = {"products": count[0], "err": rel_err(vals, ref, k), "converged": True}
        rows.append(row)
    return {"n": n, "k": k, "blocks": blocks, "rows": rows}


def print_table(res: dict) -> None:
    heads = [f"b={b}" for b in res["blocks"]] + ["eigsh"]
    print(f"top {res['k']} of a {res['n']}×{res['n']} matrix with simple outliers: products "
          "(max rel. error of the 10 values)")
    print("| tol | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    for row in res["rows"]:
        cells = [f"{row[h]['products']} ({row[h]['err']:.0e})" for h in heads]
        print(f"| {row['tol']:g} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--blocks", default="1,2,4,10,12,16")
    ap.add_argument("--tols", default="1e-2,1e-3,1e-4,1e-6")
    ap.add_argument("--quick", action="store_true", help="n = 600, two tolerances")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    n, tols = (600, [1e-3, 1e-6]) if args.quick else (args.n, [float(t) for t in
                                                              args.tols.split(",")])
    res = run(n, [int(b) for b in args.blocks.split(",")], tols)
    print_table(res)
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
