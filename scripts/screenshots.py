"""Full-page PNG screenshots of dashboard pages for a runs folder (documentation figures).

    python -m scripts.screenshots --runs /path/to/runs --out docs/figures \
        "real_vs_ufm?run=RUN_ID" "spectrum?run=RUN_ID&layer=1"

Each page is loaded in a headless Chromium; the script waits until the app is idle and the
page's charts are drawn, then saves ``<page>.png`` (or the ``--names`` given).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts import devserver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", required=True, help="runs folder to serve")
    ap.add_argument("--out", default="artifacts/screenshots")
    ap.add_argument("--names", default="", help="comma-separated file names (default: page)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2400, help="viewport height (the page is "
                    "captured at this size: Streamlit scrolls inside its own container)")
    ap.add_argument("--charts", type=int, default=1, help="wait for at least this many charts")
    ap.add_argument("--click", default="", help="text of a button to click first (e.g. "
                                                  "'Analyse every checkpoint')")
    ap.add_argument("pages", nargs="+", help="page paths with query, e.g. 'spectrum?run=X'")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.names.split(",") if args.names else [p.split("?")[0] for p in args.pages]
    server = devserver.start(Path(args.runs))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=devserver.CHROMIUM,
                                        args=devserver.CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            for path, name in zip(args.pages, names, strict=True):
                page.goto(f"{server.url}/{path}")
                page.wait_for_function(
                    f"document.querySelectorAll('{devserver.CHART}').length >= {args.charts}",
                    timeout=600_000)
                page.wait_for_selector(devserver.IDLE, timeout=600_000)
                if args.click and page.get_by_text(args.click).count():
                    page.get_by_text(args.click).first.click()
                    page.wait_for_timeout(1000)
                    page.wait_for_selector(devserver.IDLE, timeout=600_000)
                page.wait_for_timeout(2500)  # let Plotly finish drawing
                page.screenshot(path=str(out / f"{name}.png"))
                print(out / f"{name}.png")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
