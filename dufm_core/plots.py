"""Plotly figure builders for the dashboard: plain data in, ``go.Figure`` out.

Pages only place these figures; nothing here reads files or imports Streamlit. Every builder
labels its axes with the quantity and, where the theory gives one, draws the prediction as a
dashed line or hollow marker so measurement and prediction sit side by side.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
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
CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def _layout(
    fig: go.Figure,
    title: str,
    x: str,
    y: str,
    log_x: bool = False,
    log_y: bool = False,
    height: int = 380,
) -> go.Figure:
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


def _positive(values: Sequence[float | None]) -> list[float | None]:
    """Values for a log axis: non-positive and missing entries become gaps."""
    return [v if v is not None and v > 0 and math.isfinite(v) else None for v in values]


def _steps_axis(steps: Sequence[int]) -> tuple[list[float], bool]:
    """Plot steps on a log axis (step 0 shown at 0.5) when they span decades."""
    log_x = len(steps) > 2 and max(steps) >= 100
    return ([s if s > 0 else 0.5 for s in steps] if log_x else list(steps)), log_x


# ----------------------------------------------------------------------- training curves
def metric_curves(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    key: str = "loss",
    reference: float | None = None,
    title: str | None = None,
    log_y: bool = True,
    reference_label: str = "closed form",
) -> go.Figure:
    """One line per run of scalar metric ``key`` against step; optional reference line."""
    fig = go.Figure()
    all_steps: list[int] = []
    for i, (label, rows) in enumerate(series.items()):
        steps = [int(r["step"]) for r in rows]
        all_steps += steps
        xs, _ = _steps_axis(steps)
        ys = [r.get(key) for r in rows]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=_positive(ys) if log_y else ys,
                mode="lines",
                name=label,
                line={"color": COLORS[i % len(COLORS)]},
            )
        )
    _, log_x = _steps_axis(all_steps or [0])
    if reference is not None:
        fig.add_hline(
            y=reference,
            line=PRED_STYLE,
            annotation_text=reference_label,
            annotation_position="top right",
        )
    return _layout(fig, title or key, "step", key, log_x=log_x, log_y=log_y)


def layer_curves(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    title: str | None = None,
    log_y: bool = True,
    layer_names: Sequence[str] | None = None,
) -> go.Figure:
    """One line per layer of per-layer list metric ``key`` (e.g. nc1) against step."""
    fig = go.Figure()
    steps = [int(r["step"]) for r in rows]
    xs, log_x = _steps_axis(steps)
    n_layers = max((len(r.get(key) or []) for r in rows), default=0)
    for l in range(n_layers):
        ys = [(r.get(key) or [None] * n_layers)[l] for r in rows]
        name = layer_names[l] if layer_names else f"layer {l + 1}"
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=_positive(ys) if log_y else ys,
                mode="lines",
                name=name,
                line={"color": COLORS[l % len(COLORS)]},
            )
        )
    return _layout(fig, title or key, "step", key, log_x=log_x, log_y=log_y)


def has_accuracy(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether metrics ``rows`` are a real network's (they carry ``train_acc``)."""
    return any(r.get("train_acc") is not None for r in rows)


def _epoch_hover(rows: Sequence[Mapping[str, Any]], value: str) -> dict[str, Any]:
    """Scatter kwargs that show step, epoch and ``value`` (a Plotly format) on hover."""
    return {
        "customdata": [[int(r["step"]), r.get("epoch")] for r in rows],
        "hovertemplate": "step %{customdata[0]}<br>epoch %{customdata[1]:.3g}<br>"
        + value
        + "<extra>%{fullData.name}</extra>",
    }


