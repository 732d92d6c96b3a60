"""Hessian spectra: histograms (raw or pre-binned), the top eigenvalues beside their predicted
values, spectral densities, and a real network's head layers against the UFM's K² outliers."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dufm_core.report_types import Report
from ui.figures.common import COLORS, PRED_STYLE, block_label, layout, positive

PRED_LABEL_GAP = 0.2  # labels of predictions closer than this fraction of the x axis are merged
PRED_LABEL_LEVELS = (1.0, 0.92)  # paper heights of labels, alternated between close neighbours


def pred_label_groups(xs: Sequence[float], span: float) -> list[list[int]]:
    """Indices of the sorted x positions ``xs`` in runs whose neighbours are less than
    :data:`PRED_LABEL_GAP` × ``span`` apart: each run gets one label, so that predicted values
    that coincide or nearly do (e.g. CE's 1, K−1 and mini-bulk values) are not overprinted."""
    gap = PRED_LABEL_GAP * span
    groups: list[list[int]] = []
    for i in sorted(range(len(xs)), key=lambda i: xs[i]):
        if groups and xs[i] - xs[groups[-1][-1]] < gap:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def mark_predictions(
    fig: go.Figure, values: Sequence[float], xs: Sequence[float], span: float
) -> None:
    """A dashed line at each x of ``xs`` (the predicted ``values``) and one "pred …" label per
    group of close lines (:func:`pred_label_groups`); a group's label lists its values (the first
    and last, with their count, past three) and neighbouring labels alternate in height."""
    for x in xs:
        fig.add_vline(x=x, line=PRED_STYLE)
    last_x, level = -math.inf, 0
    for group in pred_label_groups(xs, span):
        vals = sorted((values[i] for i in group), reverse=True)
        text = " · ".join(f"{v:.4g}" for v in vals) if len(vals) <= 3 else (
            f"{vals[0]:.4g} … {vals[-1]:.4g} ({len(vals)} values)")
        x0 = min(xs[i] for i in group)
        level = (level + 1) % 2 if x0 - last_x < 2 * PRED_LABEL_GAP * span else 0
        last_x = max(xs[i] for i in group)
        fig.add_annotation(x=x0, y=PRED_LABEL_LEVELS[level], xref="x", yref="paper",
                           text=f"pred {text}", showarrow=False, xanchor="left",
                           yanchor="bottom", font={"color": PRED_STYLE["color"]})  # fmt: skip


def spectrum_histogram(
    values: Sequence[float],
    n_outliers: int | None = None,
    predicted: Sequence[float] | None = None,
    title: str = "Spectrum",
    bins: int = 60,
    log_axis: bool = True,
) -> go.Figure:
    """Histogram of eigenvalues; with ``log_axis`` bins are log-spaced in |λ| (sign noted) so a
    bulk near 0 and outliers decades above it share one picture. Top ``n_outliers`` marked."""
    v = np.asarray(list(values), dtype=float)
    fig = go.Figure()
    mag = np.abs(v)
    floor = max(mag.max() * 1e-16, 1e-300) if mag.size else 1e-300

    def mark(val: float) -> float:
        return math.log10(max(abs(val), floor)) if log_axis else val

    if log_axis:
        x = np.log10(np.maximum(mag, floor))
        for sign, name, color in ((1, "λ > 0", COLORS[0]), (-1, "λ < 0", COLORS[2])):
            sel = x[(v >= 0) if sign > 0 else (v < 0)]
            if sel.size:
                fig.add_trace(
                    go.Histogram(x=sel, nbinsx=bins, name=name, marker_color=color, opacity=0.75)
                )
        xlabel = "log10 |eigenvalue|"
    else:
        fig.add_trace(go.Histogram(x=v, nbinsx=bins, name="eigenvalues", marker_color=COLORS[0]))
        xlabel = "eigenvalue"
    if n_outliers and v.size:
        top = np.sort(v)[::-1][:n_outliers]
        fig.add_trace(
            go.Scatter(
                x=[mark(t) for t in top],
                y=[0] * len(top),
                mode="markers",
                name=f"top {n_outliers} (outliers)",
                marker={"symbol": "triangle-up", "size": 12, "color": "black"},
            )
        )
    preds = sorted({round(x, 12) for x in predicted or []})
    xs = [mark(p) for p in preds]
    data_x = np.log10(np.maximum(mag, floor)) if log_axis else v
    ends = [*data_x.tolist(), *xs]
    mark_predictions(fig, preds, xs, (max(ends) - min(ends)) if ends else 1.0)
    fig.update_layout(barmode="overlay")
    return layout(fig, title, xlabel, "count", log_y=True)


def top_eigenvalues(
    values: Sequence[float],
    predicted: Sequence[float] | None = None,
    K2: int | None = None,
    title: str = "Top eigenvalues",
) -> go.Figure:
    """Indexed top eigenvalues (measured markers) with the predicted values beside them."""
    idx = list(range(1, len(values) + 1))
    fig = go.Figure(
        go.Scatter(
            x=idx,
            y=list(values),
            mode="markers",
            name="measured",
            marker={"size": 9, "color": COLORS[0]},
        )
    )
    if predicted:
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(predicted) + 1)),
                y=list(predicted),
                mode="markers",
                name="predicted",
                marker={
                    "symbol": "circle-open",
                    "size": 14,
                    "color": PRED_STYLE["color"],
                    "line": {"width": 2},
                },
            )
        )
    if K2:
        fig.add_vline(x=K2 + 0.5, line={"color": "#999", "dash": "dot"}, annotation_text="K²")
    return layout(fig, title, "index (descending)", "eigenvalue")


