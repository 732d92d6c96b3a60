"""A figure as files for a paper: SVG, PNG at print resolution, and its data as CSV.

Static images come from kaleido (requirements.txt), which drives a headless Chromium (the
system's ``chromium``/``google-chrome``; nothing is downloaded). Where kaleido or a browser is
missing, :func:`image_engine_missing` says why in one line and the dashboard offers the CSV and
the chart's camera button (:func:`chart_config`, a print-size PNG made in the visitor's browser).

Print size: a figure is laid out :data:`PRINT_WIDTH` px wide (its own height) and a PNG drawn at
:data:`PRINT_SCALE` times that, 2100 px: 300 dpi across a 7-inch column. An SVG is vector and
keeps the layout size. Nothing here imports Streamlit; rendering is on demand (a click), never
while a page is drawn. One browser serves the whole process (:class:`_Renderer`): a click's
SVG takes a fraction of a second once it runs.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import importlib.util
import io
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

PRINT_WIDTH = 700  # px: the layout width of an exported figure
PRINT_SCALE = 3  # a PNG is PRINT_WIDTH·PRINT_SCALE = 2100 px wide: 300 dpi at 7 inches
DEFAULT_HEIGHT = 380  # px: ui.figures.common.layout's default, for a figure without a height
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
RENDER_TIMEOUT = 300.0  # s: a batch of images that takes longer is abandoned with an error
START_TIMEOUT = 60.0  # s: starting (or closing) the browser


class ExportError(RuntimeError):
    """A figure could not be drawn as an image (no kaleido, no browser, a render failure); the
    message is one line for the page."""


def file_stem(name: str) -> str:
    """``name`` as a safe file name stem: lower case, ``[a-z0-9_-]``, runs of anything else as
    one ``_`` (``"Layer-2 spectrum (γ)"`` → ``layer-2_spectrum``); ``figure`` if nothing is
    left."""
    stem = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_-")
    return stem[:80] or "figure"


@functools.cache
def _browser_found() -> bool:
    """Whether kaleido will find a browser: where its own lookup looks (``BROWSER_PATH``, a
    browser it downloaded, the usual names and places), else :data:`BROWSERS` on the PATH.
    Asked once per process (a page asks for every chart)."""
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
        return bool(found) and os.access(found, os.X_OK)
    except Exception:  # another choreographer: look on the PATH ourselves
        return any(shutil.which(b) for b in BROWSERS)


def image_engine_missing() -> str | None:
    """None when SVG/PNG export works here; else the one-line reason (what to install)."""
    if importlib.util.find_spec("kaleido") is None:
        return "SVG/PNG files need kaleido (pip install -r requirements.txt)"
    if not _browser_found():
        return "SVG/PNG files need Chromium or Chrome on this machine (kaleido draws with it)"
    return None


def size_of(fig: go.Figure) -> tuple[int, int]:
    """(width, height) in px of ``fig`` as exported: :data:`PRINT_WIDTH` unless the figure sets
    its own width, and its layout height."""
    width = fig.layout.width or PRINT_WIDTH
    height = fig.layout.height or DEFAULT_HEIGHT
    return int(width), int(height)


def chart_config(name: str, fig: go.Figure | None = None) -> dict[str, Any]:
    """Plotly's chart options for ``fig``: no logo, and the camera button saving
    ``<name>.png`` at print resolution (the browser draws it; no kaleido needed)."""
    width, height = size_of(fig) if fig is not None else (PRINT_WIDTH, DEFAULT_HEIGHT)
    return {
        "displaylogo": False,
        "toImageButtonOptions": {
            "format": "png",
            "filename": file_stem(name),
            "width": width,
            "height": height,
            "scale": PRINT_SCALE,
        },
    }


def _opts(fig: go.Figure, fmt: str) -> dict[str, Any]:
    width, height = size_of(fig)
    return {"format": fmt, "width": width, "height": height,
            "scale": PRINT_SCALE if fmt == "png" else 1}  # fmt: skip


class _Renderer:
    """One headless browser kept for the process (kaleido on an event loop of its own thread):
    the first image starts it (about 2 s), later ones take a fraction of a second. Callers in
    any thread (Streamlit's download callbacks, a page's bundle) share it safely: each image
    is a coroutine handed to that loop, waited for with a deadline. A failed or late image
    drops the browser; the next call starts a fresh one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._browser: Any = None

    def _start(self) -> tuple[asyncio.AbstractEventLoop, Any]:
        with self._lock:
            if self._browser is None:
                import kaleido

                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="figure-export",
                                 daemon=True).start()  # fmt: skip
                browser = kaleido.Kaleido(n=1)
                try:
                    asyncio.run_coroutine_threadsafe(browser.open(), loop).result(START_TIMEOUT)
                except BaseException:
                    self._drop(loop, browser)
                    raise
                self._loop, self._browser = loop, browser
            return self._loop, self._browser

    def _drop(self, loop: asyncio.AbstractEventLoop, browser: Any) -> None:
        """Close ``browser`` and stop ``loop`` without waiting (a stuck browser must not hang
        the caller)."""
        async def shut() -> None:
            try:
                await asyncio.wait_for(browser.close(), START_TIMEOUT)
            finally:
                loop.stop()

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(shut(), loop)

    def reset(self) -> None:
        """Forget the browser (closed in the background); the next image starts another."""
        with self._lock:
            if self._browser is not None and self._loop is not None:
                self._drop(self._loop, self._browser)
            self._loop = self._browser = None

    def draw(self, fig: go.Figure, fmt: str, timeout: float) -> bytes:
        loop, browser = self._start()
        future = asyncio.run_coroutine_threadsafe(browser.calc_fig(fig, opts=_opts(fig, fmt)),
                                                  loop)  # fmt: skip
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            self.reset()
            raise


    def close(self) -> None:
        """Close the browser and wait for it (at exit: before its profile folder is removed)."""
        with self._lock:
            loop, browser = self._loop, self._browser
            self._loop = self._browser = None
        if loop is not None and browser is not None and loop.is_running():
            with contextlib.suppress(Exception):  # a broken browser at exit: nothing to do
                asyncio.run_coroutine_threadsafe(browser.close(), loop).result(START_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)


