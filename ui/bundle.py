"""A run's figure bundle: one .zip with the figures of its analysis pages (SVG, PNG on request),
each figure's data as CSV, the tidy ``metrics.csv`` and ``config.json``, for a paper's figures.

The figures are made from the run's data (``metrics.jsonl``, the report of its last checkpoint,
``series.json`` when complete) with the same builders and titles as the pages, not by running the
pages. :func:`run_figures` lists them; :func:`build_bundle` writes the zip (all images drawn by
one browser, ``ui/figures/export.py``); :func:`offer` is the button on a finished run's view.

Zip layout (``<run id>-figures/`` at the top)::

    README.txt         what is inside, one line per figure with its title
    config.json        the run's config
    metrics.csv        ui/exports.py's tidy metrics (one column per layer value)
    figures/NAME.svg   every figure (and NAME.png at 300 dpi for 7 in when asked)
    data/NAME.csv      the data of figure NAME, one row per point (export.figure_data)
"""

from __future__ import annotations

import io
import json
import math
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dufm_core import kinds, reports
from dufm_core.report_types import Report
from dufm_core.store import Run, read_json
from ui import exports, figures
from ui.analysis_view import series_lines, shows_identity, theory_applies
from ui.figures import export
from ui.live import ufm_loss_reference

Progress = Callable[[str, float], None] | None
Named = list[tuple[str, go.Figure]]


def _training_figures(run: Run) -> Named:
    """The curves of the live view and the Collapse page, from ``metrics.jsonl``."""
    rows = run.metrics()
    if not rows:
        return []
    cfg = run.config()
    real = kinds.get(cfg.model).real_network
    out: Named = []
    if figures.has_accuracy(rows):
        out.append(("accuracy", figures.accuracy_curves(rows, "Accuracy (eval mode)")))
        out.append(("loss", figures.batch_loss_curves(
            rows, ufm_loss_reference(cfg), reference_label="UFM optimum (λ_H/N)")))
    else:
        ref = ufm_loss_reference(cfg)
        title = "Loss (closed form dashed)" if ref is not None else "Loss"
        out.append(("loss", figures.metric_curves({run.id: rows}, "loss", reference=ref,
                                                  title=title)))
    names = [f"H_{l}" for l in range(1, cfg.depth + 1)] + ["Z (logits)"]
    if real:
        names[0] = "H_1 = h(x)"
    weights = [f"W_{l}" for l in range(1, cfg.depth + 1)]
    out += [
        ("nc1_per_layer", figures.layer_curves(rows, "nc1", "NC1 per layer", layer_names=names)),
        ("nc2_per_layer", figures.layer_curves(rows, "nc2", "NC2 per layer", layer_names=names)),
        ("nc3_per_weight", figures.layer_curves(rows, "nc3", "NC3 per weight W_l",
                                                layer_names=weights)),
        ("dnc1_frobenius", figures.layer_curves(
            rows, "nc1_fro", "‖Σ_W Σ_B^†‖_F² (the reproduction's DNC1)", layer_names=names)),
    ]
    pred = kinds.predict_for(cfg).prediction()
    if any(r.get("sv") for r in rows):
        for layer in range(1, cfg.depth + 1):
            out.append((f"singular_values_w{layer}", figures.singular_values_over_training(
                rows, layer, pred.sigma[layer - 1] if pred else None)))
        last = next(r for r in reversed(rows) if r.get("sv"))
        out.append(("singular_values_last_step", figures.singular_values_at_step(
            last["sv"], pred.sigma if pred else None, last["step"])))
    return out


def _report_figures(report: Report) -> Named:
    """The Spectrum, Alignment and Gradients figures of every layer, and the full Hessian's."""
    K = report.K
    K2 = K * K
    applies = theory_applies(report)
    out: Named = []
    labels = [f"c={c + 1}" for c in range(K)]
    for layer, lay in enumerate(report.layers, start=1):
        pred_top = [] if applies.measured_only else [
            v for v in (lay.hessian_predicted_top or []) if v is not None]
        top = lay.hessian_top or []
        if lay.hessian_histogram:
            out.append((f"spectrum_layer{layer}", figures.binned_histogram(
                lay.hessian_histogram, top, K2, pred_top, title=f"Layer-{layer} spectrum")))
        if top:
            out.append((f"top_eigenvalues_layer{layer}", figures.top_eigenvalues(
                top, pred_top, K2, f"Top eigenvalues, layer {layer}")))
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
        if lay.gradient_coefficients is not None:
            C = np.asarray(lay.gradient_coefficients)
            cols = [f"c'={c + 1}" for c in range(K)]
            title = f"C (layer {layer}), measured"
            if shows_identity(applies):
                identity = np.eye(K) / K
                scale = figures.shared_scale(C, identity)
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
    full = report.full_hessian
    if full is not None:
        out.append(("full_top_eigenvalues", figures.top_eigenvalues(
            full.top, full.predicted, K2, "Top eigenvalues of the full fit-Hessian")))
        if full.density:
            d = full.density
            logs = [math.log10(v) for v in full.predicted if v and v > 0]
            out.append(("full_density", figures.density(
                d["grid"], d["density"], "log10 |eigenvalue|",
                f"Spectral density ({d['method']})", predicted=logs)))
    return out


