"""Studies over a sweep's table (docs/sweeps.md): the phase diagrams against λ/λ_crit, the depth
study, and the width and regularisation-sensitivity studies (one scatter builder)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout, positive


def _sweep_groups(
    rows: Sequence[Mapping[str, Any]], group_by: Sequence[str]
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Rows grouped by the values of ``group_by`` (label "k=v, ..."), in first-seen order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r.get(k)}" for k in group_by) if group_by else "measured"
        groups.setdefault(label, []).append(r)
    return list(groups.items())


def _sweep_vline(fig: go.Figure, x: float, label: str, log_x: bool) -> None:
    """A dotted vertical reference line with its label at the top; on a log axis Plotly places
    annotations in log10 units, so the label's x is converted."""
    fig.add_vline(x=x, line={"color": "#555", "dash": "dot"})
    if label:
        fig.add_annotation(
            x=math.log10(x) if log_x and x > 0 else x,
            y=1.0,
            yref="paper",
            text=label,
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
        )


def _phase_curves(fig: go.Figure, curves: Sequence[Mapping[str, Any]], key: str,
                  name: Any) -> None:
    """The closed-form curves of the phase diagrams (dashed, one colour per (K, n, L))."""
    for i, c in enumerate(curves):
        fig.add_trace(
            go.Scatter(
                x=list(c["x"]),
                y=list(c[key]),
                mode="lines",
                name=name(c),
                line={**PRED_STYLE, "color": COLORS[(i + 3) % len(COLORS)]},
            )
        )


def sweep_phase_gamma(
    rows: Sequence[Mapping[str, Any]], curves: Sequence[Mapping[str, Any]]
) -> go.Figure:
    """Phase diagram, γ: the measured output scale (mean diagonal of the output class means,
    filled; each class's own value, hollow) against λ/λ_crit, with the closed form γ(λ) that
    jumps from (L−1)/L to 0 at λ_crit (docs/theory.md §3.1)."""
    fig = go.Figure()
    _phase_curves(fig, curves, "gamma", lambda c: f"closed form K={c['K']} n={c['n']} L={c['L']}")
    pts = [r for r in rows if r.get("lam_over_crit") and r.get("gamma_measured") is not None]
    for i, (label, group) in enumerate(_sweep_groups(pts, ("K", "n", "depth"))):
        color = COLORS[i % len(COLORS)]
        fig.add_trace(
            go.Scatter(
                x=[r["lam_over_crit"] for r in group],
                y=[r["gamma_measured"] for r in group],
                mode="markers",
                name=f"γ measured ({label})",
                marker={"color": color, "size": 9},
                customdata=[r.get("member") for r in group],
                hovertemplate="λ/λ_crit %{x:.3g}<br>γ %{y:.6g}<br>member %{customdata}"
                "<extra></extra>",
            )
        )
        xs, ys = [], []
        for r in group:
            for g in r.get("gamma_diag") or []:
                xs.append(r["lam_over_crit"])
                ys.append(g)
        if xs:
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=f"per class ({label})",
                    marker={"color": color, "size": 7, "symbol": "circle-open"},
                )
            )
    _sweep_vline(fig, 1.0, "λ_crit", log_x=True)
    return layout(
        fig, "Phase diagram: output scale γ against λ/λ_crit", "λ / λ_crit", "γ", log_x=True
    )


def sweep_phase_outliers(
    rows: Sequence[Mapping[str, Any]], curves: Sequence[Mapping[str, Any]]
) -> go.Figure:
    """Phase diagram, outliers: the number of layer-wise fit-Hessian outliers (fewest and most
    over the layers) against λ/λ_crit, with the prediction K² below λ_crit and 0 above."""
    fig = go.Figure()
    _phase_curves(fig, curves, "count", lambda c: f"predicted K²={c['K'] ** 2}")
    pts = [r for r in rows if r.get("lam_over_crit") and r.get("outlier_count_max") is not None]
    for i, (label, group) in enumerate(_sweep_groups(pts, ("K", "n", "depth"))):
        color = COLORS[i % len(COLORS)]
        x = [r["lam_over_crit"] for r in group]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["outlier_count_max"] for r in group],
                mode="markers",
                name=f"most over layers ({label})",
                marker={"color": color, "size": 9},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["outlier_count_min"] for r in group],
                mode="markers",
                name=f"fewest over layers ({label})",
                marker={"color": color, "size": 9, "symbol": "triangle-down-open"},
            )
        )
    _sweep_vline(fig, 1.0, "λ_crit", log_x=True)
    return layout(
        fig,
        "Phase diagram: layer-wise Hessian outliers against λ/λ_crit",
        "λ / λ_crit",
        "outlier count (gap rule)",
        log_x=True,
    )


