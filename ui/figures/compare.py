"""The Compare page's overlay: one series of several runs (or seed groups) against step, each
a line (a group's mean) with an optional filled band (its spread) and faint member lines, and
the closed-form references dashed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout, positive

BAND_ALPHA = 0.18  # opacity of a seed group's band
MEMBER_ALPHA = 0.35  # opacity of a group's individual runs


@dataclass(frozen=True)
class CompareLine:
    """One curve of the overlay: ``name`` in the legend, ``values`` at ``steps`` (None: a gap);
    ``lower``/``upper`` a band at the same steps (a seed group's spread); ``members`` the
    group's runs as (name, steps, values), drawn faint; ``reference`` the closed-form value the
    series tends to for this curve's runs (None: none applies); ``band_name`` the band's name
    in the legend (default: ``name``)."""

    name: str
    steps: Sequence[int]
    values: Sequence[float | None]
    lower: Sequence[float | None] | None = None
    upper: Sequence[float | None] | None = None
    members: Sequence[tuple[str, Sequence[int], Sequence[float | None]]] = field(default=())
    reference: float | None = None
    band_name: str = ""


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _xs(steps: Sequence[int], log_x: bool) -> list[float]:
    """Steps for the x axis; on a log axis step 0 is drawn at 0.5 (as ``steps_axis`` does)."""
    return [s if s > 0 or not log_x else 0.5 for s in steps]


def compare_curves(
    lines: Sequence[CompareLine],
    title: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
) -> go.Figure:
    """The overlay of ``lines`` against step, each in its own colour: a band (filled, no
    outline, legend ``band_name``) under its line, faint member lines, and the references
    as dashed lines over the whole x range: one red line labelled ``closed form`` when every
    curve has the same reference, else one per curve in its colour."""
    fig = go.Figure()
    ys = positive if log_y else list
    all_x: list[float] = []
    for i, line in enumerate(lines):
        colour = COLORS[i % len(COLORS)]
        xs = _xs(line.steps, log_x)
        all_x += xs
        if line.lower is not None and line.upper is not None:
            fig.add_trace(go.Scatter(x=xs, y=ys(line.upper), mode="lines", line={"width": 0},
                                     hoverinfo="skip", showlegend=False, legendgroup=line.name))
            fig.add_trace(go.Scatter(
                x=xs, y=ys(line.lower), mode="lines", line={"width": 0}, fill="tonexty",
                fillcolor=_rgba(colour, BAND_ALPHA), legendgroup=line.name,
                name=line.band_name or line.name, hoverinfo="skip",
            ))
        for member, steps, values in line.members:
            mx = _xs(steps, log_x)
            all_x += mx
            fig.add_trace(go.Scatter(
                x=mx, y=ys(values), mode="lines", name=member, legendgroup=line.name,
                line={"color": _rgba(colour, MEMBER_ALPHA), "width": 1}, showlegend=False,
                hovertemplate=f"{member}<br>step %{{x}}<br>%{{y:.6g}}<extra></extra>",
            ))
        fig.add_trace(go.Scatter(
            x=xs, y=ys(line.values), mode="lines+markers" if len(xs) <= 30 else "lines",
            name=line.name, legendgroup=line.name, line={"color": colour, "width": 2},
            hovertemplate=f"{line.name}<br>step %{{x}}<br>%{{y:.6g}}<extra></extra>",
        ))
    _references(fig, lines, all_x, log_y)
    return layout(fig, title, "step", ylabel, log_x=log_x, log_y=log_y, height=460)


def _references(fig: go.Figure, lines: Sequence[CompareLine], xs: Sequence[float],
                log_y: bool) -> None:
    """The dashed closed-form lines of :func:`compare_curves` (as traces, so that they have a
    legend entry and sit right on a log axis)."""
    refs = [(i, line) for i, line in enumerate(lines)
            if line.reference is not None and (line.reference > 0 or not log_y)]
    if not refs or not xs:
        return
    span = [min(xs), max(xs)]
    if len({line.reference for _, line in refs}) == 1:
        value = refs[0][1].reference
        fig.add_trace(go.Scatter(x=span, y=[value, value], mode="lines", line=PRED_STYLE,
                                 name=f"closed form {value:.6g}", hoverinfo="name"))
        return
    for i, line in refs:
        style = {**PRED_STYLE, "color": COLORS[i % len(COLORS)]}
        fig.add_trace(go.Scatter(
            x=span, y=[line.reference, line.reference], mode="lines", line=style,
            name=f"closed form {line.reference:.6g} · {line.name.removesuffix(', mean')}",
            hoverinfo="name",
        ))
