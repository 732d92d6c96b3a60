"""The figures of the analysis pages as named lists: one function per page (or page section)
returns its figures as ``(name, figure)`` pairs, in the page's order.

Each list is used twice: by its page, which shows every figure with :func:`ui.charts.show`
(``name`` is the download's file stem), and by the run's figure bundle (``ui/bundle.py``), which
writes ``figures/<name>.svg`` and ``data/<name>.csv``. So a title or a builder changed here
changes both; the pages keep only the layout and the widgets, whose choices (the layer, the fit
or total Hessian) are the functions' arguments. A figure whose data the report or the metrics
lack is left out of the list.

Also here, because the figures depend on them: which theory applies to a report
(:func:`theory_applies`, also used by the captions of ``ui/analysis_view.py``), a series'
values per layer (:func:`series_lines`) and the UFM loss a run is compared with
(:func:`ufm_loss_reference`). Nothing here draws on a page: no Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dufm_core import kinds
from dufm_core.config import ConfigError, RunConfig
from dufm_core.kinds import predict_for
from dufm_core.report_types import Report
from ui import figures

Named = list[tuple[str, go.Figure]]
Rows = list[dict[str, Any]]


# --------------------------------------------------------------------------- which theory
@dataclass(frozen=True)
class Applies:
    """Which theory applies to a report's run (``report.config``), for the figures' predicted
    values and the captions.

    ``closed_form``: the linear-MSE closed forms hold (MSE, every λ positive;
    :meth:`dufm_core.predictions.TheoryFor.closed_form`); ``relu``: they hold at the best ReLU
    DNC point only; ``ce``: cross-entropy, whose report carries DNC-point values at the measured
    logit scale (``ce_alpha``) when it could measure one; ``real``: a real network, compared
    with the UFM of the same K, L and λ (λ_H/N)."""

    closed_form: bool
    relu: bool
    ce: bool
    real: bool
    ce_alpha: float | None = None

    @property
    def measured_only(self) -> bool:
        """No prediction to draw: neither a closed form nor CE DNC-point values."""
        return not self.closed_form and self.ce_alpha is None


def theory_applies(report: Report) -> Applies:
    """What theory the figures and captions of ``report`` may state, from its config (through
    :func:`dufm_core.kinds.predict_for`) and its ``theory`` block."""
    raw = dict(report.config or {})
    th = report.theory
    try:
        closed_form = predict_for(RunConfig.from_dict(raw)).closed_form
    except (ConfigError, KeyError, TypeError, ValueError):  # a report of an older config
        closed_form = raw.get("loss", "mse") == "mse" and th is not None and th.gamma is not None
    return Applies(
        closed_form=closed_form,
        relu=raw.get("activation") == "relu",
        ce=raw.get("loss") == "ce",
        real=raw.get("model", "ufm") != "ufm",
        ce_alpha=th.ce_alpha_measured if th is not None and th.ce_layer_eigenvalues else None,
    )


def shows_identity(applies: Applies) -> bool:
    """Whether the Gradients page draws the predicted I/K (only where a closed form applies)."""
    return applies.closed_form and not applies.ce


def series_lines(series: dict[str, Any], layer: int, key: str) -> tuple[list[int], list]:
    """(steps, the value ``key`` of layer ``layer`` at each step) of a ``series.json``."""
    steps = [e["step"] for e in series["entries"]]
    return steps, [e["layers"][layer - 1][key] for e in series["entries"]]


def ufm_loss_reference(cfg: RunConfig) -> float | None:
    """The closed-form loss at the UFM optimum for a linear-MSE-comparable run, else None.

    A real network is compared at λ_H,UFM = λ_H/N (``cfg.ufm_lam_h``); its loss includes the
    backbone's weight decay, so with λ_b > 0 there is no UFM value to compare with."""
    if cfg.lam_backbone > 0:
        return None
    pred = kinds.predict_for(cfg).prediction()
    return None if pred is None else pred.loss


# --------------------------------------------------------------------------- training curves
def loss_figures(run_id: str, rows: Rows, cfg: RunConfig) -> Named:
    """The live view's loss (and, for a real network, its accuracy first): ``accuracy`` in
    eval mode and ``loss`` (eval loss beside the batch loss, dashed UFM optimum), or a UFM's
    ``loss`` with its closed form dashed. The Collapse page shows the real network's pair."""
    if figures.has_accuracy(rows):
        return [("accuracy", figures.accuracy_curves(rows, "Accuracy (eval mode)")),
                ("loss", figures.batch_loss_curves(
                    rows, ufm_loss_reference(cfg), reference_label="UFM optimum (λ_H/N)"))]
    ref = ufm_loss_reference(cfg)
    title = "Loss (closed form dashed)" if ref is not None else "Loss"
    return [("loss", figures.metric_curves({run_id: rows}, "loss", reference=ref, title=title))]


