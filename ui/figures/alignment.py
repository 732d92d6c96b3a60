"""Matrices and coefficients of the alignment and gradient views: annotated heatmaps (f_cc',
subspace capture, cosines, the gradient coefficient matrix) and bar charts (principal angles,
coefficients on the top-K² eigenvectors)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout


def heatmap(
    matrix: Sequence[Sequence[float]],
    title: str,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    diverging: bool = False,
    zmin: float | None = None,
    zmax: float | None = None,
    annotate: bool = True,
    colorbar: str = "",
) -> go.Figure:
    """Annotated heatmap; ``diverging`` centres a red–blue scale at 0 (for signed matrices),
    from ±max|z|, or from ±max(|zmin|, |zmax|) where they are given (a scale shared with another
    heatmap: :func:`shared_scale`)."""
    z = np.asarray(matrix, dtype=float)
    kw: dict[str, Any] = {}
    if diverging:
        given = [abs(v) for v in (zmin, zmax) if v is not None]
        bound = max(given) if given else float(np.nanmax(np.abs(z))) if z.size else 1.0
        kw.update(colorscale="RdBu_r", zmid=0.0, zmin=-bound or -1, zmax=bound or 1)
    else:
        kw.update(colorscale="Viridis", zmin=zmin, zmax=zmax)
    text = None
    if annotate and z.size <= 400:
        text = [[f"{v:.3g}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(x_labels) if x_labels else None,
            y=list(y_labels) if y_labels else None,
            text=text,
            texttemplate="%{text}" if text else None,
            colorbar={"title": colorbar},
            **kw,
        )
    )
    fig.update_yaxes(autorange="reversed")
    side = max(300, min(640, 40 * z.shape[0] + 120)) if z.ndim == 2 else 380
    return layout(fig, title, "", "", height=side)


def shared_scale(*matrices: Sequence[Sequence[float]] | np.ndarray) -> dict[str, Any]:
    """One colour scale for heatmaps that are compared (e.g. a measured C beside the predicted
    I/K): the ``heatmap`` keywords ``diverging``, ``zmin`` and ``zmax``. Signed values get a
    scale symmetric about 0 (±the largest |value|); non-negative ones 0 to the largest value."""
    vals = [np.asarray(m, dtype=float).ravel() for m in matrices]
    flat = np.concatenate(vals) if vals else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    top = float(np.abs(flat).max()) if flat.size else 1.0
    if flat.size and flat.min() < 0:
        return {"diverging": True, "zmin": -top, "zmax": top}
    return {"diverging": False, "zmin": 0.0, "zmax": top or 1.0}


def bars(
    values: Sequence[float],
    title: str,
    ylabel: str,
    labels: Sequence[str] | None = None,
    reference: float | None = None,
    reference_label: str = "",
) -> go.Figure:
    """Simple bar chart (e.g. gradient coefficients on the top-K² eigenvectors)."""
    x = list(labels) if labels else list(range(1, len(values) + 1))
    fig = go.Figure(go.Bar(x=x, y=list(values), marker_color=COLORS[0]))
    if reference is not None:
        fig.add_hline(y=reference, line=PRED_STYLE, annotation_text=reference_label)
    return layout(fig, title, "", ylabel)
