"""Eigenspace tracking (Eigenspace tracking page): the overlap of each layer's top-K² Hessian
eigenspace with the last and the previous checkpoint's over training, and the squared cosines
between the eigenvectors of two checkpoints.

Plain data in (the ``analysis/series.json`` dict, lists of numbers), ``go.Figure`` out; the
numbers come from :mod:`dufm_core.tracking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from ui.figures.common import COLORS, PRED_STYLE, block_label, layout, steps_axis

OVERLAP_TITLES = {
    "overlap_final": "Overlap with the last checkpoint's top-K² eigenspace",
    "overlap_prev": "Overlap with the previous checkpoint's top-K² eigenspace",
}


def overlap_lines(series: Mapping[str, Any], key: str) -> dict[str, list[float | None]]:
    """``key`` (overlap_final | overlap_prev) of every layer, and of the full Hessian where the
    series has it, per entry: {"layer l" / "full Hessian": values} (None where missing)."""
    entries = series.get("entries") or []
    depth = max((len(e.get("layers") or []) for e in entries), default=0)
    lines: dict[str, list[float | None]] = {}
    for l in range(depth):
        lines[f"layer {l + 1}"] = [
            (e["layers"][l].get(key) if len(e.get("layers") or []) > l else None)
            for e in entries
        ]
    if any(e.get("full") for e in entries):
        lines["full Hessian"] = [(e.get("full") or {}).get(key) for e in entries]
    return lines


def overlap_over_training(series: Mapping[str, Any], key: str = "overlap_final") -> go.Figure:
    """Overlap (mean cos² of the principal angles, in [0, 1]) against step, one line per layer
    and one for the full Hessian (dashed), with 1 (the same space) as the reference."""
    steps = [int(e["step"]) for e in series.get("entries") or []]
    xs, log_x = steps_axis(steps)
    fig = go.Figure()
    for i, (name, ys) in enumerate(overlap_lines(series, key).items()):
        full = name == "full Hessian"
        fig.add_trace(go.Scatter(
            x=xs, y=list(ys), mode="lines+markers", name=name,
            line={"color": "#000000" if full else COLORS[i % len(COLORS)],
                  "dash": "dot" if full else "solid"},
        ))
    fig.add_hline(y=1.0, line=PRED_STYLE, annotation_text="same space")
    fig = layout(fig, OVERLAP_TITLES.get(key, key), "step", "mean cos² of principal angles",
                 log_x=log_x)
    fig.update_yaxes(range=[-0.02, 1.05])
    return fig


def cos2_heatmap(cos2: Sequence[Sequence[float]], step_a: int, step_b: int,
                 what: str) -> go.Figure:
    """(U_aᵀU_b)² as a heatmap: row i is the i-th eigenvector of checkpoint ``step_a``, column
    j the j-th of ``step_b``, colour from 0 (orthogonal) to 1 (the same direction). Rows and
    columns sum to at most 1; inside a degenerate cluster the split between its entries
    depends on the solver's basis, the cluster's total does not."""
    rows = len(cos2)
    cols = len(cos2[0]) if rows else 0
    fig = go.Figure(go.Heatmap(
        z=[list(r) for r in cos2], x=[f"v{j + 1}" for j in range(cols)],
        y=[f"u{i + 1}" for i in range(rows)], zmin=0.0, zmax=1.0, colorscale="Blues",
        colorbar={"title": "cos²"},
        hovertemplate="u%{y} · v%{x}: cos² = %{z:.4f}<extra></extra>",
    ))
    fig = layout(fig, f"{what}: (u_iᵀv_j)², u at step {step_a}, v at step {step_b}",
                 f"eigenvectors v_j at step {step_b}", f"eigenvectors u_i at step {step_a}",
                 height=420)
    fig.update_yaxes(autorange="reversed")
    return fig


def principal_cos2_bars(cos2: Sequence[float], step_a: int, step_b: int,
                        what: str) -> go.Figure:
    """cos² of the principal angles between the two top spaces (descending): basis-free; their
    mean is the overlap."""
    fig = go.Figure(go.Bar(x=[f"θ{i + 1}" for i in range(len(cos2))], y=list(cos2),
                           marker={"color": COLORS[0]}, name="cos² θ_i"))
    fig = layout(fig, f"{what}: principal angles between steps {step_a} and {step_b}",
                 "principal angle", "cos² θ_i", height=420)
    fig.update_yaxes(range=[0.0, 1.05])
    return fig


def attribution_over_training(series: Mapping[str, Any], top_clusters: int = 1) -> go.Figure:
    """The top full-Hessian outlier cluster's share in each parameter block against step (solid),
    and the part of that share inside the block's predicted directions μ_c^{(l+1)}μ_{c'}^{(l)ᵀ}
    (dashed, same colour): docs/design.md §8.3. Steps whose report has no attribution are
    gaps."""
    entries = series.get("entries") or []
    steps = [int(e["step"]) for e in entries]
    xs, log_x = steps_axis(steps)
    blocks: list[str] = next((list(e["full_blocks"]) for e in entries if e.get("full_blocks")), [])
    fig = go.Figure()
    for c in range(top_clusters):
        for b, name in enumerate(blocks):
            color = COLORS[b % len(COLORS)]
            for key, dash, label in (("layers", "solid", "share"),
                                     ("predicted", "dash", "in predicted directions")):
                ys = []
                for e in entries:
                    recs = e.get("full_attribution") or []
                    vals = recs[c].get(key) if len(recs) > c else None
                    ys.append(vals[b] if vals is not None and b < len(vals) else None)
                if all(y is None for y in ys):
                    continue
                fig.add_trace(go.Scatter(
                    x=xs, y=ys, mode="lines+markers", name=f"{block_label(name)} · {label}",
                    line={"color": color, "dash": dash}, connectgaps=False))
    fig = layout(fig, "Top full-Hessian outlier cluster: its share in each block", "step",
                 "share of the cluster's eigenspace", log_x=log_x)
    fig.update_yaxes(range=[-0.02, 1.02])
    return fig