def collapse_figures(rows: Rows, cfg: RunConfig) -> Named:
    """The Collapse page's DNC metrics per layer over training."""
    names = [f"H_{l}" for l in range(1, cfg.depth + 1)] + ["Z (logits)"]
    if kinds.get(cfg.model).real_network:
        names[0] = "H_1 = h(x)"
    weights = [f"W_{l}" for l in range(1, cfg.depth + 1)]
    return [
        ("nc1_per_layer", figures.layer_curves(rows, "nc1", "NC1 per layer", layer_names=names)),
        ("nc2_per_layer", figures.layer_curves(rows, "nc2", "NC2 per layer", layer_names=names)),
        ("nc3_per_weight", figures.layer_curves(rows, "nc3", "NC3 per weight W_l",
                                                layer_names=weights)),
        ("dnc1_frobenius", figures.layer_curves(
            rows, "nc1_fro", "‖Σ_W Σ_B^†‖_F² (the reproduction's DNC1)", layer_names=names)),
    ]


def singular_value_figures(rows: Rows, cfg: RunConfig, layers: Sequence[int]) -> Named:
    """The Collapse page's singular values of each W_l in ``layers`` over training, then those
    of every W_l at the last step that logged them, against the run's UFM σ_l (λ_H/N for a real
    network); none when no step logged singular values."""
    last = next((r for r in reversed(rows) if r.get("sv")), None)  # a row may lack sv
    if last is None:
        return []
    pred = kinds.predict_for(cfg).prediction()
    out: Named = [(f"singular_values_w{layer}", figures.singular_values_over_training(
        rows, layer, pred.sigma[layer - 1] if pred else None)) for layer in layers]
    out.append(("singular_values_last_step", figures.singular_values_at_step(
        last["sv"], pred.sigma if pred else None, last["step"])))
    return out


def training_figures(run_id: str, rows: Rows, cfg: RunConfig) -> Named:
    """Every curve of the live view and the Collapse page (singular values of every layer)."""
    if not rows:
        return []
    return (loss_figures(run_id, rows, cfg) + collapse_figures(rows, cfg)
            + singular_value_figures(rows, cfg, range(1, cfg.depth + 1)))


# --------------------------------------------------------------------------- a report's figures
def _lam_w(report: Report, layer: int) -> float:
    shift = report.config["lam_w"]
    return shift[layer - 1] if isinstance(shift, list) else shift


def spectrum_figures(report: Report, layer: int, total: bool = False) -> Named:
    """The Spectrum page's layer view: ``spectrum_layer<l>`` (the binned histogram, fit Hessian
    only) and ``top_eigenvalues_layer<l>`` (``…_total`` for the total Hessian, whose predicted
    values are shifted by λ_{W_l}), with the predictions that apply."""
    K2 = report.K ** 2
    lay = report.layers[layer - 1]
    shift = _lam_w(report, layer) if total else None
    pred_top = [] if theory_applies(report).measured_only else [
        v if shift is None else v + shift
        for v in (lay.hessian_predicted_top or []) if v is not None]
    top = (lay.hessian_top_total if total else lay.hessian_top) or []
    out: Named = []
    if lay.hessian_histogram and not total:
        out.append((f"spectrum_layer{layer}", figures.binned_histogram(
            lay.hessian_histogram, top, K2, pred_top, title=f"Layer-{layer} spectrum")))
    if top:
        out.append((f"top_eigenvalues_layer{layer}" + ("_total" if total else ""),
                    figures.top_eigenvalues(top, pred_top, K2, f"Top eigenvalues, layer {layer}")))
    return out


def full_hessian_figures(report: Report) -> Named:
    """The Spectrum page's full view: the full fit-Hessian's top eigenvalues and, when it was
    estimated, its spectral density; none without a full Hessian."""
    full = report.full_hessian
    if full is None:
        return []
    out: Named = [("full_top_eigenvalues", figures.top_eigenvalues(
        full.top, full.predicted, report.K ** 2, "Top eigenvalues of the full fit-Hessian"))]
    if full.density:
        d = full.density
        logs = [math.log10(v) for v in full.predicted if v and v > 0]
        out.append(("full_density", figures.density(
            d["grid"], d["density"], "log10 |eigenvalue|",
            f"Spectral density ({d['method']})", predicted=logs)))
    return out


