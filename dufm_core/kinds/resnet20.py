"""A real network (docs/theory.md §5.3): a ResNet-20 feature map and a head W_1..W_L trained on
real data; its report treats the head as a deep UFM over the network's features
(:mod:`dufm_core.network_report`)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dufm_core import network_report
from dufm_core.checkpoints import Checkpoint
from dufm_core.config import RunConfig
from dufm_core.curvature.network import NETWORK_PARAMS
from dufm_core.data import RealData, load_data
from dufm_core.kinds.base import ModelKind, Progress
from dufm_core.models import class_labels
from dufm_core.networks import RealNetwork, build_network
from dufm_core.training.real import RealSession, check_device


class ResNet20Kind(ModelKind):
    name = "resnet20"
    label = "ResNet-20 + head"
    full_params: ClassVar[tuple[str, ...]] = NETWORK_PARAMS  # head | all
    full_params_aliases: ClassVar[dict[str, str]] = {"weights": "head"}
    real_network = True
    weights_label = "all head weights"

    def build(
        self, cfg: RunConfig, device: torch.device | str | None = None, init: bool = True
    ) -> RealNetwork:
        return build_network(cfg, device=device, init=init)

    def labels(self, cfg: RunConfig) -> torch.Tensor:
        return class_labels(cfg.K, cfg.n)  # the training set is class-ordered, n per class

    def ufm_config(self, cfg: RunConfig) -> RunConfig:
        """The UFM of the head: same K, L, widths and λ_W; λ_H,UFM = λ_H/N (N = K·n)."""
        return network_report.ufm_config(cfg, cfg.N, cfg.n)

    def prepare(self, cfg: RunConfig) -> RealData:
        """Refuse a bad data folder, a wrong K or n, or amp without a GPU before any run folder
        is made; the loaded data go to the session."""
        check_device(cfg)
        return load_data(cfg)

    def session(
        self,
        cfg: RunConfig,
        device: torch.device,
        checkpoint: Checkpoint | None,
        prepared: Any = None,
    ) -> RealSession:
        data = (prepared if prepared is not None else self.prepare(cfg)).to(device)
        if checkpoint is None:
            return RealSession(self.build(cfg, device), cfg, data)
        assert isinstance(checkpoint.model, RealNetwork)
        return RealSession(checkpoint.model, cfg, data, checkpoint.step, checkpoint.optimizer)

    def _report(
        self,
        checkpoint: Checkpoint,
        run_id: str,
        cached: dict[str, Any] | None,
        full: bool,
        full_params: str,
        progress: Progress,
    ) -> dict[str, Any]:
        assert isinstance(checkpoint.model, RealNetwork)
        return network_report.network_report(checkpoint.model, checkpoint.config, run_id,
                                             checkpoint.step, cached, full, full_params,
                                             progress)