def density(
    grid: Sequence[float],
    dens: Sequence[float],
    xlabel: str,
    title: str = "Spectral density (SLQ)",
    predicted: Sequence[float] | None = None,
) -> go.Figure:
    """A spectral density curve (e.g. stochastic Lanczos quadrature) with predicted values."""
    fig = go.Figure(
        go.Scatter(
            x=list(grid),
            y=list(dens),
            mode="lines",
            fill="tozeroy",
            name="density",
            line={"color": COLORS[0]},
        )
    )
    for p in sorted(set(round(x, 12) for x in predicted or [])):
        fig.add_vline(x=p, line=PRED_STYLE)
    return layout(fig, title, xlabel, "density (linear scale)")


def binned_histogram(
    hist: Mapping[str, Any],
    top: Sequence[float] | None = None,
    n_outliers: int | None = None,
    predicted: Sequence[float] | None = None,
    title: str = "Spectrum",
) -> go.Figure:
    """A pre-binned log10|λ| histogram (see ``analysis.spectrum_histogram``): bars for λ > 0 and
    λ < 0, the count of numerical zeros in the title, the top outliers and predictions marked."""
    edges = list(hist.get("edges") or [])
    fig = go.Figure()
    if edges:
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        width = edges[1] - edges[0]
        signs = (("positive", "λ > 0", COLORS[0]), ("negative", "λ < 0", COLORS[2]))
        for key, name, color in signs:
            counts = hist.get(key) or []
            if any(counts):
                fig.add_trace(
                    go.Bar(
                        x=centres,
                        y=[c if c > 0 else None for c in counts],
                        width=width,
                        name=name,
                        marker_color=color,
                        opacity=0.8,
                    )
                )
    if top and n_outliers:
        marks = [math.log10(abs(v)) for v in list(top)[:n_outliers] if v and abs(v) > 0]
        fig.add_trace(
            go.Scatter(
                x=marks,
                y=[1] * len(marks),
                mode="markers",
                name=f"top {n_outliers}",
                marker={"symbol": "triangle-down", "size": 12, "color": "black"},
            )
        )
    preds = sorted({round(v, 12) for v in predicted or [] if v and v > 0})
    xs = [math.log10(p) for p in preds]
    ends = [*edges, *xs]
    mark_predictions(fig, preds, xs, (max(ends) - min(ends)) if ends else 1.0)
    zeros = hist.get("zeros", 0)
    fig.update_layout(barmode="overlay")
    return layout(
        fig,
        f"{title} — {zeros} eigenvalues are 0 (|λ| < {hist.get('floor', 0):.1e})",
        "log10 |eigenvalue|",
        "count",
        log_y=True,
    )


def head_spectra_vs_ufm(report: Report) -> go.Figure:
    """For every head layer of a real-network report: its top K² + K fit-Hessian eigenvalues
    (rank on x, log y) beside the UFM prediction with the same K, L, λ (λ_H/N): K² equal
    outliers at the dashed value, then the bulk (0 for the fit Hessian, not drawn)."""
    K2 = report.K ** 2
    fig = go.Figure()
    for i, lay in enumerate(report.layers):
        top = [float(v) for v in lay.hessian_top]
        fig.add_trace(go.Scatter(
            x=list(range(1, len(top) + 1)), y=positive(top), mode="markers",
            name=f"W_{lay.layer} measured", marker={"color": COLORS[i % len(COLORS)],
                                                       "size": 6},
            hovertemplate="rank %{x}<br>λ = %{y:.4g}<extra>%{fullData.name}</extra>",
        ))
        pred = lay.hessian_predicted
        if pred:
            fig.add_trace(go.Scatter(
                x=[1, K2], y=[pred, pred], mode="lines", name=f"W_{lay.layer} UFM prediction",
                line={**PRED_STYLE, "color": COLORS[i % len(COLORS)]},
            ))
    fig.add_vline(x=K2 + 0.5, line={"dash": "dot", "color": "#888"},
                  annotation_text=f"K² = {K2}", annotation_position="top right")
    return layout(fig, "Head-layer Hessian: measured top eigenvalues vs the UFM's K² outliers",
                   "eigenvalue rank", "eigenvalue (fit Hessian)", log_y=True, height=440)


def outlier_attribution(clusters: Sequence[Mapping[str, Any]], blocks: Sequence[str],
                        title: str = "Where each full-Hessian outlier lives") -> go.Figure:
    """One stacked bar per cluster of equal top eigenvalues (the report's
    ``full_hessian.attribution``): the share of the cluster's eigenspace in each parameter block
    (the shares of a bar sum to 1). Bars are labelled by value and multiplicity; a cluster that
    may continue past the computed eigenvalues is marked with an asterisk."""
    labels = [f"{c['value']:.4g} ×{c['multiplicity']}{'' if c.get('complete', True) else '*'}"
              for c in clusters]
    fig = go.Figure()
    for i, name in enumerate(blocks):
        inside = [(c.get("predicted") or [None] * len(blocks))[i] for c in clusters]
        fig.add_trace(go.Bar(
            x=labels, y=[c["layers"][i] for c in clusters], name=block_label(name),
            marker={"color": COLORS[i % len(COLORS)]}, customdata=inside,
            hovertemplate=(f"{block_label(name)}: share %{{y:.4f}}"
                           + (", in predicted directions %{customdata:.4f}"
                              if any(v is not None for v in inside) else "")
                           + "<extra></extra>")))
    fig.update_layout(barmode="stack")
    return layout(fig, title, "eigenvalue cluster (value ×multiplicity)", "share of the cluster")
