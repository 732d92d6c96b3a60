"""A real network (docs/theory.md §5.3): a ResNet-20 feature map and a head W_1..W_L trained on
real data; its report treats the head as a deep UFM over the network's features
(:mod:`dufm_core.network_report`).

Its memory estimates count the parameters (ResNet-20's are fixed by the input channels) with
gradients and optimiser state, the data set (the source arrays, the training subsample and the
test set in the run's dtype), the activations the backward pass of one batch keeps
(:data:`ACTIVATIONS_PER_PIXEL` numbers per input pixel and image, measured with autograd's
saved-tensor hooks: 370–380 on digits, MNIST and CIFAR-10, plus the backward's temporaries) and
the eval-mode metrics over the whole training set (the head view's float64 features), and what
importing the data set's loader costs (scikit-learn for digits).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch

from dufm_core import network_report
from dufm_core.checkpoints import Checkpoint
from dufm_core.config import FEATURE_DIM, REAL_NETWORK, RunConfig
from dufm_core.curvature.network import NETWORK_PARAMS
from dufm_core.data import RealData, dataset_info, load_data
from dufm_core.kinds.base import ModelKind, Progress
from dufm_core.kinds.ufm import (
    OPTIMIZER_COPIES,
    analysis_parts,
    head_feature_numbers,
    itemsize,
    krylov_numbers,
)
from dufm_core.models import class_labels
from dufm_core.networks import RealNetwork, ResNet20, build_network
from dufm_core.resources import MemoryEstimate, Part
from dufm_core.training.real import EVAL_BATCH, RealSession, check_device

ACTIVATIONS_PER_PIXEL = 420  # numbers kept per input pixel and image for one backward pass
# the source arrays a data set's loader reads whole (digits: float64, the others: uint8), and
# the size of its test set (digits: at most all 1797 images)
SOURCE_BYTES = {"digits": 1797 * 64 * 8, "mnist": 70_000 * 784, "fashion-mnist": 70_000 * 784,
                "cifar10": 60_000 * 3072}
TEST_IMAGES = {"digits": 1797, "mnist": 10_000, "fashion-mnist": 10_000, "cifar10": 10_000}
# what importing the loader costs (digits come from scikit-learn: measured ~136 MB RSS)
LOADER_BYTES = {"digits": 140 * 10**6}


@functools.lru_cache(maxsize=8)
def backbone_numel(channels: int) -> int:
    """Numbers in ResNet-20's state (parameters and BatchNorm buffers) for ``channels`` input
    channels, counted on the ``meta`` device (no storage)."""
    with torch.device("meta"):
        net = ResNet20(channels, FEATURE_DIM // 4)
    return sum(t.numel() for t in net.state_dict().values())


class ResNet20Kind(ModelKind):
    name = "resnet20"
    label = "ResNet-20 + head"
    full_params: ClassVar[tuple[str, ...]] = NETWORK_PARAMS  # head | all
    full_params_aliases: ClassVar[dict[str, str]] = {"weights": "head"}
    real_network = REAL_NETWORK["resnet20"]
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

    def memory_estimate(self, cfg: RunConfig) -> MemoryEstimate:
        b, N, info = itemsize(cfg), cfg.N, dataset_info(cfg.dataset)
        image = info.channels * info.height * info.width
        batch = N if cfg.batch_size <= 0 else min(cfg.batch_size, N)
        head = sum(cfg.dims[i + 1] * cfg.dims[i] for i in range(cfg.depth))
        params = backbone_numel(info.channels) + head
        copies = 2 + OPTIMIZER_COPIES.get(cfg.optimizer, 3)
        pixels = info.height * info.width
        data = (LOADER_BYTES.get(cfg.dataset, 0) + SOURCE_BYTES[cfg.dataset]
                + (N + TEST_IMAGES[cfg.dataset]) * image * (b + 1))
        evals = (N * FEATURE_DIM + head_feature_numbers(cfg, N)) * 8 \
            + min(EVAL_BATCH, N) * 3 * (FEATURE_DIM // 4) * pixels * b
        return MemoryEstimate("this run", (
            Part("parameters", params * b * copies, "width² × depth"),
            Part("data set", data, "K × n"),
            Part("activations", batch * ACTIVATIONS_PER_PIXEL * pixels * b,
                 "batch_size (0 = K × n)"),
            Part("metrics' features", evals, "K × n × width × depth"),
        ))

    def analysis_memory(self, cfg: RunConfig, full: bool = False,
                        full_params: str | None = None) -> MemoryEstimate:
        info = dataset_info(cfg.dataset)
        pixels = info.height * info.width
        image = info.channels * pixels
        parts = analysis_parts(cfg, cfg.N, full and full_params != "all", "weights")
        parts.append(Part("data set and features", SOURCE_BYTES[cfg.dataset] + cfg.N * (
            image * 4 + FEATURE_DIM * 8), "K × n"))
        if full and full_params == "all":
            dim = backbone_numel(info.channels) + sum(
                cfg.dims[i + 1] * cfg.dims[i] for i in range(cfg.depth))
            chunk = 16 * min(network_report.ALL_BATCH, cfg.N) * ACTIVATIONS_PER_PIXEL * pixels
            parts.append(Part("whole-network Hessian",
                              (krylov_numbers(dim, cfg.K**2 + cfg.K) + 2 * chunk) * 8, "K²"))
        return MemoryEstimate("the analysis", tuple(parts))

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
