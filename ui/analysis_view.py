"""Analysis sections shared by the Spectrum, Alignment, Gradients and Inspect pages.

Each ``show_*`` function renders one part of an analysis report (docs/design.md §5): its figures,
from the page's list in ``ui/page_figures.py`` (the figure bundle's too), laid out on the page,
and its caption, which states only the theory that applies to the report's run
(:func:`theory_applies`:
the linear-MSE closed forms, the ReLU caveat, or measurements with CE's DNC-point values); the
report itself always comes from ``dufm_core.reports``. An uploaded checkpoint
(Inspect) is copied in chunks to a temporary file, hashed on the way, and read from there by the
engine: the upload is never copied again in memory, and its name never becomes a path.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import plotly.graph_objects as go
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from dufm_core import reports
from dufm_core.checkpoints import CheckpointError
from dufm_core.config import ConfigError
from dufm_core.kinds import load_checkpoint
from dufm_core.report_types import Report
from dufm_core.store import Run, read_json
from ui import charts, docs, figures, page_figures, shell
from ui.page_figures import Applies as Applies  # re-exported: the captions take one
from ui.page_figures import series_lines as series_lines  # re-exported for the pages
from ui.page_figures import shows_identity as shows_identity  # re-exported
from ui.page_figures import theory_applies as theory_applies  # re-exported

UPLOAD_CHUNK = 1 << 20  # bytes copied at a time from an upload to its temporary file
UPLOAD_SUFFIXES = (".pt", ".safetensors")  # the reader picks the format by the suffix
MAX_REFUSAL = 500  # characters of a refusal shown (on one line)


def stage_upload(source: BinaryIO, folder: Path, name: str) -> tuple[Path, str]:
    """Copy the uploaded file ``source`` into ``folder`` in chunks (never a second copy of it in
    memory), hashing it on the way; return (the file's path, its SHA-256 hex digest). The file is
    called ``upload`` with the suffix of ``name`` (``.pt`` unless it is ``.safetensors``): the
    visitor's file name never becomes a path."""
    suffix = Path(name).suffix.lower()
    path = folder / ("upload" + (suffix if suffix in UPLOAD_SUFFIXES else ".pt"))
    digest = hashlib.sha256()
    source.seek(0)
    with path.open("xb") as out:
        while chunk := source.read(UPLOAD_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return path, digest.hexdigest()


def report_of_path(name: str, path: Path, progress: reports.Progress = None) -> Report:
    """The report of the checkpoint file at ``path``, uploaded as ``name``, made by its model
    kind: a real network's on its head layers, from the data set its config names. Raises
    CheckpointError (a refused or broken file) or ConfigError (e.g. a real network's data set is
    not on this machine), their messages naming ``name``, never the temporary path."""
    try:
        checkpoint = load_checkpoint(path)
        return reports.analyze_checkpoint(checkpoint, run_id=name, full=True, progress=progress)
    except ConfigError as exc:
        message = _renamed(str(exc), path, name).removeprefix(f"{exc.field}: ")
        raise ConfigError(exc.field, message) from None
    except CheckpointError as exc:
        raise CheckpointError(_renamed(str(exc), path, name)) from None


def _renamed(message: str, path: Path, name: str) -> str:
    """``message`` with the temporary ``path`` (and its folder) replaced by the upload's name."""
    return message.replace(str(path), name).replace(str(path.parent), "(upload)")


def report_of_file(
    name: str, source: bytes | BinaryIO, progress: reports.Progress = None
) -> Report:
    """The report of an uploaded checkpoint file ``name`` whose content is ``source`` (an open
    binary file such as Streamlit's UploadedFile, or bytes): staged to a temporary file in
    chunks, then :func:`report_of_path`."""
    with tempfile.TemporaryDirectory(prefix="dufm-upload-") as tmp:
        path, _ = stage_upload(_as_file(source), Path(tmp), name)
        return report_of_path(name, path, progress)


def _as_file(source: bytes | BinaryIO) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source


def upload_report(up: UploadedFile) -> Report | None:
    """Inspect's upload: the report of the uploaded checkpoint ``up``, computed once per content
    in this session (keyed by its SHA-256) with a progress bar. A file that is refused or cannot
    be analysed gets one ``st.error`` line naming the file, and None: whatever its bytes (empty,
    random, truncated, a zip, a pickle), never a traceback (that goes to the server's stderr
    when the failure is not a plain refusal)."""
    with tempfile.TemporaryDirectory(prefix="dufm-upload-") as tmp:
        path, digest = stage_upload(up, Path(tmp), up.name)
        key = "inspect_" + digest
        if key in st.session_state:
            return st.session_state[key]
        bar = st.progress(0.0, text="Analysing…")
        try:
            report = report_of_path(
                up.name, path, lambda msg, f: bar.progress(min(max(f, 0.0), 1.0), text=msg)
            )
        except (CheckpointError, ConfigError) as exc:  # refused file, or absent data set
            st.error(shell.flat(str(exc), MAX_REFUSAL))
            return None
        except Exception as exc:  # a hostile file must not show a traceback
            shell.log_exception(exc, f"Inspect's analysis of the upload {up.name!r}")
            reason = shell.one_line(exc, _renamed(str(exc), path, up.name))
            st.error(f"{up.name}: could not be analysed: {reason}")
            return None
        finally:
            bar.empty()
    st.session_state[key] = report
    return report


def get_report(run: Run, step: int, full: bool = False) -> Report:
    """The cached report, or compute it with a progress bar. With ``full``, a cached full
    Hessian over any parameter set is kept (e.g. a real network's ``all`` from the CLI, which
    is far too costly to replace by the default ``head`` one)."""
    known = reports.cached_report(run, step)
    cached = known is not None and (not full or known.full_hessian is not None)
    if cached:
        full = False  # the cached report already holds what the page can show
    bar = None if cached else st.progress(0.0, text="Analysing checkpoint…")

    def progress(msg: str, frac: float) -> None:
        if bar is not None:
            bar.progress(min(max(frac, 0.0), 1.0), text=f"Analysing step {step}: {msg}")

    report = reports.analyze(run, step, full=full, progress=progress)
    if bar is not None:
        bar.empty()
    return report


def get_series(run: Run) -> dict[str, Any] | None:
    """series.json if every checkpoint is in it; else a button that computes it (with progress)."""
    path = run.analysis_dir / "series.json"
    steps = run.checkpoints()
    if path.is_file():
        series = read_json(path)
        if series.get("steps") == steps:
            return series
    docs.caption(f"{len(steps)} checkpoints; the series analyses each once (cached afterwards).")
    if st.button("Analyse every checkpoint", key=f"series_{run.id}"):
        bar = st.progress(0.0, text="Analysing checkpoints…")
        series = reports.analyze_series(
            run, progress=lambda msg, f: bar.progress(min(f, 1.0), text=msg)
        )
        bar.empty()
        return series
    return None


# --------------------------------------------------------------------------- which theory
RELU_CAVEAT = (
    "Gradient descent need not reach the linear optimum (the best ReLU DNC point): trained ReLU "
    "UFMs keep K² outliers that do not become equal and a gradient with K unequal coefficients "
    "(docs/theory.md §4.6, §5.2). Read the prediction as the best point's, not training's."
)


def _real_note(applies: Applies) -> str:
    return (" The network's features are not free: the UFM values (same K, L, λ; λ_H/N) are a "
            "reference (docs/theory.md §5.3)." if applies.real else "")


def spectrum_theory(applies: Applies, K: int) -> str:
    """The theory sentence of the layer-spectrum caption."""
    if applies.ce:
        head = ("Cross-entropy: the MSE closed forms do not apply (docs/theory.md §4.7); the "
                "spectrum is measured.")
        if applies.ce_alpha is None:
            return head + " No prediction is drawn (no positive logit scale α was measured)."
        return head + (
            f" Dashed: the values at a DNC point with the measured logit scale α = "
            f"{applies.ce_alpha:.4g} (1, K−1 = {K - 1} and K²−3K+1 = {K * K - 3 * K + 1} "
            "eigenvalues, rank (K−1)²): a reference, not where training must go.")
    if not applies.closed_form:
        return ("A λ ≤ 0: no closed form applies (docs/theory.md §3); the spectrum is measured "
                "and no prediction is drawn.")
    if applies.relu:
        return ("Theory at the best ReLU DNC point (docs/theory.md §4.6, autograd's σ'(0) = 0): "
                "K outliers λ_W γ/(1−γ), the other K(K−1) pairs 0 (all K² equal in the last "
                "layer). " + RELU_CAVEAT + _real_note(applies))
    return ("Theory (linear MSE optimum, docs/theory.md §4.1): K² equal outliers λ_W γ/(1−γ), "
            "every other eigenvalue 0 (fit) or λ_W (total)." + _real_note(applies))


def full_theory(applies: Applies) -> str:
    """The theory sentence of the full-Hessian caption."""
    if applies.ce or not applies.closed_form:
        return ("No closed form for the full Hessian applies to this run (docs/theory.md §4.5 is "
                "linear MSE): the spectrum is measured.")
    text = ("Theory (docs/theory.md §4.5): the K² outliers are the sums of the layer outliers, "
            "split by ±ρ into K(K+1)/2 and K(K−1)/2.")
    if applies.relu:
        text += " These are the linear model's values. " + RELU_CAVEAT
    return text + _real_note(applies)


def gradient_theory(applies: Applies, K: int) -> str:
    """The theory sentence of the Gradients caption; :func:`shows_identity` says whether the
    predicted I/K is drawn beside the measured C."""
    if applies.ce:
        return ("Cross-entropy: the MSE closed forms do not apply and C is measured only. At a "
                "DNC point the gradient is one direction, ∝ Σ_c μ_c^(l+1) μ_c^(l)ᵀ, inside the "
                "top-K eigenspace (docs/theory.md §4.7); the means form a simplex, not an "
                "orthogonal frame, so C need not be I/K.")
    if not applies.closed_form:
        return ("A λ ≤ 0: no closed form applies (docs/theory.md §3); C is measured only.")
    text = ("Theory (docs/theory.md §4.3): at collapse the gradient is (β/K) Σ_c μ_c^(l+1) "
            f"μ_c^(l)ᵀ, so C = I/K (diagonal {1 / K:.4f}).")
    if applies.relu:
        text += " At the best ReLU DNC point too (§4.6). " + RELU_CAVEAT
    return text + _real_note(applies)


def show_spectrum(report: Report, layer: int, total: bool = False, suffix: str = "") -> None:
    """The Spectrum page's layer view: its caption, the histogram (fit Hessian) and the top
    eigenvalues (:func:`ui.page_figures.spectrum_figures`). ``suffix`` tells apart the widgets of
    a second view on one page (another step's)."""
    K2 = report.K ** 2
    lay = report.layers[layer - 1]
    which = "total" if total else "fit"
    ratio = lay.outlier_ratio
    docs.caption(
        f"Layer-{layer} {which} Hessian, {lay.hessian_method}. "
        + spectrum_theory(theory_applies(report), report.K)
        + f" Measured: outliers counted by the largest log-gap: **{lay.outlier_count}** "
        f"(K² = {K2}); max/min of the top K²: **{'—' if ratio is None else f'{ratio:.6g}'}**"
        + (f" ({lay.outlier_ratio_note})" if ratio is None and lay.outlier_ratio_note else "")
        + "."
    )
    named = page_figures.spectrum_figures(report, layer, total)
    c1, c2 = st.columns(2)
    if named and named[0][0].startswith("spectrum_"):
        _show(c1, *named.pop(0), suffix)
    else:
        c1.info(
            "The whole spectrum is shown for layers small enough for an exact or dense "
            "eigendecomposition; this view shows the top eigenvalues."
        )
    for name, fig in named:
        _show(c2, name, fig, suffix)


def _show(where: Any, name: str, fig: go.Figure, suffix: str = "") -> None:
    charts.show(where, fig, name + suffix, key=name + suffix)


def show_full(report: Report) -> None:
    """The full Hessian's caption and figures (:func:`ui.page_figures.full_hessian_figures`)."""
    full = report.full_hessian
    if full is None:
        return
    docs.caption(
        f"Full fit-Hessian over {full.params} ({full.dim} parameters): {full.method}, "
        f"{full.seconds:.2f} s, converged: {full.converged}. "
        + (full.note + "." if full.note else full_theory(theory_applies(report)))
    )
    charts.show_in_rows(page_figures.full_hessian_figures(report))


def show_alignment(report: Report, layer: int) -> None:
    """The Alignment page's caption and figures (:func:`ui.page_figures.alignment_figures`)."""
    docs.caption(
        "f_cc' = (vᵀHv)²/(‖v‖²‖Hv‖²) for v = vec(μ_c^(l+1) μ_c'^(l)ᵀ): 1 when v is an eigenvector. "
        "Subspace capture ‖U_topᵀv‖²/‖v‖² against the top-K² eigenvectors. **At collapse the K² "
        "outliers are equal, so their eigenspace has no preferred basis: judge the cosine heatmap "
        "by its block structure and the subspace measures, not by single entries.**"
    )
    charts.show_in_rows(page_figures.alignment_figures(report, layer))


def show_gradients(report: Report, layer: int) -> None:
    """The Gradients page's caption and figures (:func:`ui.page_figures.gradient_figures`):
    the measured C beside the predicted I/K when that is drawn, else across the page; the
    eigenbasis coefficients across the page."""
    K = report.K
    lay = report.layers[layer - 1]
    applies = theory_applies(report)
    docs.caption(
        "Gradient coefficient matrix C_cc' = ⟨b_cc', g⟩²/‖g‖² of the full-batch fit gradient g of "
        "W_l in the predicted basis b_cc' = μ̂_c^(l+1) μ̂_c'^(l)ᵀ. " + gradient_theory(applies, K)
    )
    named = page_figures.gradient_figures(report, layer)
    paired = 2 if any(n.startswith("gradient_I_over_K") for n, _ in named) else 0
    charts.show_in_rows(named[:paired])  # C beside I/K, on one colour scale
    charts.show_in_rows(named[paired:], per_row=1)
    docs.caption(
        "The coefficients' sum is the fraction of ‖g‖² inside the outlier space. "
        f"‖g‖ = {lay.gradient_norm:.3e}; measured β = {lay.gradient_beta}"
        + (f", predicted β = {lay.gradient_beta_predicted}."
           if lay.gradient_beta_predicted is not None else " (no closed-form β for this run).")
    )


# --------------------------------------------------------------- bottom, traces, verdict (§8.3)
def _g(x: float | None) -> str:
    """A number for a table cell: 4 significant digits, or a dash when absent."""
    return "—" if x is None else f"{x:.4g}"


def curvature_rows(report: Report) -> list[dict[str, str]]:
    """One table row per layer: top and bottom eigenvalues of the fit Hessian, its trace (± the
    estimator's standard error), and for a linear-MSE model K²·λ₁ and K²·(predicted outlier),
    which equal the trace at the global optimum (docs/theory.md §6.6)."""
    cfg = report.config or {}
    linear_mse = cfg.get("activation") == "linear" and cfg.get("loss", "mse") == "mse"
    K2 = report.K ** 2
    rows = []
    for lay in report.layers:
        err = lay.hessian_trace_stderr
        row = {
            "layer": str(lay.layer),
            "top λ₁": _g((lay.hessian_top or [None])[0]),
            "bottom (ascending)": ", ".join(_g(v) for v in lay.hessian_bottom or []) or "—",
            "trace": _g(lay.hessian_trace) + (f" ± {err:.2g}" if err else ""),
        }
        if linear_mse:
            row["K²·λ₁"] = _g(K2 * lay.hessian_top[0] if lay.hessian_top else None)
            row["K²·predicted"] = _g(K2 * lay.hessian_predicted
                                     if lay.hessian_predicted is not None else None)
        rows.append(row)
    return rows


def verdict_text(full: Any) -> str | None:
    """The verdict line with the numbers it rests on, or None when the report has none."""
    if full is None or full.verdict is None:
        return None
    d = full.verdict_detail or {}
    neg = d.get("negative_directions", 0)
    more = "at least " if d.get("negative_directions_lower_bound") else ""
    return (f"**{full.verdict}** (total Hessian over {full.params}): λ_min = "
            f"{_g(d.get('lambda_min'))} (tolerance ±{_g(d.get('curv_tol'))}), ‖∇L‖ = "
            f"{_g(d.get('grad_norm'))} (tolerance {_g(d.get('grad_tol'))}); {more}{neg} "
            f"negative-curvature direction(s) among the {d.get('eigenvalues_checked', 0)} "
            f"smallest, {d.get('near_zero', 0)} near zero. {d.get('reason', '')}.")


def show_bottom_trace(report: Report) -> None:
    """The §8.3 section of the Spectrum page: per-layer table, the verdict and the attribution
    (the last two only when the full Hessian was analysed)."""
    rows = curvature_rows(report)
    if not rows or report.layers[0].hessian_trace is None:
        st.info("This report predates the bottom/trace keys: analyse the step again to see them.")
        return
    st.dataframe(rows, hide_index=True)
    full = report.full_hessian
    line = verdict_text(full)
    if line is None:
        docs.caption("The verdict and the outlier attribution need the full Hessian "
                     "(choose the full view above, or `analyze --full`).")
        return
    st.markdown(line)
    if full.trace is not None:
        err = f" ± {full.trace_stderr:.2g}" if full.trace_stderr else ""
        docs.caption(f"Trace of the full fit Hessian: {full.trace:.6g}{err} "
                     f"({full.trace_method}).")
    if full.attribution:
        charts.show(
            st, figures.outlier_attribution(full.attribution, full.attribution_blocks
                                            or [f"block {i + 1}" for i in
                                                range(len(full.attribution[0]["layers"]))]),
            "outlier_attribution", key="full_attribution",
        )
        docs.caption(f"Clusters: consecutive eigenvalues within a relative gap of "
                     f"{full.attribution_rel_tol or 0:g}; share = ‖V_block‖²_F / multiplicity "
                     "(basis-independent). * marks a cluster that may continue past the "
                     "computed eigenvalues.")
