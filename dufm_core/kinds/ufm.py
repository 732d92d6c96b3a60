"""The deep unconstrained feature model (docs/theory.md §1): free features H_1 and weights
W_1..W_L, trained full batch; its report is the UFM analysis of :mod:`dufm_core.analysis`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dufm_core import analysis
from dufm_core.checkpoints import Checkpoint
from dufm_core.config import RunConfig
from dufm_core.kinds.base import ModelKind, Progress
from dufm_core.models import DeepUFM, build_model, class_labels
from dufm_core.report_types import Report
from dufm_core.runtime import cpu_threads, threads_for
from dufm_core.training.ufm import UFMSession


class UFMKind(ModelKind):
    name = "ufm"
    label = "deep UFM"
    full_params: ClassVar[tuple[str, ...]] = ("weights", "weights+features")

    def build(
        self, cfg: RunConfig, device: torch.device | str | None = None, init: bool = True
    ) -> DeepUFM:
        if init:
            return build_model(cfg, device=device)
        return DeepUFM.from_config(cfg, device=device)

    def labels(self, cfg: RunConfig) -> torch.Tensor:
        return class_labels(cfg.K, cfg.n)

    def session(
        self,
        cfg: RunConfig,
        device: torch.device,
        checkpoint: Checkpoint | None,
        prepared: Any = None,
    ) -> UFMSession:
        if checkpoint is None:
            return UFMSession(self.build(cfg, device), cfg)
        assert isinstance(checkpoint.model, DeepUFM)
        return UFMSession(checkpoint.model, cfg, checkpoint.step, checkpoint.optimizer)

    def threads(self, cfg: RunConfig, device: torch.device) -> int | None:
        return threads_for(max(cfg.dims), device)  # one thread for small UFMs (runtime.py)

    def _report(
        self,
        checkpoint: Checkpoint,
        run_id: str,
        cached: dict[str, Any] | None,
        full: bool,
        full_params: str,
        progress: Progress,
    ) -> dict[str, Any]:
        cfg = checkpoint.config
        model = checkpoint.model.double()
        assert isinstance(model, DeepUFM)
        if cached is None:
            return analysis.analyze_model(model, cfg, checkpoint.step, run_id, full=full,
                                          full_params=full_params, progress=progress)
        if full:
            with cpu_threads(threads_for(max(cfg.dims))):
                cached["full_hessian"] = analysis.analyze_full(model, cfg, cached["theory"],
                                                               full_params)
        return cached

    def series_theory(self, cfg: RunConfig, last_report: Report | None) -> dict[str, Any]:
        return analysis.predictions(cfg)  # the closed forms of the run's own config