def sweep_depth_outliers(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Depth study (docs/theory.md §4.5): the full weight fit-Hessian's K² outliers — the top
    K(K−1)/2 (at GN + ρ) and the next K(K+1)/2 (at GN − ρ), means of each group — and the sum
    of the layer-wise outliers (= the full Gauss–Newton value GN) against the depth L; markers
    measured, dashed lines predicted. One colour per λ."""
    fig = go.Figure()
    pts = sorted((r for r in rows if r.get("depth") is not None), key=lambda r: r["depth"])
    series = (
        ("full_plus", "full top K(K−1)/2 (GN+ρ)", "circle"),
        ("full_minus", "full next K(K+1)/2 (GN−ρ)", "square"),
        ("layer_sum", "Σ_l layer outliers (GN)", "diamond-open"),
    )
    for i, (label, group) in enumerate(_sweep_groups(pts, ("lam_h",))):
        color = COLORS[i % len(COLORS)]
        x = [r["depth"] for r in group]
        for key, name, symbol in series:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r.get(f"{key}_measured") for r in group],
                    mode="markers",
                    name=f"{name}, {label}",
                    marker={"color": color, "size": 9, "symbol": symbol},
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[r.get(f"{key}_predicted") for r in group],
                    mode="lines",
                    name=f"predicted, {label}",
                    showlegend=key == "full_plus",
                    line={**PRED_STYLE, "color": color, "width": 1},
                )
            )
    return layout(
        fig,
        "Full fit-Hessian outliers against depth (weights only)",
        "depth L (number of weight matrices)",
        "eigenvalue",
    )


def sweep_depth_split(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Depth study: the residual split ρ = (mean of the top K(K−1)/2 − mean of the next
    K(K+1)/2)/2 measured, against the prediction Σ_{l≠m}λ_lλ_m/Σλ_l ((L−1)λ for equal λ)."""
    fig = go.Figure()
    pts = sorted((r for r in rows if r.get("depth") is not None), key=lambda r: r["depth"])
    for i, (label, group) in enumerate(_sweep_groups(pts, ("lam_h",))):
        color = COLORS[i % len(COLORS)]
        x = [r["depth"] for r in group]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r.get("rho_measured") for r in group],
                mode="markers",
                name=f"ρ measured, {label}",
                marker={"color": color, "size": 9},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r.get("rho_predicted") for r in group],
                mode="lines",
                name=f"ρ predicted, {label}",
                line={**PRED_STYLE, "color": color},
            )
        )
    return layout(
        fig, "Residual split ρ of the full-Hessian outliers against depth", "depth L", "ρ"
    )


def sweep_scatter(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    title: str,
    ylabel: str | None = None,
    predicted: str | None = None,
    group_by: Sequence[str] = (),
    log_x: bool = False,
    log_y: bool = False,
    vline: float | None = None,
    vline_label: str = "",
    hline: float | None = None,
    hline_label: str = "",
) -> go.Figure:
    """A measured column ``y`` of a sweep's table against column ``x``, one colour per group
    (e.g. per model), with the column ``predicted`` as a dashed line where given; optional
    reference lines (e.g. d = K, or K² outliers). Used by the width and sensitivity studies."""
    fig = go.Figure()
    pts = sorted((r for r in rows if r.get(x) is not None), key=lambda r: r[x])
    for i, (label, group) in enumerate(_sweep_groups(pts, group_by)):
        color = COLORS[i % len(COLORS)]
        xs = [r[x] for r in group]
        ys = [r.get(y) for r in group]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=positive(ys) if log_y else ys,
                mode="markers+lines" if group_by else "markers",
                name=label,
                marker={"color": color, "size": 9},
                line={"color": color, "width": 1},
                customdata=[r.get("member") for r in group],
                hovertemplate=f"{x} %{{x}}<br>{y} %{{y:.6g}}<br>member %{{customdata}}"
                "<extra></extra>",
            )
        )
        if predicted and any(r.get(predicted) is not None for r in group):
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[r.get(predicted) for r in group],
                    mode="lines",
                    name=f"closed form{'' if not group_by else ', ' + label}",
                    line={**PRED_STYLE, "color": color if group_by else PRED_STYLE["color"]},
                )
            )
    if vline is not None:
        _sweep_vline(fig, vline, vline_label, log_x)
    if hline is not None:
        fig.add_hline(y=hline, line={"color": "#555", "dash": "dot"}, annotation_text=hline_label)
    return layout(fig, title, x, ylabel or y, log_x=log_x, log_y=log_y)


def sweep_width_figures(rows: Sequence[Mapping[str, Any]], K: int) -> list[go.Figure]:
    """Width study: γ (with the closed form, which needs d ≥ K) and the layer-outlier count
    (with K²) against the width d, with the line d = K."""
    common = {"log_x": True, "vline": K, "vline_label": "d = K"}
    return [
        sweep_scatter(
            rows,
            "width",
            "gamma_measured",
            "γ against width",
            "γ",
            predicted="gamma_predicted",
            **common,
        ),
        sweep_scatter(
            rows,
            "width",
            "outlier_count_max",
            "Layer outliers against width",
            "outlier count (most over layers)",
            hline=K * K,
            hline_label="K²",
            **common,
        ),
    ]


def sweep_sensitivity_figures(rows: Sequence[Mapping[str, Any]], x: str) -> list[go.Figure]:
    """Regularisation sensitivity: mean diagonal output, outlier count, mean f_cc' and DNC1
    against the λ column ``x``, one line per model (activation/loss)."""
    labelled = [{**r, "model": f"{r.get('activation')}/{r.get('loss')}"} for r in rows]
    panels = [
        ("gamma_measured", "Mean diagonal output (γ for MSE)", False),
        ("outlier_count_max", "Layer outliers (most over layers)", False),
        ("f_mean", "Alignment: mean f_cc' over layers", False),
        ("nc1_max", "DNC1 (worst layer)", True),
    ]
    return [
        sweep_scatter(labelled, x, y, title, group_by=("model",), log_x=True, log_y=log_y)
        for y, title, log_y in panels
    ]
