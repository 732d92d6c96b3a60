"""What every dashboard figure shares: the chart options, the colours, the style of a predicted
value, the layout (title, axis labels, size, template) and the helpers for log axes.

The builders (one module per topic, see ``ui/figures/__init__.py``) take plain data and return a
``go.Figure``; they read no files and import no Streamlit. Every builder labels its axes with the
quantity and, where the theory gives one, draws the prediction in :data:`PRED_STYLE` (a dashed
line or a hollow marker) so that measurement and prediction sit side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

PRED_STYLE = {"dash": "dash", "color": "#d62728", "width": 2}
COLORS = [
    "#3355aa",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#1f77b4",
]
# the chart options of a page that places a figure itself (ui/charts.py.show gives each figure
# its own, naming the camera button's file); the camera button saves a print-resolution PNG
CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 3}}


def layout(
    fig: go.Figure,
    title: str,
    x: str,
    y: str,
    log_x: bool = False,
    log_y: bool = False,
    height: int = 380,
) -> go.Figure:
    """The layout every figure gets: title at the left, axis labels, height, white template,
    legend below; powers of ten on the axes, ``log_x``/``log_y`` for log axes."""
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
    )
    fig.update_xaxes(exponentformat="power")
    fig.update_yaxes(exponentformat="power")
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log", exponentformat="power")
    return fig


def positive(values: Sequence[float | None]) -> list[float | None]:
    """Values for a log axis: non-positive and missing entries become gaps."""
    return [v if v is not None and v > 0 and math.isfinite(v) else None for v in values]


def steps_axis(steps: Sequence[int]) -> tuple[list[float], bool]:
    """Plot steps on a log axis (step 0 shown at 0.5) when they span decades."""
    log_x = len(steps) > 2 and max(steps) >= 100
    return ([s if s > 0 else 0.5 for s in steps] if log_x else list(steps)), log_x


def block_label(name: str) -> str:
    """A parameter block's name as the theory writes it: ``weights.2`` → ``W_3``,
    ``features`` → ``H_1``, ``head_weights.0`` → ``head W_1``; anything else as it is."""
    for prefix, shown in (("weights.", "W_"), ("head_weights.", "head W_")):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return f"{shown}{int(name[len(prefix):]) + 1}"
    return "H_1" if name == "features" else name
