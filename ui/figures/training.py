"""Curves against the training step: logged metrics (loss, gradient norm, per-layer collapse
measures), a real network's accuracy and its two losses, and analysis series per checkpoint."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, layout, positive, steps_axis


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
        xs, _ = steps_axis(steps)
        ys = [r.get(key) for r in rows]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=positive(ys) if log_y else ys,
                mode="lines",
                name=label,
                line={"color": COLORS[i % len(COLORS)]},
            )
        )
    _, log_x = steps_axis(all_steps or [0])
    if reference is not None:
        fig.add_hline(
            y=reference,
            line=PRED_STYLE,
            annotation_text=reference_label,
            annotation_position="top right",
        )
    return layout(fig, title or key, "step", key, log_x=log_x, log_y=log_y)


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
    xs, log_x = steps_axis(steps)
    n_layers = max((len(r.get(key) or []) for r in rows), default=0)
    for l in range(n_layers):
        ys = [v[l] if l < len(v := r.get(key) or []) else None for r in rows]  # gaps if short
        name = layer_names[l] if layer_names else f"layer {l + 1}"
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=positive(ys) if log_y else ys,
                mode="lines",
                name=name,
                line={"color": COLORS[l % len(COLORS)]},
            )
        )
    return layout(fig, title or key, "step", key, log_x=log_x, log_y=log_y)


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
    xs, log_x = steps_axis(steps)
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
    fig = layout(fig, title, "step", "accuracy", log_x=log_x)
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
    xs, log_x = steps_axis(steps)
    lines = (("loss", "loss (eval, training set)"), ("batch_loss", "batch loss (train mode)"))
    for i, (key, name) in enumerate(lines):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=positive([r.get(key) for r in rows]),
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
    return layout(fig, title, "step", "loss", log_x=log_x, log_y=True)


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
    xs, log_x = steps_axis(list(steps))
    fig = go.Figure()
    for i, (name, ys) in enumerate(lines.items()):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=positive(ys) if log_y else list(ys),
                mode="lines+markers",
                name=name,
                line={"color": COLORS[i % len(COLORS)]},
            )
        )
    if reference is not None:
        fig.add_hline(y=reference, line=PRED_STYLE, annotation_text=reference_label)
    return layout(fig, title, "step", ylabel, log_x=log_x, log_y=log_y)


LIMIT_STYLE = {"dash": "dash", "color": "#333333", "width": 2}  # the stability limit 2/η


def sharpness_curves(
    rows: Sequence[Mapping[str, Any]],
    limit: float | None = None,
    predicted: float | None = None,
    limit_label: str = "2/η",
    title: str = "Sharpness: top eigenvalue of the total Hessian",
) -> go.Figure:
    """The logged ``sharpness`` against step, with the stability limit (dashed; default the
    rows' ``sharpness_limit``), the rows flagged ``edge_of_stability`` as red markers and the
    first of them annotated, and, where the theory gives it, the closed-form sharpness at the
    optimum (the prediction style). Rows without a sharpness are left out."""
    rows = [r for r in rows if r.get("sharpness") is not None]
    fig = go.Figure()
    steps = [int(r["step"]) for r in rows]
    xs, log_x = steps_axis(steps or [0])
    fig.add_trace(go.Scatter(x=xs, y=[r["sharpness"] for r in rows], mode="lines+markers"
                             if len(rows) <= 30 else "lines", name="sharpness",
                             line={"color": COLORS[0]}))
    if limit is None:
        limit = next((r["sharpness_limit"] for r in reversed(rows)
                      if r.get("sharpness_limit") is not None), None)
    if limit is not None:
        fig.add_hline(y=limit, line=LIMIT_STYLE, annotation_text=f"{limit_label} = {limit:.4g}",
                      annotation_position="top left")
    if predicted is not None:
        fig.add_hline(y=predicted, line=PRED_STYLE, annotation_position="top right",
                      annotation_text=f"closed form at the optimum {predicted:.4g}")
    edge = [(x, r) for x, r in zip(xs, rows, strict=True) if r.get("edge_of_stability")]
    if edge:
        fig.add_trace(go.Scatter(
            x=[x for x, _ in edge], y=[r["sharpness"] for _, r in edge], mode="markers",
            name=f"at the edge (≥ {limit_label})",
            marker={"color": PRED_STYLE["color"], "symbol": "x", "size": 9}))
        x0, r0 = edge[0]
        fig.add_annotation(x=math.log10(x0) if log_x else x0, y=r0["sharpness"],
                           text=f"reached {limit_label} at step {int(r0['step'])}",
                           showarrow=True, arrowhead=2, ay=-30,
                           font={"color": PRED_STYLE["color"]})
    return layout(fig, title, "step", "sharpness λ_max", log_x=log_x)
