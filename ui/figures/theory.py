"""Closed-form pictures (Theory explorer): γ against λ and predicted spectra."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout


def gamma_vs_lambda(
    lams: Sequence[float],
    gammas: Sequence[float],
    lambda_crit: float | None,
    current: float | None = None,
) -> go.Figure:
    """Optimal shrinkage γ against λ (log axis), with the jump to 0 at λ_crit."""
    fig = go.Figure(
        go.Scatter(
            x=list(lams),
            y=list(gammas),
            mode="lines",
            name="γ(λ)",
            line={"color": COLORS[0], "width": 2},
        )
    )
    if lambda_crit:
        fig.add_vline(x=lambda_crit, line=PRED_STYLE, annotation_text="λ_crit")
    if current:
        fig.add_vline(
            x=current,
            line={"color": "#555", "dash": "dot"},
            annotation_text="λ",
            annotation_position="bottom right",
        )
    return layout(fig, "Optimal shrinkage γ against λ (all λ equal)", "λ", "γ", log_x=True)


def predicted_spectrum(groups: Sequence[tuple[float, int]], title: str) -> go.Figure:
    """Stem plot of a predicted spectrum given as (value, multiplicity) pairs."""
    vals = [v for v, _ in groups]
    mult = [m for _, m in groups]
    fig = go.Figure(
        go.Bar(
            x=[f"{v:.6g}" for v in vals],
            y=mult,
            marker_color=COLORS[0],
            hovertemplate="eigenvalue %{x}<br>multiplicity %{y}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category")
    return layout(fig, title, "eigenvalue", "multiplicity", log_y=max(mult, default=1) > 50)
