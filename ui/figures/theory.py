"""Closed-form pictures (Theory explorer): γ against λ and predicted spectra as stem plots.

The explorer rebuilds these figures on every slider move, so each builder makes its figure in
one ``go.Figure(data, layout)`` call with the whole layout as a dict (:func:`_layout`, the look
of :func:`ui.figures.common.layout`) and a slim template (:data:`_TEMPLATE`): 5–8 ms a figure
against ~33 ms through ``common.layout``'s separate ``update_*`` calls with the full template,
plus ~19 ms for each ``add_vline`` (docs/benchmarks.md §6). Legends are left out (the axis
titles and labels say what the colours are): less for the browser to draw on every move.

A predicted spectrum is a list of (eigenvalue, multiplicity) groups (``dufm_core.theory``'s
``layer_hessian_spectrum`` and ``hessian_spectrum``). :func:`predicted_spectrum` draws each
group as a stem on a log |eigenvalue| axis (positive ones up, negative ones down) with its
multiplicity written on it, and the zero eigenvalues, which a log axis cannot show, on a small
axis of their own at the left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from ui.figures.common import COLORS, PRED_STYLE

# plotly_white's layout for 2-D axes, without the template's per-trace defaults and its
# geo/polar/3-D parts: the same look for these figures (the full template is copied and
# validated with every figure: 13-20 ms of a build; this one ~2 ms)
_TEMPLATE = {
    "layout": {
        k: v
        for k, v in pio.templates["plotly_white"].layout.to_plotly_json().items()
        if k in {"autotypenumbers", "colorway", "font", "hovermode", "hoverlabel",
                 "paper_bgcolor", "plot_bgcolor", "xaxis", "yaxis", "title"}
    }
}  # fmt: skip
ZERO_COLOR = "#7f7f7f"
CURRENT_COLOR = COLORS[2]
_LEVELS = (1.0, 0.6, 0.2)  # stem heights, staggered so that neighbouring labels do not collide
_LABEL_GAP = 0.15  # labels closer than this fraction of the log axis go to different heights


def _layout(title: str, x: dict, y: dict, height: int = 380, **extra: object) -> dict:
    """The layout of :func:`ui.figures.common.layout` as one dict (title at the left, the white
    template, powers of ten, fixed margins), so that a figure is validated once."""
    axis = {"exponentformat": "power", "automargin": False}  # fixed margins: one drawing pass
    return {
        "title": {"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        "xaxis": {**axis, **x},
        "yaxis": {**axis, **y},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
        "template": _TEMPLATE,
        "showlegend": False,
        **extra,
    }


def _vline(x: float, line: dict, xref: str = "x") -> dict:
    """A vertical line across the plot at ``x`` (a layout shape)."""
    return {"type": "line", "x0": x, "x1": x, "xref": xref, "y0": 0, "y1": 1, "yref": "paper",
            "line": line}  # fmt: skip


def gamma_vs_lambda(
    lams: Sequence[float],
    gammas: Sequence[float],
    lambda_crit: float | None,
    current: float | None = None,
    *,
    current_gamma: float | None = None,
    current_label: str = "λ",
    x_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Optimal shrinkage γ against a common λ (log axis), with the jump to 0 at λ_crit.

    ``current`` marks the chosen setting with a dotted line labelled ``current_label``, and with
    ``current_gamma`` also a point on the curve. For unequal λ_W and λ_H the caller passes the
    common λ that gives the same γ (γ depends on the λs only through λ_H Π λ_W, docs/theory.md
    §3.2) and says so in the label. ``x_range`` (λ values) sets the visible part of the axis.
    """
    data = [
        go.Scatter(x=np.asarray(lams, float), y=np.asarray(gammas, float), mode="lines",
                   name="γ(λ), every λ equal",
                   line={"color": COLORS[0], "width": 2},
                   hovertemplate="λ %{x:.4g}<br>γ %{y:.8f}<extra></extra>")
    ]  # fmt: skip
    shapes, notes = [], []
    if lambda_crit:
        shapes.append(_vline(lambda_crit, PRED_STYLE))
        notes.append({"x": math.log10(lambda_crit), "y": 1, "yref": "paper", "text": "λ_crit",
                      "showarrow": False, "xanchor": "left", "yanchor": "bottom"})  # fmt: skip
    if current:
        shapes.append(_vline(current, {"color": "#555", "dash": "dot", "width": 1}))
        # the label points at the setting from below left, where the curve leaves room
        at = (
            {"y": current_gamma, "yref": "y"}
            if current_gamma is not None
            else {"y": 0.5, "yref": "paper"}
        )
        notes.append({"x": math.log10(current), **at, "text": current_label, "showarrow": False,
                      "xanchor": "right", "yanchor": "top", "xshift": -8, "yshift": -8,
                      "bgcolor": "rgba(255,255,255,0.85)"})  # fmt: skip
        if current_gamma is not None:
            data.append(
                go.Scatter(x=[current], y=[current_gamma], mode="markers", name="this setting",
                           marker={"color": CURRENT_COLOR, "size": 12, "line": {"width": 1.5,
                                                                                "color": "white"}},
                           hovertemplate=f"{current_label}<br>γ %{{y:.8f}}<extra></extra>")
            )  # fmt: skip
    x = {"title": {"text": "common λ (λ_W = λ_H = λ)"}, "type": "log"}
    if x_range:
        x["range"] = [math.log10(x_range[0]), math.log10(x_range[1])]
        if x["range"][1] - x["range"][0] >= 2:
            x["dtick"] = 1  # powers of ten only
    lay = _layout("Optimal shrinkage γ against λ", x, {"title": {"text": "γ"},
                  "range": [-0.03, 1.05]}, shapes=shapes, annotations=notes)  # fmt: skip
    return go.Figure(data, lay)


