"""Placing a figure on a page: the chart with the shared options and a compact download row,
"⬇ SVG · PNG · CSV" (the figure for a paper, ``ui/figures/export.py``).

Every chart of the dashboard goes through :func:`show` (pages and ``ui/`` never call
``st.plotly_chart`` themselves). The files are made when their button is clicked (Streamlit's
deferred downloads, a callable as the button's data), so drawing a page renders no image: a page
with twenty charts costs twenty small buttons rows, not twenty browser renders. Without kaleido or
a browser the SVG and PNG buttons are disabled with the reason as their help, and the chart's
camera button still saves a print-size PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ui.figures import export


def show(
    container: Any,
    fig: go.Figure,
    name: str,
    data: pd.DataFrame | None = None,
    key: str | None = None,
) -> None:
    """Draw ``fig`` in ``container`` (``st`` or a column) and, under it, download buttons for
    ``<name>.svg``, ``<name>.png`` (print resolution) and ``<name>.csv`` (``data``, else the
    figure's traces as a long table). ``key`` is the chart's widget key; the buttons' keys derive
    from it (or from ``name``), so give each chart of a page its own name or key."""
    stem = export.file_stem(name)
    base = key or stem
    container.plotly_chart(fig, config=export.chart_config(stem, fig), key=key)
    missing = export.image_engine_missing()
    row = container.container(horizontal=True, gap="small", key=f"dl_{base}")
    common: dict[str, Any] = {"type": "tertiary", "on_click": "ignore"}
    row.download_button(
        "⬇ SVG",
        data=lambda: export.to_svg(fig),
        file_name=f"{stem}.svg",
        mime="image/svg+xml",
        key=f"{base}_svg",
        disabled=missing is not None,
        help=missing or "The figure as a vector SVG (text stays text).",
        **common,
    )
    row.download_button(
        "PNG",
        data=lambda: export.to_png(fig),
        file_name=f"{stem}.png",
        mime="image/png",
        key=f"{base}_png",
        disabled=missing is not None,
        help=missing
        or f"The figure as a PNG, {export.PRINT_WIDTH * export.PRINT_SCALE} px wide "
        "(300 dpi at 7 inches).",
        **common,
    )
    row.download_button(
        "CSV",
        data=lambda: export.to_csv(fig, data),
        file_name=f"{stem}.csv",
        mime="text/csv",
        key=f"{base}_csv",
        help="The figure's data, one row per point.",
        **common,
    )


def show_in_rows(
    named: Sequence[tuple[str, go.Figure]], prefix: str = "", suffix: str = "", per_row: int = 2
) -> None:
    """Each ``(name, figure)`` of ``named`` (a page's list, ``ui/page_figures.py``) with
    :func:`show`, ``per_row`` to a row of the page; ``prefix + name + suffix`` is both the file
    stem and the chart's key, so a page showing one list twice tells them apart by ``suffix``."""
    import streamlit as st

    for i in range(0, len(named), per_row):
        for column, (name, fig) in zip(st.columns(per_row), named[i:i + per_row], strict=False):
            show(column, fig, prefix + name + suffix, key=prefix + name + suffix)