def accuracy_curves(rows: Sequence[Mapping[str, Any]], title: str = "Accuracy") -> go.Figure:
    """Training and test accuracy of a real-network run against step (both eval mode; the
    test curve is absent without a test set); the hover shows the epoch too."""
    fig = go.Figure()
    steps = [int(r["step"]) for r in rows]
    xs, log_x = _steps_axis(steps)
    for i, (key, name) in enumerate((("train_acc", "train"), ("test_acc", "test"))):
        ys = [r.get(key) for r in rows]
        if all(y is None for y in ys):
            continue
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers" if len(rows) <= 30 else "lines",
                name=name,
                line={"color": COLORS[i]},
                **_epoch_hover(rows, f"{name} accuracy %{{y:.4f}}"),
            )
        )
    fig = _layout(fig, title, "step", "accuracy", log_x=log_x)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def batch_loss_curves(
    rows: Sequence[Mapping[str, Any]],
    reference: float | None = None,
    title: str = "Loss: whole training set (eval) and batch (train mode)",
    reference_label: str = "UFM optimum",
) -> go.Figure:
    """A real-network run's ``loss`` (whole training set, BatchNorm in eval mode: the network
    the analyses see) beside its ``batch_loss`` (the step's batch in train mode: what the
    optimiser descends) against step, log y; optional reference line (dashed)."""
    fig = go.Figure()
    steps = [int(r["step"]) for r in rows]
    xs, log_x = _steps_axis(steps)
    lines = (("loss", "loss (eval, training set)"), ("batch_loss", "batch loss (train mode)"))
    for i, (key, name) in enumerate(lines):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=_positive([r.get(key) for r in rows]),
                mode="lines",
                name=name,
                line={"color": COLORS[i], "dash": "solid" if i == 0 else "dot"},
                **_epoch_hover(rows, f"{key} %{{y:.6g}}"),
            )
        )
    if reference is not None and reference > 0:
        # the label as its own annotation: on a log axis Plotly places annotations in log10
        # units, and add_hline's own annotation would float decades away from its line
        fig.add_hline(y=reference, line=PRED_STYLE)
        fig.add_annotation(
            x=1.0,
            xref="paper",
            y=math.log10(reference),
            text=f"{reference_label} {reference:.4g}",
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font={"color": PRED_STYLE["color"]},
        )
    return _layout(fig, title, "step", "loss", log_x=log_x, log_y=True)


def singular_values_over_training(
    rows: Sequence[Mapping[str, Any]], layer: int, predicted: float | None = None
) -> go.Figure:
    """Top K+1 singular values of W_layer (1-based) against step, with the predicted σ_l."""
    fig = go.Figure()
    steps = [int(r["step"]) for r in rows]
    xs, log_x = _steps_axis(steps)
    count = max((len(r["sv"][layer - 1]) for r in rows if r.get("sv")), default=0)
    for j in range(count):
        ys = [r["sv"][layer - 1][j] if r.get("sv") else None for r in rows]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=_positive(ys),
                mode="lines",
                name=f"s{j + 1}",
                line={"color": COLORS[j % len(COLORS)]},
            )
        )
    if predicted:
        fig.add_hline(y=predicted, line=PRED_STYLE, annotation_text=f"σ_{layer} = {predicted:.6g}")
    return _layout(
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
                y=_positive(s),
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
    return _layout(
        fig, f"Top singular values at step {step}", "weight", "singular value", log_y=True
    )


# ----------------------------------------------------------------------- theory
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
    return _layout(fig, "Optimal shrinkage γ against λ (all λ equal)", "λ", "γ", log_x=True)


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
    return _layout(fig, title, "eigenvalue", "multiplicity", log_y=max(mult, default=1) > 50)


# ----------------------------------------------------------------------- spectra
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
    for p in sorted(set(round(x, 12) for x in predicted or [])):
        fig.add_vline(x=mark(p), line=PRED_STYLE, annotation_text=f"pred {p:.6g}")
    fig.update_layout(barmode="overlay")
    return _layout(fig, title, xlabel, "count", log_y=True)


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
    return _layout(fig, title, "index (descending)", "eigenvalue")


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
    return _layout(fig, title, xlabel, "density (linear scale)")


def series_lines(
    steps: Sequence[int],
    lines: Mapping[str, Sequence[float | None]],
    title: str,
    ylabel: str,
    log_y: bool = False,
    reference: float | None = None,
    reference_label: str = "predicted",
) -> go.Figure:
    """Several named quantities against checkpoint step (analysis series)."""
    xs, log_x = _steps_axis(list(steps))
    fig = go.Figure()
    for i, (name, ys) in enumerate(lines.items()):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=_positive(ys) if log_y else list(ys),
                mode="lines+markers",
                name=name,
                line={"color": COLORS[i % len(COLORS)]},
            )
        )
    if reference is not None:
        fig.add_hline(y=reference, line=PRED_STYLE, annotation_text=reference_label)
    return _layout(fig, title, "step", ylabel, log_x=log_x, log_y=log_y)