def multiplicity_label(m: int, K: int | None = None) -> str:
    """How a multiplicity is written on a stem: in terms of K where the theory names it that
    way ("K² = 9", "K(K−1)/2 = 3", "K(K+1)/2 = 6"), else "×m"."""
    if K is not None:
        forms = {K * K: "K²", K * (K - 1) // 2: "K(K−1)/2", K * (K + 1) // 2: "K(K+1)/2"}
        if m in forms:
            return f"{forms[m]} = {m}"
    return f"×{m:,}".replace(",", " ")


def _levels(xs: Sequence[float], gap: float) -> list[float]:
    """A stem height for each log-x position: the tallest level whose previous stem is at least
    ``gap`` away, else the level used longest ago (so labels of close stems are staggered)."""
    out = [_LEVELS[0]] * len(xs)
    last = [-math.inf] * len(_LEVELS)
    for i in sorted(range(len(xs)), key=lambda i: xs[i]):
        free = [k for k in range(len(_LEVELS)) if xs[i] - last[k] >= gap]
        k = free[0] if free else min(range(len(_LEVELS)), key=lambda k: last[k])
        out[i], last[k] = _LEVELS[k], xs[i]
    return out


def _match(value: float, marks: Sequence[tuple[float, str]]) -> list[str]:
    """The names in ``marks`` whose value equals ``value`` (to 1e-9 relative)."""
    return [name for v, name in marks if abs(v - value) <= 1e-9 * max(abs(v), abs(value), 1e-300)]


def predicted_spectrum(
    groups: Sequence[tuple[float, int]],
    title: str,
    K: int | None = None,
    *,
    marks: Sequence[tuple[float, str]] = (),
    x_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Stem plot of a predicted spectrum given as (eigenvalue, multiplicity) groups.

    Each non-zero group is a stem at |eigenvalue| on a log axis, up for a positive eigenvalue
    and down for a negative one, labelled with its multiplicity and value. ``marks`` names
    groups by value ((value, name) pairs, e.g. the layer outlier "λ_W γ/(1−γ)" or the full
    Hessian's "GN + ρ"); only named groups get their multiplicity written in terms of ``K``
    ("K² = 9"), since a bulk multiplicity can equal K² by chance. The zero eigenvalues get a
    stem of their own on a small axis at the left. ``x_range`` (|eigenvalue| values) sets the
    log axis, e.g. the same for two spectra that should be compared.
    """
    scale = max((abs(v) for v, _ in groups), default=0.0)
    zeros = sum(m for v, m in groups if abs(v) <= 1e-12 * scale)
    nonzero = [(v, m) for v, m in groups if abs(v) > 1e-12 * scale]
    logs = [math.log10(abs(v)) for v, _ in nonzero]
    if x_range:
        lo, hi = math.log10(x_range[0]), math.log10(x_range[1])
    elif logs:
        lo, hi = min(logs) - 0.5, max(logs) + 0.5
    else:
        lo, hi = -1.0, 1.0
    data: list[go.Scatter] = []
    sides = [(1, "eigenvalue > 0 (up)", COLORS[0], "top center"),
             (-1, "eigenvalue < 0 (down)", COLORS[2], "bottom center")]  # fmt: skip
    for sign, name, color, where in sides:
        idx = [i for i, (v, _) in enumerate(nonzero) if (v > 0) == (sign > 0)]
        if not idx:
            continue
        heights = _levels([logs[i] for i in idx], _LABEL_GAP * (hi - lo))
        xs, ys, text, custom, place = [], [], [], [], []
        for i, h in zip(idx, heights, strict=True):
            v, m = nonzero[i]
            names = _match(v, marks)
            label = multiplicity_label(m, K if names else None)
            value = (f"{' = '.join(names)} = " if names else "") + f"{v:.4g}".replace("-", "−")
            xs.append(abs(v))
            ys.append(sign * h)
            text.append(f"{label}<br>{value}" if sign > 0 else f"{value}<br>{label}")
            # a lower stem's crowding neighbour is on its left: its label goes to the right
            place.append(where if h == _LEVELS[0] else where.replace("center", "right"))
            custom.append([v, m])
        stems_x = [x for a in xs for x in (a, a, None)]
        stems_y = [y for b in ys for y in (0.0, b, None)]
        data.append(go.Scatter(x=stems_x, y=stems_y, xaxis="x2", mode="lines", showlegend=False,
                               line={"color": color, "width": 2}, hoverinfo="skip"))  # fmt: skip
        data.append(
            go.Scatter(x=xs, y=ys, xaxis="x2", mode="markers+text", name=name, text=text,
                       textposition=place, customdata=custom, cliponaxis=False,
                       marker={"color": color, "size": 8}, textfont={"size": 12},
                       hovertemplate="eigenvalue %{customdata[0]:.10g}<br>multiplicity "
                                     "%{customdata[1]}<extra></extra>")
        )  # fmt: skip
    if zeros:
        data.append(
            go.Scatter(x=["0", "0", None], y=[0.0, _LEVELS[0], None], mode="lines",
                       showlegend=False, line={"color": ZERO_COLOR, "width": 2},
                       hoverinfo="skip")
        )  # fmt: skip
        data.append(
            go.Scatter(x=["0"], y=[_LEVELS[0]], mode="markers+text", name="eigenvalue 0",
                       text=[multiplicity_label(zeros)], textposition="top center",
                       marker={"color": ZERO_COLOR, "size": 8}, cliponaxis=False,
                       hovertemplate=f"eigenvalue 0<br>multiplicity {zeros}<extra></extra>")
        )  # fmt: skip
    negative = any(v < 0 for v, _ in nonzero)
    split = 0.09 if zeros else 0.0
    lay = _layout(
        title,
        {"domain": [0.0, max(split - 0.03, 0.01)], "type": "category", "visible": bool(zeros),
         "fixedrange": True},
        {"range": [-1.55 if negative else -0.1, 1.55], "visible": False, "fixedrange": True},
        height=420 if negative else 330,
        margin={"l": 20, "r": 20, "t": 50, "b": 50},
        xaxis2={"domain": [split, 1.0], "type": "log", "range": [lo, hi], "exponentformat": "power",
                "automargin": False,
                "dtick": 1 if hi - lo >= 2 else None,
                "title": {"text": "|eigenvalue| (log scale); stems point down for negative "
                                  "eigenvalues" if negative else "|eigenvalue| (log scale)"}},
        shapes=[{"type": "line", "xref": "x2 domain", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
                 "yref": "y", "line": {"color": "#bbb", "width": 1}}],
    )  # fmt: skip
    return go.Figure(data, lay)
