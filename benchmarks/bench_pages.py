"""Benchmark: how long each dashboard page takes in a real browser, and where the time goes.

Measured with headless Chromium (Playwright) against ``streamlit run app.py`` on localhost:

1. **Cold first page**: a freshly started server (accepting connections), the first visit to
   Overview, from navigation until the page is drawn and its script has finished. It includes
   the first script run of the process (imports of torch, the engine, Plotly).
2. **Each analysis page of a cached checkpoint** (Spectrum, Alignment, Gradients, Collapse &
   weights) for a theory.md case-A run: from navigation until every chart is drawn and the script
   has finished. Warm server, report already in the cache.
3. **Real network vs UFM** for a small ResNet-20-on-digits run, report cached.

2 and 3 are measured twice: as a link opened in the tab (a full page load: Streamlit's
JavaScript, a new session, the page) and as a click in the sidebar from Overview, which is how a
user moves between pages (no reload; the run, step and layer pickers keep their values).

Where the time goes: the same page is run headless with Streamlit's ``AppTest`` (the page's
Python: engine calls, figure building and Streamlit's element serialisation, no browser), and
the browser's share (websocket transport, React rendering, Plotly drawing the SVG) is the
difference. Goals (issue #13, idle machine): cold first page < 3 s, cached analysis page < 1 s,
Real network vs UFM < 3 s.

    python -m benchmarks.bench_pages [--repeats 3] [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from scripts.devserver import CHART, CHROMIUM, CHROMIUM_ARGS, IDLE  # noqa: E402
from scripts.devserver import start as start_server  # noqa: E402

ANALYSIS = ["spectrum", "alignment", "gradients", "collapse"]
# page → (sidebar label, the page's title)
NAV = {"spectrum": ("Spectrum", "Hessian spectrum"),
       "alignment": ("Alignment", "Eigenvector alignment"),
       "gradients": ("Gradients", "Gradient coefficients"),
       "collapse": ("Collapse & weights", "Collapse & weights"),
       "real_vs_ufm": ("Real network vs UFM", "Real network vs UFM")}
GOALS = {"cold first page (Overview)": 3.0, "Real network vs UFM (digits)": 3.0}


def _charts_drawn(page) -> None:
    """Wait until every chart on the (finished) page has drawn its SVG."""
    n = len(page.query_selector_all(CHART))
    if n:
        page.wait_for_function(
            f"document.querySelectorAll('{CHART} .main-svg').length >= {n}", timeout=120_000
        )


def _drawn(page, url: str, ready_text: str | None = None) -> float:
    """Seconds from ``page.goto(url)`` until the script has finished and every chart on the page
    has its SVG (the count is read once the script is idle, then waited for)."""
    t0 = time.perf_counter()
    page.goto(url)
    if ready_text:
        page.get_by_text(ready_text, exact=False).first.wait_for(timeout=120_000)
    # the script state flips to "running" shortly after load: wait until it has run and stopped
    page.wait_for_function(
        "(() => { const a = document.querySelector('[data-testid=\"stApp\"]');"
        " return a && a.getAttribute('data-test-script-state') === 'notRunning'"
        " && document.querySelectorAll('[data-testid=\"stMain\"] h1').length > 0; })()",
        timeout=120_000,
    )
    _charts_drawn(page)
    return time.perf_counter() - t0


def _navigated(page, nav_label: str, title: str) -> float:
    """Seconds from a click on the sidebar's ``nav_label`` (navigation inside the app: no page
    reload, run/step/layer kept by the pickers) until the page titled ``title`` has finished its
    script and drawn every chart."""
    t0 = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_text(nav_label, exact=True).click()
    page.wait_for_function(
        "(() => { const h = document.querySelector('[data-testid=\"stMain\"] h1');"
        " const a = document.querySelector('[data-testid=\"stApp\"]');"
        f" return h && h.textContent.includes({json.dumps(title)}) && a"
        " && a.getAttribute('data-test-script-state') === 'notRunning'; })()",
        timeout=120_000,
    )
    _charts_drawn(page)
    return time.perf_counter() - t0


def _python_only(runs: Path, page: str, query: dict[str, str], repeats: int) -> float:
    """Median seconds of the page's script under ``AppTest`` (no browser), warm process."""
    from streamlit.testing.v1 import AppTest

    os.environ["DUFM_RUNS_DIR"] = str(runs)
    times = []
    for i in range(repeats + 1):
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=120)
        for k, v in query.items():
            at.query_params[k] = v
        t0 = time.perf_counter()
        at.run()
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].message}")
        if i:  # the first run pays the imports
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _make_runs(runs: Path, quick: bool) -> tuple[str, int, str, int]:
    """A case-A run and a small ResNet-20-on-digits run, both analysed (reports cached)."""
    from dufm_core import RunConfig, reports, train
    from dufm_core.presets import PRESETS

    ufm = train(RunConfig.from_dict({**PRESETS["paper-linear"],
                                     "steps": 500 if quick else 10_000}),
                runs_dir=runs, progress=None).run
    real = train(RunConfig.from_dict({**PRESETS["resnet20-digits"], "n": 10,
                                      "steps": 4 if quick else 40}),
                 runs_dir=runs, progress=None).run
    s_ufm, s_real = ufm.checkpoints()[-1], real.checkpoints()[-1]
    reports.analyze(ufm, s_ufm)
    reports.analyze_series(ufm)
    reports.analyze(real, s_real)
    return ufm.id, s_ufm, real.id, s_real


