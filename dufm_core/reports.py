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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dufm_core import kinds
from dufm_core.analysis import _f
from dufm_core.checkpoints import Checkpoint
from dufm_core.report_types import Report
from dufm_core.store import Run, atomic_write_json

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
            progress: Progress = None) -> Report:
    """The report for checkpoint ``step`` (default: the last) of ``run``, cached on disk.

    A cached report is returned as it is; if ``full`` asks for a full-Hessian part the cache
    lacks (or for other parameters), only that part is computed and the cache updated.
    ``full_params`` defaults to the kind's first parameter set (weights; head).
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
    data = kind.report(ck, run.id, None if report is None else report.to_json(), full,
                       full_params, progress)
    run.write_report(step, data)
    return Report.from_json(data)


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
    }


def analyze_series(run: Run, full: bool = False, full_params: str | None = None,
                   progress: Progress = None) -> dict[str, Any]:
    """Analyse every checkpoint (cached ones cost a read) and write ``analysis/series.json``."""
    steps = run.checkpoints()
    entries = []
    for i, step in enumerate(steps):
        if progress:
            progress(f"checkpoint {step} ({i + 1} of {len(steps)})", i / max(len(steps), 1))
        entries.append(series_entry(analyze(run, step, full=full, full_params=full_params)))
    cfg = run.config()
    last = analyze(run, steps[-1]) if steps else None
    theory_block = kinds.get(cfg.model).series_theory(cfg, last)
    series = {"run": run.id, "steps": steps, "K": cfg.K, "depth": cfg.depth,
              "theory": theory_block, "entries": entries}
    atomic_write_json(run.analysis_dir / "series.json", series)
    if progress:
        progress("done", 1.0)
    return series
