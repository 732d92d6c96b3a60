"""Benchmark: dashboard latencies measured in a real browser (headless Chromium + Playwright).

1. From the Launch click on the Train page to the first live metric on screen (case A preset).
2. An analysis page (Spectrum) for a case-A checkpoint whose report is cached: from navigation
   to the charts on screen.
3. The same page for a checkpoint never analysed before (the analysis runs on the request).

Goals (issue #4, this 2-core machine): under 2 s, 1.5 s and 3 s.

    python -m benchmarks.bench_dashboard [--repeats 3] [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from scripts.devserver import CHART, CHROMIUM, CHROMIUM_ARGS, IDLE  # noqa: E402
from scripts.devserver import start as start_server  # noqa: E402


def _charts_after(page, url: str, count: int) -> float:
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function(
        f"document.querySelectorAll('{CHART} .main-svg').length >= {count}", timeout=120_000
    )
    return time.perf_counter() - t0


def run(repeats: int, steps: int) -> dict:
    from playwright.sync_api import sync_playwright

    from dufm_core import RunConfig, train
    from dufm_core.process import launcher
    from dufm_core.reports import report_path

    res: dict[str, list[float]] = {
        "launch_to_first_metric": [],
        "analysis_cached": [],
        "analysis_uncached": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        run = train(
            RunConfig(steps=steps, checkpoint_points=max(4, repeats + 2)),
            runs_dir=runs,
            progress=None,
        ).run
        steps_avail = run.checkpoints()
        server = start_server(runs, env={"DUFM_LAUNCHER_IDLE": "300", "DUFM_MAX_JOBS": "4"})
        url = server.url
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)  # warm-up: first session, starts the launcher
                page.wait_for_selector(IDLE, timeout=90_000)
                deadline = time.time() + 60
                while not launcher.ping(runs) and time.time() < deadline:
                    time.sleep(0.1)
                for i in range(repeats):
                    # 1. Launch -> first metric
                    page.goto(f"{url}/train")
                    page.wait_for_selector(IDLE, timeout=90_000)
                    time.sleep(0.5)
                    t0 = time.perf_counter()
                    page.get_by_role("button", name="Launch").click()
                    page.get_by_text(" · loss ", exact=False).first.wait_for(timeout=60_000)
                    res["launch_to_first_metric"].append(time.perf_counter() - t0)
                    # 2./3. uncached then cached analysis of checkpoint i of the case-A run
                    step = steps_avail[-1 - i]
                    report_path(run, step).unlink(missing_ok=True)
                    target = f"{url}/spectrum?run={run.id}&step={step}&layer=3"
                    res["analysis_uncached"].append(_charts_after(page, target, 2))
                    page.goto(f"{url}/theory_explorer")
                    page.wait_for_selector(IDLE, timeout=90_000)
                    res["analysis_cached"].append(_charts_after(page, target, 2))
                browser.close()
        finally:
            server.stop()
    return {k: {"median": statistics.median(v), "all": v} for k, v in res.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat on a short run (smoke test)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    res = run(1 if a.quick else a.repeats, 500 if a.quick else 10_000)
    goals = {"launch_to_first_metric": 2.0, "analysis_cached": 1.5, "analysis_uncached": 3.0}
    print("| measurement (real browser) | median s | all | goal s |")
    print("|---|---|---|---|")
    for k, v in res.items():
        runs = ", ".join(f"{x:.2f}" for x in v["all"])
        print(f"| {k} | {v['median']:.2f} | {runs} | < {goals[k]} |")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
