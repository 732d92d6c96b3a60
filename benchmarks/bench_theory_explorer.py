"""Benchmark: how fast the Theory explorer answers a slider move, in a real browser.

A ``streamlit run app.py`` server (scripts/devserver.py) over an empty runs folder, and a headless
Chromium (Playwright) on ``/theory_explorer``. Each move focuses the handle of the ``log10 λ_W``
or ``log10 λ_H`` slider and presses an arrow key (one slider step, one rerun), and is timed from
the key press until the page has answered it: the script is idle again, the metrics show new
values and the browser has painted two frames (Plotly redraws synchronously on new data). The
moves stay below λ_crit (γ changes with every step) and alternate between the two sliders and
directions, so that no two consecutive states are equal.

Beside the browser number, the same page runs in Streamlit's ``AppTest`` (no browser, no
websocket): the time of the page script alone for the same kind of move. The difference is
transport and drawing in the browser.

Goal (issue #13): under 300 ms per move on an idle machine. The machine's busy cores during
the moves are recorded: the VM is shared.

    python -m benchmarks.bench_theory_explorer [--moves 20] [--quick] [--wait-idle S] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.bench_sweep import _cpu_jiffies, wait_idle
from scripts.devserver import CHROMIUM, CHROMIUM_ARGS, IDLE
from scripts.devserver import start as start_server

ROOT = Path(__file__).resolve().parents[1]
PAGE = "theory_explorer"
SLIDERS = ("λ_W", "λ_H")  # label fragments of the two sliders moved
# the page's answer is in: idle script, and the metric values differ from before the move
_ANSWERED = """(before) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    const now = [...document.querySelectorAll('[data-testid="stMetricValue"]')]
        .map(e => e.innerText).join('|');
    return now !== before;
}"""
_METRICS = """() => [...document.querySelectorAll('[data-testid="stMetricValue"]')]
    .map(e => e.innerText).join('|')"""
_TWO_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def _summary(values: list[float]) -> dict:
    """Median, 90th percentile, min and max in milliseconds, and every value."""
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return {
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(p90, 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
        "all_ms": [round(v * 1000, 1) for v in values],
    }


def _plan(moves: int) -> list[tuple[str, str]]:
    """(slider, key) for every move: λ_W right, λ_H right, λ_W left, λ_H left, … (a small walk
    around the default point, which is well below λ_crit)."""
    cycle = [(SLIDERS[0], "ArrowRight"), (SLIDERS[1], "ArrowRight"),
             (SLIDERS[0], "ArrowLeft"), (SLIDERS[1], "ArrowLeft")]  # fmt: skip
    return [cycle[i % len(cycle)] for i in range(moves)]


def browser_moves(moves: int, warmup: int = 4) -> dict:
    """Time ``moves`` slider moves in headless Chromium (after ``warmup`` untimed ones)."""
    from playwright.sync_api import sync_playwright

    res: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        server = start_server(runs)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                t0 = time.perf_counter()
                page.goto(f"{server.url}/{PAGE}")
                page.wait_for_function(
                    "document.querySelectorAll('[data-testid=\"stMetricValue\"]').length >= 1",
                    timeout=120_000,
                )
                page.wait_for_selector(IDLE, timeout=120_000)
                first_load = time.perf_counter() - t0
                busy0, total0 = 0, 0
                for i, (label, key) in enumerate(_plan(warmup + moves)):
                    if i == warmup:
                        busy0, total0 = _cpu_jiffies()
                    slider = page.locator('[data-testid="stSlider"]', has_text=label).first
                    slider.get_by_role("slider").first.focus()
                    before = page.evaluate(_METRICS)
                    t = time.perf_counter()
                    page.keyboard.press(key)
                    page.wait_for_function(_ANSWERED, arg=before, polling="raf", timeout=60_000)
                    page.evaluate(_TWO_FRAMES)
                    if i >= warmup:
                        res.append(time.perf_counter() - t)
                busy1, total1 = _cpu_jiffies()
                browser.close()
        finally:
            server.stop()
    cores = os.cpu_count() or 1
    busy = (busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else 0.0
    return {"first_load_s": round(first_load, 2), "busy_cores_during": round(busy, 2),
            **_summary(res)}  # fmt: skip


def script_moves(moves: int) -> dict:
    """The page script alone (Streamlit ``AppTest``, no browser) for the same moves."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "pages" / f"{PAGE}.py"), default_timeout=60)
    at.run()
    res = []
    for i, (label, key) in enumerate(_plan(moves + 2)):
        slider = next(s for s in at.slider if label in s.label)
        step = float(slider.step)
        value = float(slider.value) + (step if key == "ArrowRight" else -step)
        t = time.perf_counter()
        slider.set_value(value).run()
        if i >= 2:
            res.append(time.perf_counter() - t)
        if at.exception:
            raise RuntimeError(f"the page failed: {at.exception[0].value}")
    return _summary(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="4 moves (smoke test)")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for an idle machine",
    )
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    moves = 4 if a.quick else a.moves
    idle = wait_idle(a.wait_idle) if a.wait_idle else None
    res = {
        "busy_cores_before": idle,
        "script": script_moves(moves),
        "browser": browser_moves(moves, warmup=2 if a.quick else 4),
    }
    print(
        f"busy cores before: {idle}; during the browser moves: "
        f"{res['browser']['busy_cores_during']}; first page load "
        f"{res['browser']['first_load_s']} s"
    )
    print("| per slider move | median ms | p90 ms | min–max ms |")
    print("|---|---:|---:|---|")
    for k in ("script", "browser"):
        v = res[k]
        print(f"| {k} | {v['median_ms']} | {v['p90_ms']} | {v['min_ms']}–{v['max_ms']} |")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
