"""A run's figure bundle: one .zip with the figures of its analysis pages (SVG, PNG on request),
each figure's data as CSV, the tidy ``metrics.csv`` and ``config.json``, for a paper's figures.

The figures are made from the run's data (``metrics.jsonl``, the report of its last checkpoint,
``series.json`` when complete) by the pages' own lists (``ui/page_figures.py``: the same names,
builders and titles), not by running the pages. :func:`run_figures` lists them;
:func:`build_bundle` writes the zip (all images drawn by one browser, ``ui/figures/export.py``);
:func:`offer` is the button, on a finished run's live view and at the foot of its analysis pages
(:func:`offer_if_finished`, :func:`offer_on_analysis_page`).

Zip layout (``<run id>-figures/`` at the top)::

    README.txt         what is inside, one line per figure with its title
    config.json        the run's config
    metrics.csv        ui/exports.py's tidy metrics (one column per layer value)
    figures/NAME.svg   every figure (and NAME.png at 300 dpi for 7 in when asked)
    data/NAME.csv      the data of figure NAME, one row per point (export.figure_data)
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any

from dufm_core import reports
from dufm_core.report_types import Report
from dufm_core.store import Run, read_json
from ui import exports, page_figures
from ui.figures import export
from ui.page_figures import Named

Progress = Callable[[str, float], None] | None


def _series_figures(run: Run, report: Report) -> Named:
    """The over-training figures of the Spectrum page for every layer, when ``series.json``
    covers every checkpoint (it is never computed here: that is the pages' "Analyse every
    checkpoint")."""
    path = run.analysis_dir / "series.json"
    if not path.is_file():
        return []
    series = read_json(path)
    if series.get("steps") != run.checkpoints():
        return []
    out: Named = []
    for layer in range(1, len(report.layers) + 1):
        out += page_figures.spectrum_series_figures(series, report, layer)
    return out


def run_figures(run: Run, progress: Progress = None) -> Named:
    """[(name, figure)] of every figure of ``run``'s pages: training curves, then the report
    of its last checkpoint (computed and cached, as the Spectrum page does, when not cached
    yet), then the series. Names are unique file stems."""
    out = page_figures.training_figures(run.id, run.metrics(), run.config())
    steps = run.checkpoints()
    if steps:
        report = reports.analyze(
            run, steps[-1],
            progress=(lambda m, f: progress(f"analysing the last checkpoint: {m}", 0.3 * f))
            if progress else None,
        )
        out += page_figures.report_figures(report) + _series_figures(run, report)
    names = [n for n, _ in out]
    assert len(names) == len(set(names)), names
    return out


def build_bundle(run: Run, png: bool = False, progress: Progress = None) -> bytes:
    """The zip of ``run``'s figures (see the module docstring). SVG always and PNG when ``png``,
    if kaleido can draw here; else README.txt says why and the zip holds the data only."""
    def say(msg: str, frac: float) -> None:
        if progress is not None:
            progress(msg, min(max(frac, 0.0), 1.0))

    say("collecting the figures", 0.0)
    named = run_figures(run, progress)
    top = f"{run.id}-figures/"
    missing = export.image_engine_missing()
    images: list[bytes] = []
    fmts = ["svg"] + ["png"] * png
    if missing is None and named:
        jobs = [(fig, fmt) for _, fig in named for fmt in fmts]
        images = export.render_images(
            [f for f, _ in jobs], [m for _, m in jobs],
            progress=lambda done: say(f"drawing figure files: {done}/{len(jobs)}",
                                      0.3 + 0.65 * done / len(jobs)),
        )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        lines = [f"Figures of run {run.id} (DUFM Lab), {time.strftime('%Y-%m-%d %H:%M')}.",
                 "figures/NAME.svg (vector)" + (", NAME.png (2100 px wide: 300 dpi at 7 in)"
                                                if png else "")
                 + "; data/NAME.csv: the figure's points (trace, type, x, y[, z]).",
                 "metrics.csv: one row per logged step, one column per value.", ""]
        if missing:
            lines.insert(1, f"No SVG/PNG in this bundle: {missing}.")
        z.writestr(top + "config.json", json.dumps(run.config().to_dict(), indent=2))
        rows = run.metrics()
        if rows:
            z.writestr(top + "metrics.csv", exports.tidy_metrics(rows).to_csv(index=False))
        it = iter(images)
        for name, fig in named:
            z.writestr(f"{top}data/{name}.csv", export.to_csv(fig))
            for fmt in fmts if images else []:
                z.writestr(f"{top}figures/{name}.{fmt}", next(it))
            lines.append(f"{name}: {fig.layout.title.text or ''}")
        z.writestr(top + "README.txt", "\n".join(lines) + "\n")
    say("done", 1.0)
    return buf.getvalue()


def offer(run: Run, where: Any = None) -> None:
    """The "Download figure bundle" control of a finished run (in ``where``, default the page):
    a button that builds the zip with a progress bar, then its download button."""
    import streamlit as st

    where = where or st
    key = f"bundle_{run.id}"
    c = where.columns([2, 1, 3], vertical_alignment="center")
    png = c[1].checkbox("with PNG", key=key + "_png", help="Also 300-dpi PNGs (slower).")
    if c[0].button("Prepare figure bundle", icon=":material/folder_zip:", key=key + "_make"):
        bar = where.progress(0.0, text="Preparing the figure bundle…")
        try:
            st.session_state[key] = build_bundle(
                run, png=png, progress=lambda m, f: bar.progress(f, text=m))
        except (export.ExportError, OSError, ValueError) as exc:  # ConfigError is a ValueError
            where.error(f"Figure bundle of {run.id}: {exc}")
        finally:
            bar.empty()
    if key in st.session_state:
        c[2].download_button(
            "⬇ Download figure bundle (.zip)", st.session_state[key],
            file_name=f"{run.id}-figures.zip", mime="application/zip", key=key + "_get",
            on_click="ignore", type="primary")
    else:
        c[2].caption("Every figure of this run as SVG (and PNG) with its data as CSV, "
                     "metrics.csv and config.json, in one .zip.")


def offer_if_finished(run: Run) -> None:
    """:func:`offer` for ``run`` once it has finished (queued or running: nothing yet) and kept
    a checkpoint: on its live view (Train) and at the foot of its analysis pages."""
    from ui.live import ACTIVE

    if run.status().get("state") not in ACTIVE and run.checkpoints():
        offer(run)


def offer_on_analysis_page(run: Run) -> None:
    """The foot of an analysis page (Collapse, Spectrum, Alignment, Gradients): every figure of
    the run, of all its layers, in one .zip (:func:`offer_if_finished`)."""
    import streamlit as st

    st.subheader("Figure bundle")
    offer_if_finished(run)
