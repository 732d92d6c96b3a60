"""Reports of a run's checkpoints (docs/design.md §5), cached in the run folder, and the series
over training.

Reports are :class:`dufm_core.report_types.Report` records; the kinds' builders make the JSON
(dicts) and this module hands them on typed (``from_json``; ``to_json`` before a builder
completes a cached report). The cache itself is the run store's (``Run.report_path``,
``Run.cached_report``, ``Run.write_report``). ``analyze(run, step)`` returns the cached
``analysis/step_<8 digits>.json`` when it holds what is asked, else loads the checkpoint and
lets its model kind make (or complete) the report
(:meth:`dufm_core.kinds.base.ModelKind.report`); ``analyze_series`` analyses every checkpoint
and writes ``analysis/series.json``; ``analyze_checkpoint`` reports on a loaded checkpoint that
belongs to no run (an uploaded file).

Eigenspace tracking (docs/design.md §8.2, :mod:`dufm_core.tracking`): whenever ``analyze``
computes a report it keeps the top K² eigenvectors of each layer (and of the full Hessian)
beside it, starting the block solves from ``warm`` (the previous checkpoint's vectors) when
given; ``analyze_series`` passes them along the checkpoints, recomputes only the vectors of
cached reports that lack them, and adds the overlaps of each top-K² space with the last and
the previous checkpoint's to the series.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dufm_core import kinds, tracking
from dufm_core.analysis import _f
from dufm_core.checkpoints import Checkpoint
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.curvature.spectrum import DENSE_MAX, hessian_operator, layer_spectrum
from dufm_core.models import DeepUFM
from dufm_core.network_report import ALL_BATCH, ALL_TOL, network_view
from dufm_core.networks import RealNetwork
from dufm_core.report_types import Report
from dufm_core.runtime import cpu_threads, threads_for
from dufm_core.store import Run, atomic_write_json
from dufm_core.tracking import Eigenspace, StepVectors

Progress = Callable[[str, float], None] | None


def report_path(run: Run, step: int) -> Path:
    """The cache file of checkpoint ``step``'s report (the run store owns the cache)."""
    return run.report_path(step)


def cached_report(run: Run, step: int) -> Report | None:
    """The cached report of checkpoint ``step``, or None if there is none, it cannot be read, or
    it was made by another report version (then it is to be recomputed)."""
    return run.cached_report(step)


def analyze(run: Run, step: int | None = None, full: bool = False,
            full_params: str | None = None, force: bool = False,
            progress: Progress = None, warm: StepVectors | None = None) -> Report:
    """The report for checkpoint ``step`` (default: the last) of ``run``, cached on disk.

    A cached report is returned as it is; if ``full`` asks for a full-Hessian part the cache
    lacks (or for other parameters), only that part is computed and the cache updated.
    ``full_params`` defaults to the kind's first parameter set (weights; head). What is
    computed also writes its top eigenvectors beside the report (:mod:`dufm_core.tracking`),
    its block solves started from ``warm``'s vectors when given.
    """
    kind = kinds.get(run.config().model)
    full_params = kind.normalise_full_params(full_params or kind.full_params[0])
    steps = run.checkpoints()
    if not steps:
        raise FileNotFoundError(f"{run.path}: no checkpoints to analyse")
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise ValueError(f"step: no checkpoint at step {step}; available: {steps}")
    report = None if force else cached_report(run, step)
    need_full = full and (report is None or report.full_hessian is None
                          or report.full_hessian.params != full_params)
    if report is not None and not need_full:
        return report
    ck = kinds.load_checkpoint(run.checkpoint_path(step))
    with tracking.capturing(warm) as cap:
        data = kind.report(ck, run.id, None if report is None else report.to_json(), full,
                           full_params, progress)
    run.write_report(step, data)
    _keep_vectors(run, step, cap.found, (data.get("full_hessian") or {}).get("params"),
                  fresh=report is None)
    return Report.from_json(data)


