"""One sweep member: train it, analyse its last checkpoint, and make its row of ``summary.csv``.

:func:`execute_member` is the one function every executor runs (a pool process, a Ray task, or
in-process), so an executor parallelises training *and* analysis. It trains through the model-kind
dispatch (:func:`dufm_core.kinds.trainer_for`), so a member with ``model = "resnet20"`` is trained
as a ResNet-20, and it is analysed through the report cache (:func:`dufm_core.reports.analyze`).
:func:`member_row` turns the member's last metrics and its analysis report into the measured and
predicted numbers of its summary row.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dufm_core.config import RunConfig
from dufm_core.report_types import Report
from dufm_core.sweeps.folder import CANCEL_FILE, RESUMABLE_STATES, read_record, write_record

ZERO_HESSIAN = 1e-8  # a layer whose top fit-Hessian eigenvalue is below this has no outliers


# --------------------------------------------------------------------------- running it
def _new_member_run(cfg: RunConfig, runs_root: Path, folder: Path) -> Any:
    """Make the member's run folder so that it appears in the runs folder already claimed:
    built in ``<sweep>/staging``, given a ``claim`` file (so :func:`dufm_core.process.jobs.pump`
    never starts it as an ordinary queued run), then moved into place with one ``os.rename``."""
    from dufm_core.store import Run, create_run

    staging = folder / "staging"
    run = create_run(cfg, staging)
    (run.path / "claim").write_text(f"sweep {folder.name} {socket.gethostname()} {os.getpid()}\n")
    target = runs_root / run.path.name
    runs_root.mkdir(parents=True, exist_ok=True)
    os.rename(run.path, target)
    return Run(target)


def execute_member(task: Mapping[str, Any]) -> dict[str, Any]:
    """Train one member and analyse its last checkpoint; write and return its record.

    The one function every executor runs (a pool process, a Ray task, or in-process). ``task``
    is plain data: ``key``, ``index``, ``values``, ``config`` (dict), ``runs_dir`` and
    ``sweep_dir`` (absolute paths every worker can reach), ``full_hessian``, ``full_params``.
    Never raises for a failing member: the failure is the record's ``state`` and ``error``.
    """
    folder = Path(task["sweep_dir"])
    record = _new_record(task)
    if (folder / CANCEL_FILE).exists():  # cancelled before it started: no run folder
        record.update(state="cancelled", error="cancelled before it started")
        record["finished_at"] = record["started_at"]
        write_record(folder, record)  # the summary then says so (a rerun starts it)
        return record
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        cfg = RunConfig.from_dict(task["config"])
        cfg.validate()
        run, mode = _member_run(cfg, folder, Path(task["runs_dir"]), task["key"])
        record["run"] = run.id
        record["resumed"] = mode == "resume"
        write_record(folder, record)
        if mode == "analyse":
            record["state"] = "finished"
        else:
            record["state"], record["error"] = _train(run, cfg, resume=mode == "resume")
        record["train_seconds"] = round(time.perf_counter() - t0, 3)
        report = None
        if record["state"] == "finished":
            t1 = time.perf_counter()
            report, analysis_error = _analyse(run, task)
            if analysis_error:  # a finished run stays finished; say why it has no analysis
                record["analysis_error"] = analysis_error
            record["analysis_seconds"] = round(time.perf_counter() - t1, 3)
        record["row"] = member_row(cfg, run.metrics()[-1:], report)
        if report is not None:
            with contextlib.suppress(Exception):  # an extra column; never fails the member
                record["row"]["gamma_diag"] = _output_diagonal(run)
    except Exception as exc:  # bad task or unreadable run folder: still a record, never a crash
        record["state"] = "failed"
        record["error"] = record["error"] or f"{type(exc).__name__}: {exc}"
    record["finished_at"] = round(time.time(), 3)
    record["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    write_record(folder, record)
    return record


def _new_record(task: Mapping[str, Any]) -> dict[str, Any]:
    """A member's record as it starts (``members/<key>.json``, docs/sweeps.md §2)."""
    return {
        "key": task["key"],
        "index": task["index"],
        "values": task["values"],
        "run": None,
        "state": "running",
        "error": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": round(time.time(), 3),
        "finished_at": None,
        "train_seconds": None,
        "analysis_seconds": None,
        "cpu_seconds": None,  # CPU time of the whole member in its process (user + system)
        "row": None,
    }


