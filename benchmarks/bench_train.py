"""Benchmark: `python -m dufm_core train` against the hand-written autograd + SGD loop.

Both run as whole processes (interpreter start, imports, training; ours also writes its default
metrics and checkpoints) on docs/theory.md case A: K=3, n=40, d=60, L=5, λ=1e-2, lr 0.2, float64.
Reports wall time, steps per second, the ratio, and when our run reached the closed-form loss.

    python -m benchmarks.bench_train [--steps 10000] [--repeats 3] [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASE_A = ["--K", "3", "--n", "40", "--width", "60", "--depth", "5", "--lr", "0.2"]


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return time.perf_counter() - t0, out.stdout


def run(steps: int, repeats: int) -> dict:
    from dufm_core import theory
    from dufm_core.store import open_run

    pred = theory.predict(3, 40, [0.01] * 5, 0.01)
    hand_t, ours_t, hand_loss, ours_loss, reach = [], [], None, None, None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            t, out = _timed([sys.executable, "benchmarks/hand_loop.py", *CASE_A, "--lam", "1e-2",
                             "--steps", str(steps)])
            hand_t.append(t)
            hand_loss = float(out.strip().splitlines()[-1])
            t, out = _timed([sys.executable, "-m", "dufm_core", "train", *CASE_A, "--lam", "1e-2",
                             "--steps", str(steps), "--runs-dir", str(Path(tmp) / f"r{i}")])
            ours_t.append(t)
            rows = open_run(out.strip().splitlines()[-1]).metrics()
            ours_loss = rows[-1]["loss"]
            hit = [r for r in rows if abs(r["loss"] - pred.loss) <= 1e-6 * pred.loss]
            reach = (hit[0]["step"], hit[0]["time"]) if hit else None
    h, o = statistics.median(hand_t), statistics.median(ours_t)
    return {
        "steps": steps, "repeats": repeats,
        "hand_seconds": h, "ours_seconds": o,
        "hand_steps_per_s": steps / h, "ours_steps_per_s": steps / o, "ratio": h / o,
        "hand_all": hand_t, "ours_all": ours_t,
        "hand_final_loss": hand_loss, "ours_final_loss": ours_loss, "closed_form_loss": pred.loss,
        "reached_closed_form_1e-6": None if reach is None else
        {"step": reach[0], "seconds_in_run": reach[1]},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="200 steps, one repeat (CI smoke run)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    a = p.parse_args()
    steps, repeats = (200, 1) if a.quick else (a.steps, a.repeats)
    res = run(steps, repeats)
    print(f"case A, {steps} GD steps, median of {repeats} whole-process runs")
    print("| loop | wall s | steps/s | final loss |")
    print("|---|---|---|---|")
    print(f"| hand-written autograd + SGD | {res['hand_seconds']:.2f} | "
          f"{res['hand_steps_per_s']:.0f} | {res['hand_final_loss']:.12f} |")
    print(f"| dufm_core train (metrics + checkpoints) | {res['ours_seconds']:.2f} | "
          f"{res['ours_steps_per_s']:.0f} | {res['ours_final_loss']:.12f} |")
    print(f"ratio (hand / ours): {res['ratio']:.2f}x")
    print(f"closed-form loss {res['closed_form_loss']:.12f}; reached to 1e-6 at "
          f"{res['reached_closed_form_1e-6']}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
