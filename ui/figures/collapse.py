"""The weights' singular values (Collapse & weights page): over training and at one step,
beside the predicted σ_l."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout, positive, steps_axis


def singular_values_over_training(
    rows: Sequence[Mapping[str, Any]], layer: int, predicted: float | None = None
) -> go.Figure:
    """Top K+1 singular values of W_layer (1-based) against step, with the predicted σ_l."""
    fig = go.Figure()
    steps = [int(r["step"]) for r in rows]
    xs, log_x = steps_axis(steps)
    # a row may lack sv, or (malformed) have fewer layers or values: gaps
    svs = [sv[layer - 1] if len(sv := r.get("sv") or []) >= layer else [] for r in rows]
    count = max((len(s) for s in svs), default=0)
    for j in range(count):
        ys = [s[j] if j < len(s) else None for s in svs]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=positive(ys),
                mode="lines",
                name=f"s{j + 1}",
                line={"color": COLORS[j % len(COLORS)]},
            )
        )
    if predicted:
        fig.add_hline(y=predicted, line=PRED_STYLE, annotation_text=f"σ_{layer} = {predicted:.6g}")
    return layout(
        fig, f"Singular values of W_{layer}", "step", "singular value", log_x=log_x, log_y=True
    )


def singular_values_at_step(
    sv: Sequence[Sequence[float]], predicted: Sequence[float] | None, step: int
) -> go.Figure:
    """Grouped markers: top singular values of each W_l at one step, predicted σ_l beside."""
    fig = go.Figure()
    for l, s in enumerate(sv):
        fig.add_trace(
            go.Scatter(
                x=[f"W_{l + 1}"] * len(s),
                y=positive(s),
                mode="markers",
                marker={"size": 10, "color": COLORS[0]},
                name="measured",
                showlegend=l == 0,
            )
        )
    if predicted:
        fig.add_trace(
            go.Scatter(
                x=[f"W_{l + 1}" for l in range(len(predicted))],
                y=predicted,
                mode="markers",
                name="predicted σ_l (K-fold)",
                marker={
                    "symbol": "line-ew-open",
                    "size": 28,
                    "color": PRED_STYLE["color"],
                    "line": {"width": 3},
                },
            )
        )
    return layout(
        fig, f"Top singular values at step {step}", "weight", "singular value", log_y=True
    )


def weights_esd(singular_values: Sequence[float], bulk_edge: float | None, layer: int,
                shape: Sequence[int] = ()) -> go.Figure:
    """All singular values of a head weight W_l in decreasing order (bars), with the
    Marchenko–Pastur bulk edge of a random matrix of its shape and estimated noise scale
    (dashed): the bars above the edge are the spikes, which the UFM counts against K."""
    s = list(singular_values)
    fig = go.Figure(go.Bar(x=list(range(1, len(s) + 1)), y=s, name="singular values σ_i",
                           marker_color=COLORS[0]))
    if bulk_edge is not None:
        fig.add_hline(y=bulk_edge, line=PRED_STYLE, annotation_text="Marchenko–Pastur edge")
    size = f" ({' × '.join(map(str, shape))})" if shape else ""
    return layout(fig, f"Singular values of W_{layer}{size}", "index i", "σ_i", height=320)
