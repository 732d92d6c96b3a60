"""Training steps of the deep UFM (docs/theory.md §1.3, §1.5) for the one loop of
:mod:`dufm_core.training.loop`: full-batch gradients of

    L = fit(W_L ⋯ W_1 H_1, Y) + Σ_l (λ_{W_l}/2)‖W_l‖_F² + (λ_H/2)‖H_1‖_F²,

and the metrics row of a state (loss split, gradient norm, DNC metrics per layer, top singular
values of every W_l).

**Fast path (linear MSE).** With A_{l+1} = W_L ⋯ W_{l+1} (K × d_{l+1}, A_{L+1} = I_K) and the
scaled residual R = (A_1 H_1 − Y)/N (K × N), the fit gradients are

    ∇_{W_l} = A_{l+1}ᵀ (R H_lᵀ),    R H_{l+1}ᵀ = (R H_lᵀ) W_lᵀ,    ∇_{H_1} = A_1ᵀ R,

so a step needs only K-row products (K ≪ d): O(L K d² + K d N) flops instead of the O(L d² N)
forward and backward passes autograd runs. Every other model (ReLU, CE) uses autograd. Both are
tested against each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dufm_core import collapse, sharpness
from dufm_core.config import RunConfig
from dufm_core.models import DeepUFM, fit_term
from dufm_core.training.loop import Optimizer, StepOutcome, TrainingSession


# --------------------------------------------------------------------------- gradients
class GradientFn:
    """Gradients of the total loss w.r.t. [H_1, W_1..W_L], plus fit/reg on request."""

    def __init__(self, model: DeepUFM, cfg: RunConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.params = [model.features, *model.weights]
        self.lam = [cfg.lam_h, *cfg.lam_ws]
        self.fast = cfg.activation == "linear" and cfg.loss == "mse"
        self.Y = model.targets()
        self.N = model.N
        self.residual: torch.Tensor | None = None  # last R (fast path) or logits, for checks
        # plain tensors sharing the parameters' storage (updates are in place), cached because
        # ParameterList indexing costs more than a small matmul
        self.features = model.features.data
        self.weights = [w.data for w in model.weights]

    def __call__(self, want_loss: bool = False) -> tuple[list[torch.Tensor], float, float]:
        """Return (grads, fit, reg); fit and reg are NaN unless ``want_loss``."""
        if self.fast:
            return self._linear_mse(want_loss)
        return self._autograd(want_loss)

    def _linear_mse(self, want_loss: bool) -> tuple[list[torch.Tensor], float, float]:
        H1 = self.features
        Ws = self.weights
        L = len(Ws)
        after: list[torch.Tensor | None] = [None] * L  # after[i] = A_{i+2} = W_L ⋯ W_{i+2}
        if L >= 2:
            after[L - 2] = Ws[L - 1]
            for i in range(L - 3, -1, -1):
                after[i] = after[i + 1] @ Ws[i + 1]
        A1 = Ws[0] if L == 1 else after[0] @ Ws[0]
        R = A1 @ H1
        R.sub_(self.Y).mul_(1.0 / self.N)
        F = R @ H1.T  # R H_1ᵀ, K × d_1
        grads = [torch.addmm(H1, A1.T, R, beta=self.lam[0])]
        for i in range(L):
            if i == L - 1:
                grads.append(torch.add(F, Ws[i], alpha=self.lam[i + 1]))
            else:
                grads.append(torch.addmm(Ws[i], after[i].T, F, beta=self.lam[i + 1]))
                F = F @ Ws[i].T
        self.residual = R
        fit = reg = math.nan
        if want_loss:
            fit = 0.5 * self.N * float(R.square().sum())  # ‖Z − Y‖²/(2N) with R = (Z − Y)/N
            reg = self._reg()
        return grads, fit, reg

    def _autograd(self, want_loss: bool) -> tuple[list[torch.Tensor], float, float]:
        with torch.enable_grad():
            logits = self.model()
            fit_t = fit_term(logits, self.model.labels, self.cfg.loss)
            reg_t = self.model.reg_term(self.cfg.lam_ws, self.cfg.lam_h)
            grads = list(torch.autograd.grad(fit_t + reg_t, self.params))
        self.residual = logits.detach()
        if want_loss:
            return grads, float(fit_t.detach()), float(reg_t.detach())
        return grads, math.nan, math.nan

    def _reg(self) -> float:
        return 0.5 * sum(
            lam * float(p.detach().square().sum())
            for lam, p in zip(self.lam, self.params, strict=True)
        )


# --------------------------------------------------------------------------- metrics
def compute_metrics(
    model: DeepUFM, cfg: RunConfig, grads: list[torch.Tensor], fit: float, reg: float
) -> dict[str, Any]:
    """One metrics row: loss split, gradient norm, DNC metrics per layer, top K+1 singular values.

    Per-layer lists follow the feature index l = 1..L+1 (``nc1``, ``nc2``: H_l as W_l sees it,
    the last entry is the logits Z) and the weight index l = 1..L (``nc3``, ``sv``).
    """
    K = cfg.K
    frame = "etf" if cfg.loss == "ce" else "orthogonal"
    feats = model.layer_features()
    labels = model.labels
    row: dict[str, Any] = {"loss": fit + reg, "fit": fit, "reg": reg}
    row["grad_norm"] = math.sqrt(sum(float(g.square().sum()) for g in grads))
    nc1s, nc1f, nc1r, nc2s, nc3s, svs, means = [], [], [], [], [], [], []
    for H in feats.post:
        M = collapse.class_means(H, labels, K)
        means.append(M)
        v = collapse.nc1(H, labels, K, M)
        nc1s.append(v["nc1"])
        nc1f.append(v["nc1_fro"])
        nc1r.append(v["nc1_ratio"])
        nc2s.append(collapse.nc2(M, frame))
    for l, W in enumerate(model.weights):
        Wd = W.detach()
        nc3s.append(collapse.nc3(Wd, means[l], frame))
        s = torch.linalg.svdvals(Wd)
        svs.append([float(x) for x in s[: K + 1]])
    row.update(nc1=nc1s, nc1_fro=nc1f, nc1_ratio=nc1r, nc2=nc2s, nc3=nc3s, sv=svs)
    out_means = means[-1]  # K × K: column c = mean logit vector of class c
    row["gamma_measured"] = float(torch.diagonal(out_means).mean())
    return row


# --------------------------------------------------------------------------- session
class UFMSession(TrainingSession):
    """Full-batch training of a DeepUFM from ``start`` (``optimizer_state`` from a checkpoint on
    resume): the optimiser acts on H_1 and W_1..W_L in place."""

    def __init__(
        self,
        model: DeepUFM,
        cfg: RunConfig,
        start: int = 0,
        optimizer_state: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.cfg, self.start = model, cfg, start
        self.optimizer = Optimizer([model.features.data, *[w.data for w in model.weights]], cfg)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.status_extra = {}
        self.checkpoint_extra = None
        model.requires_grad_(False)
        for p in model.parameters():
            p.requires_grad_(not (cfg.activation == "linear" and cfg.loss == "mse"))
        self.grad_fn = GradientFn(model, cfg)
        # log_sharpness: warm-started across log points, in memory only (cold after a resume)
        self.sharpness = (sharpness.SharpnessMeter(cfg.loss, cfg.lam_ws, cfg.lam_h)
                          if cfg.log_sharpness else None)
        self.sharpness_limit = sharpness.stability_limit(cfg.optimizer, cfg.lr, cfg.momentum)

    def step(self, step: int, logging: bool, check: bool) -> StepOutcome:
        grads, fit, reg = self.grad_fn(want_loss=logging)
        bad = self._nonfinite(grads, fit, reg, logging) if logging or check else None
        row = None
        if logging:  # a diverged state gets its loss split only (SVDs of NaN would fail)
            row = ({"loss": fit + reg, "fit": fit, "reg": reg} if bad else
                   compute_metrics(self.model, self.cfg, grads, fit, reg))
            if self.sharpness is not None and not bad:
                reading = self.sharpness.measure(self.model)
                row.update(sharpness.metrics_fields(reading, self.sharpness_limit))
        return StepOutcome(grads, row, bad)

    def update(self, step: int, grads: Sequence[torch.Tensor]) -> None:
        self.optimizer.step(list(grads))

    def progress_text(self, step: int, row: dict[str, Any]) -> str:
        return (
            f"step {step}/{self.cfg.steps}  loss {row['loss']:.10g}  "
            f"grad_norm {row['grad_norm']:.3g}"
        )

    def _nonfinite(
        self, grads: list[torch.Tensor], fit: float, reg: float, logging: bool
    ) -> str | None:
        if logging and not (math.isfinite(fit) and math.isfinite(reg)):
            return "the loss became non-finite"
        probe = self.grad_fn.residual
        if probe is not None and not bool(torch.isfinite(probe.sum())):
            return "the outputs became non-finite (NaN/inf)"
        if not bool(torch.isfinite(grads[0].sum())):
            return "the gradient became non-finite (NaN/inf)"
        return None