# ----------------------------------------------------------------------- heatmaps
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
    """Annotated heatmap; ``diverging`` centres a red–blue scale at 0 (for signed matrices)."""
    z = np.asarray(matrix, dtype=float)
    kw: dict[str, Any] = {}
    if diverging:
        bound = float(np.nanmax(np.abs(z))) if z.size else 1.0
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
    return _layout(fig, title, "", "", height=side)


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
    for p in sorted({round(v, 12) for v in predicted or [] if v and v > 0}):
        fig.add_vline(x=math.log10(p), line=PRED_STYLE, annotation_text=f"pred {p:.6g}")
    zeros = hist.get("zeros", 0)
    fig.update_layout(barmode="overlay")
    return _layout(
        fig,
        f"{title} — {zeros} eigenvalues are 0 (|λ| < {hist.get('floor', 0):.1e})",
        "log10 |eigenvalue|",
        "count",
        log_y=True,
    )


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
    return _layout(fig, title, "", ylabel)


# ----------------------------------------------------------------------- sweeps (studies)
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
    return _layout(
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
    return _layout(
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
    return _layout(
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
    return _layout(
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
                y=_positive(ys) if log_y else ys,
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
    return _layout(fig, title, x, ylabel or y, log_x=log_x, log_y=log_y)


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


# ----------------------------------------------------------------------- real network vs UFM
def head_spectra_vs_ufm(report: Mapping[str, Any]) -> go.Figure:
    """For every head layer of a real-network report: its top K² + K fit-Hessian eigenvalues
    (rank on x, log y) beside the UFM prediction with the same K, L, λ (λ_H/N): K² equal
    outliers at the dashed value, then the bulk (0 for the fit Hessian, not drawn)."""
    K2 = int(report["config"]["K"]) ** 2
    fig = go.Figure()
    for i, lay in enumerate(report["layers"]):
        top = [float(v) for v in lay["hessian_top"]]
        fig.add_trace(go.Scatter(
            x=list(range(1, len(top) + 1)), y=_positive(top), mode="markers",
            name=f"W_{lay['layer']} measured", marker={"color": COLORS[i % len(COLORS)],
                                                       "size": 6},
            hovertemplate="rank %{x}<br>λ = %{y:.4g}<extra>%{fullData.name}</extra>",
        ))
        pred = lay.get("hessian_predicted")
        if pred:
            fig.add_trace(go.Scatter(
                x=[1, K2], y=[pred, pred], mode="lines", name=f"W_{lay['layer']} UFM prediction",
                line={**PRED_STYLE, "color": COLORS[i % len(COLORS)]},
            ))
    fig.add_vline(x=K2 + 0.5, line={"dash": "dot", "color": "#888"},
                  annotation_text=f"K² = {K2}", annotation_position="top right")
    return _layout(fig, "Head-layer Hessian: measured top eigenvalues vs the UFM's K² outliers",
                   "eigenvalue rank", "eigenvalue (fit Hessian)", log_y=True, height=440)
