"""What figures for a paper cost (issue #13 item 6): drawing a page whose charts carry the
"⬇ SVG · PNG · CSV" row against bare charts, and making the files on a click or for a bundle.

    python -m benchmarks.bench_figure_export            # prints one side-by-side table
    python -m benchmarks.bench_figure_export --quick    # fewer repeats, no bundle with PNG

The page cost is the Python side of placing 12 charts in a Streamlit run (timed inside the
script, median of repeats):
the download buttons hold callables, so no image is made while a page draws. The file costs are
kaleido drawing with the system's Chromium: the process's first image starts the browser, which
then serves every later click and bundle.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from streamlit.testing.v1 import AppTest

RESULT = Path(tempfile.gettempdir()) / "bench_figure_export_page.json"
N_CHARTS = 12


def _page() -> None:
    """A page that places the same 12 figures, in turn, as bare charts and with download rows,
    timing each way inside the script run (AppTest's own polling is not counted). AppTest runs
    this function's source alone: it imports what it uses and names no module global."""
    import json
    import time
    from pathlib import Path

    import streamlit as st

    from ui import charts, figures

    figs = [figures.bars([1.0, 2.0, float(i)], f"Figure {i}", "value") for i in range(12)]
    out: dict[str, list[float]] = {"bare": [], "show": []}
    for rep in range(int(st.query_params.get("repeats", "5"))):
        t = time.perf_counter()
        for i, fig in enumerate(figs):
            st.plotly_chart(fig, config=figures.CONFIG, key=f"b{rep}_{i}")
        out["bare"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for i, fig in enumerate(figs):
            charts.show(st, fig, f"figure {i}", key=f"s{rep}_{i}")
        out["show"].append(time.perf_counter() - t)
    Path(st.query_params["out"]).write_text(json.dumps(out))


def _page_ms(repeats: int) -> dict[str, float]:
    """{way: median ms to place N_CHARTS charts} of the second run of :func:`_page`."""
    import json

    at = AppTest.from_function(_page, default_timeout=120)
    at.query_params["repeats"] = str(repeats)
    at.query_params["out"] = str(RESULT)
    at.run()
    at.run()  # the first run imports and warms
    assert not at.exception, [e.value for e in at.exception]
    got = json.loads(RESULT.read_text())
    return {k: statistics.median(v) * 1e3 for k, v in got.items()}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 3 if args.quick else 7

    from dufm_core import RunConfig, train
    from dufm_core.store import Run
    from ui import bundle, figures
    from ui.figures import export

    rows: list[tuple[str, str]] = []
    page = _page_ms(repeats)
    rows.append((f"place {N_CHARTS} charts, st.plotly_chart", f"{page['bare']:.0f} ms"))
    rows.append((f"place {N_CHARTS} charts, charts.show (+ download rows)",
                 f"{page['show']:.0f} ms"))
    fig = figures.bars([1.0, 2.5, 4.0], "Principal angles", "degrees")
    rows.append(("CSV of one figure", f"{_median_ms(lambda: export.to_csv(fig), repeats):.1f} ms"))
    missing = export.image_engine_missing()
    if missing:
        rows.append(("SVG / PNG", missing))
    else:
        t = time.perf_counter()
        export.to_svg(fig)
        rows.append(("first SVG of the process (starts the browser)",
                     f"{time.perf_counter() - t:.2f} s"))
        rows.append(("SVG of one figure, browser running",
                     f"{_median_ms(lambda: export.to_svg(fig), repeats) / 1e3:.2f} s"))
        rows.append(("PNG 2100 px of one figure, browser running",
                     f"{_median_ms(lambda: export.to_png(fig), repeats) / 1e3:.2f} s"))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = RunConfig(K=3, n=10, width=12, depth=3, steps=500, log_points=20,
                            checkpoint_points=2, name="bench")
            train(cfg, runs_dir=Path(tmp), progress=None)
            run = Run(next(Path(tmp).iterdir()))
            n = len(bundle.run_figures(run))  # also caches the report: not timed below
            t = time.perf_counter()
            size = len(bundle.build_bundle(run))
            rows.append((f"bundle, {n} figures as SVG + CSV",
                         f"{time.perf_counter() - t:.1f} s, {size / 1e3:.0f} kB"))
            if not args.quick:
                t = time.perf_counter()
                size = len(bundle.build_bundle(run, png=True))
                rows.append((f"bundle, {n} figures as SVG + PNG + CSV",
                             f"{time.perf_counter() - t:.1f} s, {size / 1e3:.0f} kB"))
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  time")
    for what, value in rows:
        print(f"{what:<{width}}  {value}")


if __name__ == "__main__":
    main()