# --------------------------------------------------------------------------- vectors
def _keep_vectors(run: Run, step: int, found: dict[str, Eigenspace], full_params: str | None,
                  fresh: bool) -> None:
    """Write the eigenspaces an analysis computed beside its report: a new file for a fresh
    report, else merged into the file there (a completed report's full Hessian)."""
    if not found:
        return
    path = tracking.vectors_path(run.analysis_dir, step)
    old = None if fresh else tracking.read_vectors(path, step)
    sv = old or StepVectors(step, run.config().K)
    sv.spaces.update(found)
    if tracking.FULL in found:
        sv.full_params = full_params
    tracking.write_vectors(path, sv)


def step_vectors(run: Run, step: int, report: Report, full: bool = False,
                 warm: StepVectors | None = None) -> StepVectors:
    """The eigenvectors of checkpoint ``step`` as read from their file (float32, made
    orthonormal again): those of every layer, and of the full Hessian of ``report`` when
    ``full``. What the file lacks (a report cached before tracking existed) is computed alone
    — not the rest of the report — from ``warm``, and written to it first."""
    path = tracking.vectors_path(run.analysis_dir, step)
    sv = tracking.read_vectors(path, step)
    keys = [tracking.layer_key(lay.layer) for lay in report.layers]
    params = report.full_hessian.params if full and report.full_hessian is not None else None
    missing = [k for k in keys if sv is None or k not in sv.spaces]
    need_full = params is not None and (sv is None or tracking.FULL not in sv.spaces
                                        or sv.full_params != params)
    if not missing and not need_full:
        assert sv is not None
        return sv
    ck = kinds.load_checkpoint(run.checkpoint_path(step))
    sv = sv or StepVectors(step, ck.config.K)
    sv.spaces.update(compute_vectors(ck, missing, params if need_full else None, warm))
    if need_full:
        sv.full_params = params
    tracking.write_vectors(path, sv)
    out = tracking.read_vectors(path, step)
    assert out is not None
    return out


def compute_vectors(ck: Checkpoint, keys: list[str], full_params: str | None,
                    warm: StepVectors | None = None) -> dict[str, Eigenspace]:
    """The top eigenpairs of the layers ``keys`` (and of the full Hessian over
    ``full_params``) of a loaded checkpoint, computed as its report computes them (same
    method, m and tolerance), the block solves started from ``warm``."""
    cfg = ck.config
    model = ck.model
    if isinstance(model, RealNetwork):
        view, _, data = network_view(model, cfg)
    else:
        assert isinstance(model, DeepUFM)
        view, data = model.double(), None
    K2 = cfg.K ** 2
    with tracking.capturing(warm) as cap, cpu_threads(threads_for(max(cfg.dims))):
        for key in keys:
            l = int(key.removeprefix("layer_"))
            d_out, d_in = view.weights[l - 1].shape
            hess = layer_spectrum(view, l, cfg.loss, min(K2 + cfg.K, d_out * d_in), 1e-10,
                                  dense_max=DENSE_MAX,
                                  v0=tracking.warm_start(key, d_out * d_in))
            tracking.record(key, hess.values, hess.vectors, K2)
        if full_params is not None:
            if full_params == "all":
                assert isinstance(model, RealNetwork) and data is not None
                op: Any = NetworkHessianOperator(model, data.x_train, data.y_train, cfg.loss,
                                                 "all", batch_size=ALL_BATCH)
                tol = ALL_TOL
            else:
                op = hessian_operator(view, "weights" if full_params == "head" else full_params,
                                      loss=cfg.loss, part="fit")
                tol = 1e-10
            m = min(K2 + cfg.K, op.dim)
            res = top_eigenpairs(op, m, block=max(m, K2 + cfg.K), tol=tol, need=min(K2, m),
                                 v0=tracking.warm_start(tracking.FULL, op.dim))
            tracking.record(tracking.FULL, res.values, res.vectors, K2)
    return cap.found


def analyze_checkpoint(checkpoint: Checkpoint, run_id: str, full: bool = False,
                       progress: Progress = None) -> Report:
    """The report of a loaded checkpoint that belongs to no run folder (not cached): its kind
    makes it, a real network's from its data set as the config names it."""
    return Report.from_json(kinds.get(checkpoint.config.model).report(
        checkpoint, run_id, None, full, None, progress))