def alignment_figures(report: Report, layer: int) -> Named:
    """The Alignment page: f_cc', the subspace capture, the eigenvector cosines and the
    principal angles of layer ``layer``."""
    K = report.K
    lay = report.layers[layer - 1]
    labels = [f"c={c + 1}" for c in range(K)]
    out: Named = []
    if lay.alignment_f is not None:
        out.append((f"alignment_f_layer{layer}", figures.heatmap(
            lay.alignment_f, f"f_cc' (layer {layer}; mean {lay.alignment_f_mean:.4f})",
            labels, labels, zmin=0, zmax=1)))
    if lay.subspace_capture is not None:
        out.append((f"subspace_capture_layer{layer}", figures.heatmap(
            lay.subspace_capture, "Subspace capture π_cc'", labels, labels, zmin=0, zmax=1)))
    if lay.cosine_heatmap is not None:
        heat = np.asarray(lay.cosine_heatmap)
        pairs = [f"({a + 1},{b + 1})" for a in range(K) for b in range(K)]
        out.append((f"eigenvector_cosines_layer{layer}", figures.heatmap(
            heat, "|cos(predicted v_cc', eigenvector u_j)|",
            [f"u{j + 1}" for j in range(heat.shape[1])], pairs, zmin=0, zmax=1,
            annotate=K <= 4)))
    if lay.principal_angles is not None:
        angles = np.degrees(lay.principal_angles).tolist()
        out.append((f"principal_angles_layer{layer}", figures.bars(
            angles, "Principal angles span{v_cc'} vs top-K² eigenspace", "degrees")))
    return out


def gradient_figures(report: Report, layer: int) -> Named:
    """The Gradients page: the measured C of layer ``layer`` (beside the predicted I/K on one
    colour scale where :func:`shows_identity`, else on a diverging scale), then the gradient's
    coefficients on the top-K² Hessian eigenvectors."""
    K = report.K
    lay = report.layers[layer - 1]
    labels = [f"c={c + 1}" for c in range(K)]
    out: Named = []
    if lay.gradient_coefficients is not None:
        C = np.asarray(lay.gradient_coefficients)
        cols = [f"c'={c + 1}" for c in range(K)]
        title = f"C (layer {layer}), measured"
        if shows_identity(theory_applies(report)):
            identity = np.eye(K) / K
            scale = figures.shared_scale(C, identity)  # one colour scale: the two are compared
            out.append((f"gradient_C_layer{layer}",
                        figures.heatmap(C, title, cols, labels, **scale)))
            out.append((f"gradient_I_over_K_layer{layer}",
                        figures.heatmap(identity, "Predicted I/K", cols, labels, **scale)))
        else:
            out.append((f"gradient_C_layer{layer}",
                        figures.heatmap(C, title, cols, labels, diverging=True)))
    if lay.gradient_eigenbasis is not None:
        out.append((f"gradient_eigenbasis_layer{layer}", figures.bars(
            lay.gradient_eigenbasis, "Coefficients ⟨u_j, g⟩²/‖g‖² on the top-K² Hessian "
            f"eigenvectors (sum = {lay.gradient_inside_fraction:.6f})", "coefficient")))
    return out


def report_figures(report: Report) -> Named:
    """The Spectrum (fit), Alignment and Gradients figures of every layer, then the full
    Hessian's: what the bundle keeps of a report."""
    out: Named = []
    for layer in range(1, len(report.layers) + 1):
        out += (spectrum_figures(report, layer) + alignment_figures(report, layer)
                + gradient_figures(report, layer))
    return out + full_hessian_figures(report)


def spectrum_series_figures(series: dict[str, Any], report: Report, layer: int) -> Named:
    """The Spectrum page's over-training figures of layer ``layer`` from ``series.json``: the
    top-K² eigenvalues and λ(K²+1) against the step (the report's prediction dashed), and the
    equalisation of the outliers."""
    K2 = report.K ** 2
    steps, tops = series_lines(series, layer, "top")
    lines = {f"λ{j + 1}": [t[j] if len(t) > j else None for t in tops] for j in range(K2)}
    lines["λ(K²+1)"] = series_lines(series, layer, "next")[1]
    return [
        (f"top_eigenvalues_layer{layer}_over_training", figures.series_lines(
            steps, lines, f"Top-K² eigenvalues of layer {layer} against step", "eigenvalue",
            log_y=True, reference=report.layers[layer - 1].hessian_predicted)),
        (f"outlier_ratio_layer{layer}_over_training", figures.series_lines(
            steps, {"max/min of top K²": series_lines(series, layer, "outlier_ratio")[1]},
            "Equalisation of the outliers", "ratio", log_y=True, reference=1.0,
            reference_label="1 at collapse")),
    ]