def _member_run(cfg: RunConfig, folder: Path, runs_root: Path, key: str) -> tuple[Any, str]:
    """(run, mode): the run of an earlier attempt, to ``analyse`` (it finished, its analysis was
    never recorded) or to ``resume`` (it stopped with a checkpoint), else a ``new`` run folder."""
    from dufm_core.store import open_run

    old = read_record(folder, key)
    if old and old.get("run") and (runs_root / old["run"]).is_dir():
        previous = open_run(runs_root / old["run"])
        state = previous.status().get("state")
        if state == "finished":
            return previous, "analyse"
        if state in RESUMABLE_STATES and previous.latest_checkpoint() is not None:
            return previous, "resume"
    return _new_member_run(cfg, runs_root, folder), "new"


def _train(run: Any, cfg: RunConfig, resume: bool) -> tuple[str, str | None]:
    """Train (or resume) the member's run with the trainer of its model kind
    (:func:`dufm_core.kinds.trainer_for`); its final (state, error)."""
    from dufm_core import kinds

    try:
        result = kinds.trainer_for(run, cfg).train(resume=resume)
    except Exception as exc:  # the run's status.json already says failed
        return "failed", f"{type(exc).__name__}: {exc}"
    return result.state, run.status().get("error")


def _analyse(run: Any, task: Mapping[str, Any]) -> tuple[Report | None, str | None]:
    """(report, None) of the run's last checkpoint, or (None, "Type: message") if it fails."""
    from dufm_core import reports

    try:
        report = reports.analyze(
            run,
            full=bool(task.get("full_hessian")),
            full_params=task.get("full_params", "weights"),
        )
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return report, None


def _output_diagonal(run: Any) -> list[float] | None:
    """Each class's own output scale: the diagonal of the K × K output class means at the last
    checkpoint (their mean is ``gamma_measured``). Shows partially collapsed solutions, where
    some classes sit at γ and others at 0."""
    import torch

    from dufm_core import collapse
    from dufm_core.kinds import load_checkpoint

    step = run.latest_checkpoint()
    if step is None:
        return None
    ck = load_checkpoint(run.checkpoint_path(step))
    with torch.no_grad():
        Z = ck.model().double()
    M = collapse.class_means(Z.T, ck.labels, ck.config.K)
    return [float(v) for v in torch.diagonal(M)]


# --------------------------------------------------------------------------- one summary row
def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _mean(xs: Iterable[Any]) -> float | None:
    vals = [v for v in (_num(x) for x in xs) if v is not None]
    return sum(vals) / len(vals) if vals else None


def _max(xs: Iterable[Any]) -> float | None:
    vals = [v for v in (_num(x) for x in xs) if v is not None]
    return max(vals) if vals else None


