"""Benchmark: what ``log_sharpness`` costs per logged point (issue #14, item 2).

Trains the same run three ways, in this process, with the one training loop of ``kinds.train``:
without the option, with it (each solve warm-started from the previous log point's vector) and
with it but every solve cold, and prints one side-by-side table: training seconds (the last
metrics row's ``time``: training only, no imports or folder creation), the overhead per logged
point, and the Hessian–vector products per logged point. Two models: docs/theory.md case A
(K=3, n=40, d=60, L=5, λ=1e-2, lr 0.2, float64: closed-form K-row products) and the same UFM with
ReLU (torch.func products). The runs are interleaved and repeated; medians are shown.

    python -m benchmarks.bench_sharpness [--repeats 3] [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from dufm_core import kinds, sharpness
from dufm_core.config import RunConfig
from dufm_core.store import open_run
from dufm_core.training import ufm

CASES = {
    "case A (linear MSE)": {"K": 3, "n": 40, "width": 60, "depth": 5, "lam": 1e-2, "lr": 0.2,
                            "steps": 10_000, "log_points": 200},
    "ReLU UFM (MSE)": {"K": 3, "n": 40, "width": 60, "depth": 5, "lam": 1e-2, "lr": 0.2,
                       "activation": "relu", "steps": 2_000, "log_points": 100},
}
QUICK = {"steps": 200, "log_points": 10}
MODES = ("off", "warm", "cold")


class _ColdMeter(sharpness.SharpnessMeter):
    """Every solve from a random start (what the warm start saves)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **{**kw, "warm": False})


def _train(case: dict[str, Any], mode: str, runs: Path) -> dict[str, Any]:
    cfg = RunConfig.from_dict({**case, "log_sharpness": mode != "off", "checkpoint_points": 2})
    meter = ufm.sharpness.SharpnessMeter
    if mode == "cold":
        ufm.sharpness.SharpnessMeter = _ColdMeter  # type: ignore[misc]
    try:
        cpu = time.process_time()
        res = kinds.train(cfg, runs, progress=None)
        cpu = time.process_time() - cpu
    finally:
        ufm.sharpness.SharpnessMeter = meter  # type: ignore[misc]
    rows = open_run(res.run.path).metrics()
    products = [r["sharpness_products"] for r in rows if r.get("sharpness_products")]
    return {"seconds": rows[-1]["time"], "cpu_seconds": cpu, "logged": len(rows),
            "products": statistics.mean(products) if products else 0.0,
            "last_sharpness": rows[-1].get("sharpness"), "final_loss": rows[-1]["loss"]}


def run(repeats: int = 3, quick: bool = False) -> dict[str, Any]:
    """{case: {mode: {seconds (median), all, logged, products, ...}, overhead per point}}."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            case = {**case, **(QUICK if quick else {})}
            got: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            _train({**case, **QUICK}, "warm", Path(tmp) / "warmup")  # one-time imports, caches
            for i in range(repeats):
                for mode in MODES:
                    got[mode].append(_train(case, mode, Path(tmp) / f"{mode}{i}"))
            res: dict[str, Any] = {"steps": case["steps"], "log_points": case["log_points"]}
            for mode in MODES:
                secs = [g["seconds"] for g in got[mode]]
                cpus = [g["cpu_seconds"] for g in got[mode]]
                res[mode] = {**got[mode][-1], "seconds": statistics.median(secs), "all": secs,
                             "cpu_seconds": statistics.median(cpus), "cpu_all": cpus}
            for mode in ("warm", "cold"):
                for key, unit in (("seconds", "ms"), ("cpu_seconds", "cpu_ms")):
                    extra = res[mode][key] - res["off"][key]
                    res[f"{mode}_{unit}_per_point"] = 1e3 * extra / res[mode]["logged"]
            out[name] = res
    return out


def table(res: dict[str, Any]) -> str:
    """The side-by-side table of :func:`run`'s result."""
    lines = ["| model | steps / logged | train s: off, warm, cold | CPU s: off, warm, cold | "
             "ms / point: warm, cold | CPU ms / point: warm, cold | products / point: warm, "
             "cold |", "|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        wall = ", ".join(f"{r[m]['seconds']:.2f}" for m in MODES)
        cpu = ", ".join(f"{r[m]['cpu_seconds']:.2f}" for m in MODES)
        lines.append(
            f"| {name} | {r['steps']} / {r['off']['logged']} | {wall} | {cpu} | "
            f"{r['warm_ms_per_point']:.1f}, {r['cold_ms_per_point']:.1f} | "
            f"{r['warm_cpu_ms_per_point']:.1f}, {r['cold_cpu_ms_per_point']:.1f} | "
            f"{r['warm']['products']:.1f}, {r['cold']['products']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="200 steps, 10 log points, 1 repeat")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = run(1 if args.quick else args.repeats, args.quick)
    print(table(res))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
