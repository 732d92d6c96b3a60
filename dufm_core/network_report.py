"""The analysis report (docs/design.md §5) for a real-network checkpoint (``model = "resnet20"``).

The head W_1..W_L of a trained network sees fixed features h(x_i), so for head parameters the
network *is* a deep UFM with H_1 = [h(x_1) … h(x_N)] (docs/theory.md §5.3). The report is therefore
made by the UFM analyses on a :class:`~dufm_core.networks.HeadView`:

* features over the whole training set with **BatchNorm in eval mode** (running statistics),
  in float64: ``report["network"]["bn_mode"]`` says so;
* layer l of the report is head layer W_l: its fit-Hessian over the full training set (exact
  Kronecker spectrum for a linear MSE head, else autograd), alignment with the class means of
  the real features, gradient coefficients, Papyan's split, weights and NC1–NC3 — layer 1's
  NC metrics are those of the backbone features h(x);
* predictions are the UFM's with the same K, n, L and λ_W, and λ_H,UFM = λ_H/N: a run penalises
  the *mean* squared feature norm (λ_H/2)·mean‖h‖² = (λ_H/(2N))‖H_1‖² (docs/real_networks.md);
* ``full_params="head"`` (alias ``"weights"``) is the full Hessian over W_1..W_L (exact, from
  the view); ``"all"`` is the full Hessian over every parameter of the network, through
  Hessian–matrix products over data batches (:mod:`dufm_core.curvature.network`): no closed
  form exists for it, so its ``predicted`` list is empty.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from dufm_core import collapse, tracking
from dufm_core.analysis import _list, analyze_full, analyze_model
from dufm_core.config import RunConfig
from dufm_core.curvature.eigensolvers import count_outliers, top_eigenpairs
from dufm_core.curvature.sharded import ShardedHessianOperator, network_operator
from dufm_core.data import RealData, load_data
from dufm_core.networks import HeadView, RealNetwork
from dufm_core.runtime import cpu_threads, threads_for
from dufm_core.training.real import accuracy

__all__ = ["network_block", "network_full", "network_report", "network_view", "ufm_config"]

ALL_TOL = 1e-6  # relative residual of the K² outliers of the whole-network Hessian
ALL_BATCH = 512  # samples per pass of the whole-network products (memory only)

Progress = Any


def ufm_config(cfg: RunConfig, N: int, n: int) -> RunConfig:
    """The UFM config whose predictions apply to the head of a real-network run: same K, L,
    widths, activation, loss and λ_W; λ_H,UFM = λ_H/N; n samples per class."""
    return dataclasses.replace(
        cfg, model="ufm", n=n, lam_h=cfg.lam_h / N, dataset="digits", data_dir="",
        batch_size=0, lam_backbone=0.0, lr_schedule="constant", amp=False,
    )


def network_view(model: RealNetwork, cfg: RunConfig,
                 data: RealData | None = None) -> tuple[HeadView, RunConfig, RealData]:
    """(float64 HeadView over the whole training set, the UFM-equivalent config, the data)."""
    data = data if data is not None else load_data(cfg)
    view = HeadView.from_network(model, data, dtype=torch.float64)
    return view, ufm_config(cfg, view.N, view.n), data


@torch.no_grad()
def network_block(model: RealNetwork, view: HeadView, cfg: RunConfig,
                  data: RealData) -> dict[str, Any]:
    """The report's ``network`` block: how the features were taken, the λ_H mapping, the
    accuracies and the collapse of the backbone features h(x)."""
    logits = view()
    H = view.features.double()
    means = collapse.class_means(H, view.labels, view.K)
    nc1 = collapse.nc1(H, view.labels, view.K)
    backbone_sq = sum(float(p.double().square().sum()) for p in model.backbone_parameters())
    return {
        "model": cfg.model, "dataset": cfg.dataset, "N": view.N, "n": view.n,
        "feature_dim": int(view.dims[0]),
        "bn_mode": view.bn_mode,
        "lam_h_run": cfg.lam_h, "lam_h_ufm": cfg.lam_h / view.N,
        "lam_h_note": "the run penalises (λ_H/2)·mean_i‖h(x_i)‖²; the UFM predictions use "
                      "λ_H,UFM = λ_H/N",
        "backbone_reg": 0.5 * cfg.lam_backbone * backbone_sq,
        "train_acc": float((logits.argmax(dim=1) == view.labels).double().mean()),
        "test_acc": accuracy(model, data.x_test, data.y_test, False),
        "feature_nc1": float(nc1["nc1"]),
        "feature_nc2": float(collapse.nc2(means, "etf" if cfg.loss == "ce" else "orthogonal")),
        "feature_norm_mean": float(H.square().sum(0).mean().sqrt()),
    }


def network_full(model: RealNetwork, cfg: RunConfig, data: RealData, tol: float = ALL_TOL,
                 progress: Progress = None) -> dict[str, Any]:
    """Top K² + K eigenvalues of the fit Hessian over every parameter of the network (BatchNorm
    in eval mode, the whole training set), by block Krylov on exact batched products."""
    K2 = cfg.K ** 2

    def tick(matvecs: int) -> None:
        if progress:
            progress(f"full Hessian (all parameters): {matvecs} products", 0.9)

    with network_operator(model, data.x_train, data.y_train, cfg.loss, "all",
                          batch_size=ALL_BATCH, progress=tick) as op:
        m = min(K2 + cfg.K, op.dim)
        t0 = time.perf_counter()
        res = top_eigenpairs(op, m, block=m, tol=tol, need=min(K2, m),
                             v0=tracking.warm_start(tracking.FULL, op.dim))
        where = f", {op.describe()}" if isinstance(op, ShardedHessianOperator) else ""
    tracking.record(tracking.FULL, res.values, res.vectors, K2)  # eigenspace tracking
    return {
        "params": "all", "dim": op.dim, "top": _list(res.values), "predicted": [],
        "note": "fit-term Hessian over every parameter (convolutions, BatchNorm, head), "
                "BatchNorm in eval mode, whole training set; no closed form exists for it",
        "method": f"{res.method} on {type(op).__name__} products (forward-over-reverse, "
                  f"batches of {ALL_BATCH}{where})",
        "seconds": time.perf_counter() - t0, "matvecs": res.matvecs, "tol": tol,
        "residual_norms": _list(res.residual_norms),
        "converged": bool(res.converged[: min(K2, m)].all()),
        "converged_each": [bool(c) for c in res.converged],
        "outlier_count": count_outliers(res.values, rule="gap", m=m),
        "density": None,
    }


def network_report(network: RealNetwork, cfg: RunConfig, run_id: str, step: int,
                   report: dict[str, Any] | None, full: bool, full_params: str,
                   progress: Progress = None) -> dict[str, Any]:
    """The report of a real-network checkpoint (see the module docstring), or the cached
    ``report`` completed with the asked-for full-Hessian part (``full_params`` head | all)."""
    view, ucfg, data = network_view(network, cfg)
    if report is None:
        report = analyze_model(view, ucfg, step, run_id, full=full and full_params == "head",
                               full_params="weights", progress=progress)
        report["config"] = cfg.to_dict()
        report["ufm_config"] = ucfg.to_dict()
        report["network"] = network_block(network, view, cfg, data)
        report["loss"]["reg"] += report["network"]["backbone_reg"]
        report["loss"]["total"] = report["loss"]["fit"] + report["loss"]["reg"]
        report["hessian"] = ("fit-term Hessian of the head layers over the whole training set, "
                             "BatchNorm in eval mode (total = fit + λ_W on the diagonal)")
    if (report.get("full_hessian") or {}).get("params") == "weights":
        report["full_hessian"]["params"] = "head"
    if full and (report.get("full_hessian") or {}).get("params") != full_params:
        if full_params == "head":
            with cpu_threads(threads_for(max(cfg.dims))):
                report["full_hessian"] = analyze_full(view, ucfg, report["theory"], "weights")
            report["full_hessian"]["params"] = "head"
        else:
            report["full_hessian"] = network_full(network, cfg, data, progress=progress)
    return report