def url_of(base: str, page: str, query: dict[str, str]) -> str:
    return f"{base}/{page}?" + "&".join(f"{k}={v}" for k, v in query.items())


def run(repeats: int, quick: bool) -> dict[str, dict]:
    from playwright.sync_api import sync_playwright

    res: dict[str, list[float]] = {}
    python: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        ufm, s_ufm, real, s_real = _make_runs(runs, quick)
        targets = {f"{p} (case A, cached)": (p, {"run": ufm, "step": str(s_ufm), "layer": "3"})
                   for p in ANALYSIS}
        targets["Real network vs UFM (digits)"] = ("real_vs_ufm",
                                                   {"run": real, "step": str(s_real)})
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for _ in range(repeats):  # a fresh server per repeat: the cold first page
                server = start_server(runs, env={"DUFM_LAUNCHER_IDLE": "300"})
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    res.setdefault("cold first page (Overview)", []).append(
                        _drawn(page, server.url + "/"))
                    for name, (pg, q) in targets.items():
                        url = url_of(server.url, pg, q)
                        _drawn(page, url)  # warm-up: the page's first run in this server
                        page.goto(f"{server.url}/theory_explorer")
                        page.wait_for_selector(IDLE, timeout=90_000)
                        res.setdefault(name, []).append(_drawn(page, url))
                    # in-app navigation: from Overview to the run's pages by the sidebar
                    for name, (pg, _) in targets.items():
                        page.goto(url_of(server.url, *targets[name]))
                        page.wait_for_selector(IDLE, timeout=90_000)
                        page.get_by_test_id("stSidebarNav").get_by_text(
                            "Overview", exact=True).click()
                        page.wait_for_selector(IDLE, timeout=90_000)
                        time.sleep(0.3)
                        res.setdefault(name + ", sidebar click", []).append(
                            _navigated(page, *NAV[pg]))
                    page.close()
                finally:
                    server.stop()
            browser.close()
        for name, (pg, q) in targets.items():
            python[name] = _python_only(runs, pg, q, repeats)
    out = {}
    for k, v in res.items():
        out[k] = {"median": statistics.median(v), "all": v, "python": python.get(k)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one repeat, short runs (smoke test)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    res = run(1 if a.quick else a.repeats, a.quick)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| page (real browser) | median s | all | page's Python (AppTest) s | browser s | goal |")
    print("|---|---:|---|---:|---:|---|")
    for k, v in res.items():
        goal = GOALS.get(k.removesuffix(", sidebar click"), 1.0)
        py = v["python"]
        py_s = "—" if py is None else f"{py:.2f}"
        br_s = "—" if py is None else f"{max(v['median'] - py, 0.0):.2f}"
        runs = ", ".join(f"{x:.2f}" for x in v["all"])
        print(f"| {k} | {v['median']:.2f} | {runs} | {py_s} | {br_s} | < {goal:g} s |")
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