def member_row(
    cfg: RunConfig, last_metrics: Sequence[Mapping[str, Any]], report: Report | None
) -> dict[str, Any]:
    """The measured and predicted quantities of one member for ``summary.csv``.

    Per layer l: ``outlier_l{l}`` (top fit-Hessian eigenvalue), ``outlier_pred_l{l}``,
    ``outlier_count_l{l}`` (the report's gap rule; 0 when the top eigenvalue is below
    ``ZERO_HESSIAN``, i.e. the Hessian vanishes), ``outlier_ratio_l{l}`` (max/min of the top K²),
    ``f_mean_l{l}`` (mean f_cc'), ``nc1_l{l}``..``nc3_l{l}``; and their summaries over layers.
    With a full Hessian: the measured K² outliers split into the top K(K−1)/2 (predicted at
    GN + ρ) and the next K(K+1)/2 (GN − ρ), beside the sum of the layer-wise outliers.
    """
    from dufm_core import kinds, theory

    K, L = cfg.K, cfg.depth
    K2 = K * K
    row: dict[str, Any] = {}
    last = last_metrics[-1] if last_metrics else {}
    row["steps_done"] = last.get("step")
    row["final_loss"] = _num(last.get("loss"))
    row["gamma_measured"] = _num(last.get("gamma_measured"))
    applies = kinds.predict_for(cfg)  # the UFM of the closed forms: λ_H/N for a real network
    ucfg = applies.cfg
    equal = len(set(ucfg.lam_ws)) == 1 and ucfg.lam_ws[0] == ucfg.lam_h
    pred = applies.prediction()
    row["gamma_predicted"] = pred.gamma if pred else None
    row["loss_predicted"] = pred.loss if pred and cfg.activation == "linear" else None
    lam_c = theory.lambda_crit(K, ucfg.n, L)
    row["lambda_crit"] = lam_c
    row["lam_over_crit"] = ucfg.lam_h / lam_c if equal else None
    row["critical_scale"] = (
        theory.critical_scale(K, ucfg.n, ucfg.lam_ws, ucfg.lam_h) if pred else None
    )
    row["nontrivial"] = pred.nontrivial if pred else None
    if report is None:
        return row
    row["final_loss"] = _num(report.loss["total"])
    row["gamma_measured"] = _num(report.gamma_measured)
    tops, counts = [], []
    for lay in report.layers:
        l = lay.layer
        top = lay.hessian_top or []
        t1 = _num(top[0]) if top else None
        count = int(lay.outlier_count or 0)
        if t1 is None or abs(t1) < ZERO_HESSIAN:
            count = 0
        row[f"outlier_l{l}"] = t1
        row[f"outlier_pred_l{l}"] = _num(lay.hessian_predicted)
        row[f"outlier_count_l{l}"] = count
        row[f"outlier_ratio_l{l}"] = _num(lay.outlier_ratio)
        row[f"f_mean_l{l}"] = _num(lay.alignment_f_mean)
        for nc in ("nc1", "nc2", "nc3"):
            row[f"{nc}_l{l}"] = _num(getattr(lay, nc))
        tops.append(_mean(top[:K2]) if len(top) >= K2 else t1)
        counts.append(count)
    row["outlier_count_min"] = min(counts) if counts else None
    row["outlier_count_max"] = max(counts) if counts else None
    row["outlier_ratio_max"] = _max(row.get(f"outlier_ratio_l{l}") for l in range(1, L + 1))
    row["f_mean"] = _mean(row.get(f"f_mean_l{l}") for l in range(1, L + 1))
    for nc in ("nc1", "nc2", "nc3"):
        row[f"{nc}_max"] = _max(row.get(f"{nc}_l{l}") for l in range(1, L + 1))
    row["layer_sum_measured"] = sum(t for t in tops if t is not None) if tops else None
    row["layer_sum_predicted"] = pred.full_gn_outlier if pred else None
    full = report.full_hessian
    if full is not None and full.params == "weights":
        top = [v for v in (_num(x) for x in full.top or []) if v is not None]
        n_plus = K * (K - 1) // 2
        row["full_top"] = top[0] if top else None
        row["full_outlier_count"] = full.outlier_count
        if len(top) >= K2:
            row["full_plus_measured"] = _mean(top[:n_plus])
            row["full_minus_measured"] = _mean(top[n_plus:K2])
            row["rho_measured"] = (row["full_plus_measured"] - row["full_minus_measured"]) / 2
        if pred and pred.nontrivial:
            row["full_plus_predicted"] = pred.full_outliers[0]
            row["full_minus_predicted"] = pred.full_outliers[-1]
            row["rho_predicted"] = pred.rho
        row["full_seconds"] = _num(full.seconds)
    return row