_RENDERER = _Renderer()
atexit.register(_RENDERER.close)


def render_images(
    figs: Sequence[go.Figure],
    fmts: Sequence[str],
    progress: Callable[[int], None] | None = None,
) -> list[bytes]:
    """Each ``figs[i]`` drawn as ``fmts[i]`` (``svg`` or ``png``) by the process's browser
    (:class:`_Renderer`), in the caller's thread; ``progress(images done)`` after each. The
    whole batch has :data:`RENDER_TIMEOUT` s. Raises :class:`ExportError` with a one-line
    reason."""
    if reason := image_engine_missing():
        raise ExportError(reason)
    deadline = time.monotonic() + RENDER_TIMEOUT
    out: list[bytes] = []
    for fig, fmt in zip(figs, fmts, strict=True):
        left = deadline - time.monotonic()
        try:
            out.append(_RENDERER.draw(fig, fmt, max(left, 1.0)))
        except (TimeoutError, concurrent.futures.TimeoutError):
            raise ExportError(
                f"drawing {len(figs)} figure(s) took over {RENDER_TIMEOUT:.0f} s"
            ) from None
        except Exception as exc:  # kaleido/choreographer raise many kinds: report one line
            first = str(exc).strip().splitlines()
            raise ExportError(
                f"drawing the figure failed: {first[0] if first else type(exc).__name__}"
            ) from None
        if progress is not None:
            progress(len(out))
    return out


def to_svg(fig: go.Figure) -> bytes:
    """``fig`` as an SVG file (vector; text stays text)."""
    return render_images([fig], ["svg"])[0]


def to_png(fig: go.Figure) -> bytes:
    """``fig`` as a PNG file at print resolution (:data:`PRINT_SCALE` × its layout size)."""
    return render_images([fig], ["png"])[0]


def _values(v: Any) -> list[Any]:
    if v is None:
        return []
    return [list(r) if isinstance(r, (list, tuple)) else r for r in list(v)]


def figure_data(fig: go.Figure) -> pd.DataFrame:
    """The data drawn in ``fig`` as one long table, one row per point: ``trace`` (its legend
    name, else ``trace<i>``), ``type``, ``x``, ``y`` and, for a heatmap, ``z`` (one row per
    cell, ``x``/``y`` its column and row labels). A trace with only ``y`` gets x = 0, 1, …; a
    histogram's raw samples are its ``x`` (or ``y``)."""
    rows: list[dict[str, Any]] = []
    for i, tr in enumerate(fig.data):
        name = tr.name if getattr(tr, "name", None) else f"trace{i + 1}"
        kind = tr.type
        z = getattr(tr, "z", None)
        if z is not None:
            grid = [list(r) for r in z]
            xs = _values(getattr(tr, "x", None)) or list(range(len(grid[0]) if grid else 0))
            ys = _values(getattr(tr, "y", None)) or list(range(len(grid)))
            for r, row in enumerate(grid):
                for c, val in enumerate(row):
                    rows.append({"trace": name, "type": kind, "x": xs[c], "y": ys[r], "z": val})
            continue
        xs = _values(getattr(tr, "x", None))
        ys = _values(getattr(tr, "y", None))
        if kind == "histogram":
            for v in xs or ys:
                rows.append({"trace": name, "type": kind, "x" if xs else "y": v})
            continue
        n = max(len(xs), len(ys))
        xs = xs or list(range(n))
        for j in range(n):
            rows.append({"trace": name, "type": kind, "x": xs[j] if j < len(xs) else None,
                         "y": ys[j] if j < len(ys) else None})  # fmt: skip
    has_z = any("z" in r for r in rows)
    return pd.DataFrame.from_records(rows, columns=["trace", "type", "x", "y"] + ["z"] * has_z)


def to_csv(fig: go.Figure, data: pd.DataFrame | None = None) -> bytes:
    """``data`` (a page's own table for the figure) or :func:`figure_data` as CSV bytes."""
    frame = figure_data(fig) if data is None else data
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()