def _series_figures(run: Run, report: Report) -> Named:
    """The over-training figures of the Spectrum page, when ``series.json`` covers every
    checkpoint (it is never computed here: that is the pages' "Analyse every checkpoint")."""
    path = run.analysis_dir / "series.json"
    if not path.is_file():
        return []
    series = read_json(path)
    if series.get("steps") != run.checkpoints():
        return []
    out: Named = []
    K2 = report.K ** 2
    for layer, lay in enumerate(report.layers, start=1):
        steps, tops = series_lines(series, layer, "top")
        lines = {f"λ{j + 1}": [t[j] if len(t) > j else None for t in tops] for j in range(K2)}
        lines["λ(K²+1)"] = series_lines(series, layer, "next")[1]
        out.append((f"top_eigenvalues_layer{layer}_over_training", figures.series_lines(
            steps, lines, f"Top-K² eigenvalues of layer {layer} against step", "eigenvalue",
            log_y=True, reference=lay.hessian_predicted)))
        out.append((f"outlier_ratio_layer{layer}_over_training", figures.series_lines(
            steps, {"max/min of top K²": series_lines(series, layer, "outlier_ratio")[1]},
            "Equalisation of the outliers", "ratio", log_y=True, reference=1.0,
            reference_label="1 at collapse")))
    return out


def run_figures(run: Run, progress: Progress = None) -> Named:
    """[(name, figure)] of every figure of ``run``'s pages: training curves, then the report
    of its last checkpoint (computed and cached, as the Spectrum page does, when not cached
    yet), then the series. Names are unique file stems."""
    out = _training_figures(run)
    steps = run.checkpoints()
    if steps:
        report = reports.analyze(
            run, steps[-1],
            progress=(lambda m, f: progress(f"analysing the last checkpoint: {m}", 0.3 * f))
            if progress else None,
        )
        out += _report_figures(report) + _series_figures(run, report)
    names = [n for n, _ in out]
    assert len(names) == len(set(names)), names
    return out


def build_bundle(run: Run, png: bool = False, progress: Progress = None) -> bytes:
    """The zip of ``run``'s figures (see the module docstring). SVG always and PNG when ``png``,
    if kaleido can draw here; else README.txt says why and the zip holds the data only."""
    def say(msg: str, frac: float) -> None:
        if progress is not None:
            progress(msg, min(max(frac, 0.0), 1.0))

    say("collecting the figures", 0.0)
    named = run_figures(run, progress)
    top = f"{run.id}-figures/"
    missing = export.image_engine_missing()
    images: list[bytes] = []
    fmts = ["svg"] + ["png"] * png
    if missing is None and named:
        jobs = [(fig, fmt) for _, fig in named for fmt in fmts]
        images = export.render_images(
            [f for f, _ in jobs], [m for _, m in jobs],
            progress=lambda done: say(f"drawing figure files: {done}/{len(jobs)}",
                                      0.3 + 0.65 * done / len(jobs)),
        )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        lines = [f"Figures of run {run.id} (DUFM Lab), {time.strftime('%Y-%m-%d %H:%M')}.",
                 "figures/NAME.svg (vector)" + (", NAME.png (2100 px wide: 300 dpi at 7 in)"
                                                if png else "")
                 + "; data/NAME.csv: the figure's points (trace, type, x, y[, z]).",
                 "metrics.csv: one row per logged step, one column per value.", ""]
        if missing:
            lines.insert(1, f"No SVG/PNG in this bundle: {missing}.")
        z.writestr(top + "config.json", json.dumps(run.config().to_dict(), indent=2))
        rows = run.metrics()
        if rows:
            z.writestr(top + "metrics.csv", exports.tidy_metrics(rows).to_csv(index=False))
        it = iter(images)
        for name, fig in named:
            z.writestr(f"{top}data/{name}.csv", export.to_csv(fig))
            for fmt in fmts if images else []:
                z.writestr(f"{top}figures/{name}.{fmt}", next(it))
            lines.append(f"{name}: {fig.layout.title.text or ''}")
        z.writestr(top + "README.txt", "\n".join(lines) + "\n")
    say("done", 1.0)
    return buf.getvalue()


def offer(run: Run, where: Any = None) -> None:
    """The "Download figure bundle" control of a finished run (in ``where``, default the page):
    a button that builds the zip with a progress bar, then its download button."""
    import streamlit as st

    where = where or st
    key = f"bundle_{run.id}"
    c = where.columns([2, 1, 3], vertical_alignment="center")
    png = c[1].checkbox("with PNG", key=key + "_png", help="Also 300-dpi PNGs (slower).")
    if c[0].button("Prepare figure bundle", icon=":material/folder_zip:", key=key + "_make"):
        bar = where.progress(0.0, text="Preparing the figure bundle…")
        try:
            st.session_state[key] = build_bundle(
                run, png=png, progress=lambda m, f: bar.progress(f, text=m))
        except (export.ExportError, OSError, ValueError) as exc:  # ConfigError is a ValueError
            where.error(f"Figure bundle of {run.id}: {exc}")
        finally:
            bar.empty()
    if key in st.session_state:
        c[2].download_button(
            "⬇ Download figure bundle (.zip)", st.session_state[key],
            file_name=f"{run.id}-figures.zip", mime="application/zip", key=key + "_get",
            on_click="ignore", type="primary")
    else:
        c[2].caption("Every figure of this run as SVG (and PNG) with its data as CSV, "
                     "metrics.csv and config.json, in one .zip.")