# --------------------------------------------------------------------------- over training
def series_entry(report: Report) -> dict[str, Any]:
    """The per-step summary used for the training-dynamics plots."""
    K2 = report.K ** 2
    return {
        "step": report.step,
        "loss": report.loss["total"],
        "layers": [{
            "layer": lay.layer,
            "top": lay.hessian_top[:K2],
            "next": lay.hessian_top[K2] if len(lay.hessian_top) > K2 else None,
            "outlier_ratio": lay.outlier_ratio,
            "outlier_count": lay.outlier_count,
            "alignment_f_mean": lay.alignment_f_mean,
            "subspace_capture_mean": _f(np.mean(lay.subspace_capture)),
            "gradient_coefficients": lay.gradient_coefficients,
            "gradient_inside_fraction": lay.gradient_inside_fraction,
            "effective_rank": lay.effective_rank,
            "hessian_effective_rank": lay.hessian_effective_rank,
            "nc1": lay.nc1, "nc2": lay.nc2, "nc3": lay.nc3,
        } for lay in report.layers],
        "full_top": (report.full_hessian.top if report.full_hessian is not None
                     and report.full_hessian.top is not None else [])[:K2],
        # §8.3 over training: where each full-Hessian outlier cluster lives, block by block
        "full_attribution": (report.full_hessian.attribution
                             if report.full_hessian is not None else None),
        "full_blocks": (report.full_hessian.attribution_blocks
                        if report.full_hessian is not None else None),
    }


def analyze_series(run: Run, full: bool = False, full_params: str | None = None,
                   progress: Progress = None) -> dict[str, Any]:
    """Analyse every checkpoint (cached ones cost a read) and write ``analysis/series.json``,
    with the eigenspace overlaps of docs/design.md §8.2 (each solve warm-started from the
    previous checkpoint's vectors)."""
    steps = run.checkpoints()
    entries = []
    prev: StepVectors | None = None
    kept: list[StepVectors] = []
    for i, step in enumerate(steps):
        if progress:
            progress(f"checkpoint {step} ({i + 1} of {len(steps)})", i / max(len(steps), 1))
        report = analyze(run, step, full=full, full_params=full_params, warm=prev)
        sv = step_vectors(run, step, report, full=full, warm=prev)
        entries.append(series_entry(report))
        kept.append(sv)
        prev = sv
    if kept:
        add_overlaps(entries, kept, run.config().K)
    cfg = run.config()
    last = analyze(run, steps[-1]) if steps else None
    theory_block = kinds.get(cfg.model).series_theory(cfg, last)
    series = {"run": run.id, "steps": steps, "K": cfg.K, "depth": cfg.depth,
              "theory": theory_block, "entries": entries}
    atomic_write_json(run.analysis_dir / "series.json", series)
    if progress:
        progress("done", 1.0)
    return series


def add_overlaps(entries: list[dict[str, Any]], vectors: list[StepVectors], K: int) -> None:
    """Give each series entry's layer records (and its ``full`` block, when the full Hessian's
    vectors are there) ``overlap_final`` and ``overlap_prev`` (:func:`dufm_core.tracking.
    overlap` of the top-K² spaces with the last and the previous checkpoint's; None for the
    first entry's ``overlap_prev``) and ``overlap_dim`` (the dimension of this checkpoint's
    space: K², or less where λ_{K²} = λ_{K²+1})."""
    K2 = K * K
    final = vectors[-1]

    def measures(key: str, i: int) -> dict[str, Any]:
        here = vectors[i].spaces.get(key)
        if here is None:
            return {"overlap_final": None, "overlap_prev": None, "overlap_dim": None}
        U = here.top_space(K2)
        out: dict[str, Any] = {"overlap_dim": U.shape[1]}
        for name, other in (("overlap_final", final), ("overlap_prev",
                                                         vectors[i - 1] if i else None)):
            space = None if other is None else other.spaces.get(key)
            same = space is not None and space.vectors.shape[0] == U.shape[0] and (
                key != tracking.FULL or other.full_params == vectors[i].full_params)
            out[name] = tracking.overlap(U, space.top_space(K2)) if same else None
        return out

    for i, entry in enumerate(entries):
        for lay in entry["layers"]:
            lay.update(measures(tracking.layer_key(lay["layer"]), i))
        if tracking.FULL in vectors[i].spaces:
            entry["full"] = {"params": vectors[i].full_params, **measures(tracking.FULL, i)}
