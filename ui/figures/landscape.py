"""Loss-landscape figures (docs/design.md §8.4): a line along one direction with the quadratic
model dashed beside it, and a plane as a contour map with the training path drawn on it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout


def landscape_line(t: Sequence[float], values: Sequence[float], label: str,
                   quadratic: Sequence[float] | None = None, title: str = "",
                   x_label: str = "t (distance along the direction)") -> go.Figure:
    """``values`` (the fit term or the total loss) against t; ``quadratic`` (fit(0) + λt²/2)
    dashed in the prediction style, clipped to the range of the measured values so that a steep
    parabola does not flatten the curve."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=list(t), y=list(values), mode="lines+markers", name=label,
                             line={"color": COLORS[0], "width": 2}, marker={"size": 4}))
    if quadratic is not None:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        top = max(finite) if finite else None
        span = (top - min(finite)) if finite else 0.0
        shown = [q if top is None or q <= top + 0.5 * span else None for q in quadratic]
        fig.add_trace(go.Scatter(x=list(t), y=shown, mode="lines", line=PRED_STYLE,
                                 name="quadratic model fit(0) + λt²/2", connectgaps=False))
    return layout(fig, title, x_label, label)


def landscape_plane(a: Sequence[float], b: Sequence[float], z: Sequence[Sequence[float]],
                    label: str, title: str = "", path: dict[str, Any] | None = None,
                    axes: tuple[str, str] = ("a (first direction)", "b (second direction)"),
                    log_z: bool = False) -> go.Figure:
    """Contour map of ``z[i][j]`` at (a_i, b_j), a across and b up; ``path`` (pca: ``steps``,
    ``a``, ``b``) is drawn over it, start and end marked. ``log_z`` shows log10 of z."""
    rows = [[z[i][j] for i in range(len(a))] for j in range(len(b))]  # plotly: z[y][x]
    if log_z:
        rows = [[math.log10(v) if v is not None and v > 0 else None for v in r] for r in rows]
    fig = go.Figure(go.Contour(
        x=list(a), y=list(b), z=rows, colorscale="Viridis", ncontours=30,
        colorbar={"title": {"text": f"log10 {label}" if log_z else label, "side": "right"}},
        contours={"showlines": True}, line={"width": 0.5}, name=label,
        hovertemplate="a=%{x:.3g}<br>b=%{y:.3g}<br>%{z:.6g}<extra></extra>",
    ))
    if path and path.get("b") is not None:
        steps = path.get("steps") or []
        fig.add_trace(go.Scatter(
            x=path["a"], y=path["b"], mode="lines+markers", name="training path",
            line={"color": "white", "width": 2}, marker={"size": 6, "color": "white",
                                                         "line": {"color": "black", "width": 1}},
            text=[f"step {s}" for s in steps], hovertemplate="%{text}<extra></extra>",
        ))
        fig.add_trace(go.Scatter(x=path["a"][:1], y=path["b"][:1], mode="markers",
                                 name="first checkpoint", marker={"size": 11, "symbol": "circle",
                                                                  "color": COLORS[2]}))
        fig.add_trace(go.Scatter(x=path["a"][-1:], y=path["b"][-1:], mode="markers",
                                 name="this checkpoint", marker={"size": 13, "symbol": "star",
                                                                 "color": "#d62728"}))
    fig = layout(fig, title, axes[0], axes[1], height=520)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    fig.update_xaxes(constrain="domain")  # equal scales: shrink the box, not widen the range
    return fig
