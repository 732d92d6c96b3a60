"""The deep unconstrained feature model (docs/theory.md §1): free features H_1 and weights
W_1..W_L, trained full batch; its report is the UFM analysis of :mod:`dufm_core.analysis`.

Its memory estimates (:mod:`dufm_core.resources`) count what the code here allocates: H_1 and
every W_l with their gradient and optimiser state (gd none, momentum one buffer, Adam two and a
temporary), the targets and labels, the layer features H_2..H_{L+1} that the metrics form at a
log point (and the centred copies DNC1 makes), for autograd (ReLU or CE) the activations the
backward pass keeps, and the two copies of the state that writing a checkpoint makes. A report
adds, for its largest layer, the dense object its Hessian method builds (Kronecker factors, a
dense Hessian, or a block-Krylov basis) and the K² predicted eigen-matrices; ``--full`` adds the
Krylov basis over all weights. The estimates add the parts up (peaks of different phases do not
coincide), so they lean high; tests/test_resources.py holds them within 0.5–3× of a measured peak.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dufm_core import analysis
from dufm_core.checkpoints import Checkpoint
from dufm_core.config import RunConfig
from dufm_core.curvature.spectrum import DENSE_MAX
from dufm_core.kinds.base import ModelKind, Progress
from dufm_core.models import DeepUFM, build_model, class_labels
from dufm_core.report_types import Report
from dufm_core.resources import MemoryEstimate, Part
from dufm_core.runtime import cpu_threads, threads_for
from dufm_core.training.ufm import UFMSession

OPTIMIZER_COPIES = {"gd": 0, "momentum": 1, "adam": 3}  # state tensors per parameter (+ temps)
HVP_BUDGET = 1 << 30  # the vmap chunk budget of curvature.operators (DEFAULT_MEMORY_BYTES)


def itemsize(cfg: RunConfig) -> int:
    """Bytes per number of the run's dtype."""
    return 8 if cfg.dtype == "float64" else 4


def head_feature_numbers(cfg: RunConfig, N: int) -> int:
    """Numbers in H_2..H_{L+1} (twice for ReLU: before and after σ) plus the three d × N
    temporaries of DNC1: what :meth:`DeepUFM.layer_features` and the metrics hold at once."""
    hidden = sum(cfg.dims[1:]) * N
    return hidden * (2 if cfg.activation == "relu" else 1) + 3 * max(cfg.dims) * N


def krylov_numbers(dim: int, block: int) -> int:
    """Numbers held by block Krylov on a dim-sized operator: the basis, its products and the
    Rayleigh–Ritz matrix (curvature/eigensolvers.py's default basis of 8 blocks)."""
    basis = min(dim, max(8 * block, 64))
    return 2 * basis * dim + basis * basis


def analysis_parts(cfg: RunConfig, N: int, full: bool, full_params: str | None) -> list[Part]:
    """The parts of a UFM report of ``cfg`` over N samples in float64 (a real network's head
    view uses the same with its N): the model, its layer features, the largest layer's Hessian
    work and, with ``full``, the full Hessian's Krylov basis and SLQ vectors."""
    K, dims, f64 = cfg.K, cfg.dims, 8
    K2b = K * K + K
    weights = sum(dims[i + 1] * dims[i] for i in range(cfg.depth))
    hidden = sum(dims[1:]) * N * (2 if cfg.activation == "relu" else 1)
    kron = cfg.activation == "linear" and cfg.loss == "mse"
    layer = 0
    for l in range(cfg.depth):
        d_in, d_out = dims[l], dims[l + 1]
        dim = d_in * d_out
        m = min(K2b, dim)
        if kron:  # P, Q and their eigenvectors, the whole spectrum, the top m matrices
            method = 2 * (d_out * d_out + d_in * d_in) + 2 * dim + m * dim
        elif dim <= DENSE_MAX:  # the dense Hessian, its transposed and symmetrised copies,
            method = 7 * dim * dim + m * dim  # eigh's work and eigenvectors, flipped (measured)
        else:  # Krylov basis plus the vmapped Hessian-matrix products' tangents
            chunk = max(1, min(K2b, HVP_BUDGET // (16 * dim * f64)))
            method = krylov_numbers(dim, K2b) + chunk * (16 * dim + 2 * hidden)
        # Papyan's GN split (curvature/gauss_newton.py): Gram/dense matrices up to GN_FULL_MAX,
        # else block Krylov on products through the factored vectors (b × d × N each)
        side = min(N * K, dim)
        gn = (3 * side * side if side <= analysis.GN_FULL_MAX
              else krylov_numbers(dim, K2b) + 2 * K2b * (d_out + d_in) * N)
        cotangents = 3 * N * K * (d_out + d_in)  # g_{i,k} of every sample and logit
        layer = max(layer, method + gn + cotangents + 2 * K * K * dim + K * dim)
    parts = [
        Part("model (float64)", (dims[0] * N + weights) * f64 + 8 * N, "width × K × n"),
        Part("layer features", head_feature_numbers(cfg, N) * f64 * 2, "width × depth × K × n"),
        Part("one layer's Hessian", layer * f64, "width² × K²"),
    ]
    if full:
        dim = weights + (dims[0] * N if full_params == "weights+features" else 0)
        hvp = 0 if kron else max(1, min(K2b, HVP_BUDGET // (16 * dim * f64))) * 2 * hidden
        slq = analysis.SLQ_PROBES * analysis.SLQ_STEPS * dim
        parts.append(Part("full Hessian", (krylov_numbers(dim, K2b) + slq + hvp) * f64,
                          "width² × depth × K²"))
    return parts


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

    def fill_buffers(self, model: torch.nn.Module, cfg: RunConfig) -> None:
        model.labels = class_labels(cfg.K, cfg.n)  # a non-persistent buffer

    def memory_estimate(self, cfg: RunConfig) -> MemoryEstimate:
        b, N, dims = itemsize(cfg), cfg.N, cfg.dims
        copies = 2 + OPTIMIZER_COPIES.get(cfg.optimizer, 3)  # value, gradient, optimiser state
        weights = sum(dims[i + 1] * dims[i] for i in range(cfg.depth))
        fast = cfg.activation == "linear" and cfg.loss == "mse"  # K-row products, no autograd
        hidden = sum(dims[1:]) * N * (2 if cfg.activation == "relu" else 1)
        return MemoryEstimate("this run", (
            Part("features H_1", dims[0] * N * b * copies, "width × K × n"),
            Part("weights", weights * b * copies, "width² × depth"),
            Part("targets and labels", (2 * cfg.K * b + 8) * N, "K × n"),
            Part("metrics' layer features", head_feature_numbers(cfg, N) * b,
                 "width × depth × K × n"),
            Part("activations", 0 if fast else (hidden + 2 * max(dims) * N) * b,
                 "width × depth × K × n"),
            Part("checkpoint buffer", 2 * (dims[0] * N + weights) * b, "width × K × n"),
        ))

    def analysis_memory(self, cfg: RunConfig, full: bool = False,
                        full_params: str | None = None) -> MemoryEstimate:
        return MemoryEstimate("the analysis", tuple(analysis_parts(cfg, cfg.N, full,
                                                                    full_params)))

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
