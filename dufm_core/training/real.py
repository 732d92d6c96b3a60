"""Training steps of a real network (docs/theory.md §5.3): ResNet-20 feature map + head on
real data.

**Loss** for a batch B of inputs x_i with one-hot targets y_i (``cfg.loss``):

    L_B = fit_B + (λ_H/2)·mean_{i∈B} ‖h(x_i)‖² + Σ_l (λ_{W_l}/2)‖W_l‖_F² + (λ_b/2)‖θ_b‖²

with fit_B = mean_{i∈B} ‖z_i − y_i‖²/2 (MSE; the UFM's ‖Z − Y‖²/(2N) on the batch) or the mean
cross-entropy, λ_H = ``lam_h`` on the backbone's output features (the UFM's λ_H‖H_1‖² term, per
sample), λ_{W_l} = ``lam_w`` on the head and λ_b = ``lam_backbone`` (default 0: docs/theory.md §5.3
does not decay the backbone) on every backbone parameter, BatchNorm scales and shifts included.
On the full training set (``batch_size`` 0) this is exactly the UFM loss with H_1 = [h(x_i)] and
λ_H,UFM = λ_H/N.

**Optimisation**: the optimiser of the UFM runs (:class:`dufm_core.training.loop.Optimizer`: ``gd``,
``momentum`` — heavy ball with PyTorch's SGD convention, the default for this model — or
``adam``) on every parameter, with the learning rate ``lr·schedule(step)``: ``constant``,
``cosine`` (½(1 + cos(π s/steps))) or ``step`` (×0.1 from 50 % and ×0.01 from 75 % of the steps).
BatchNorm uses batch statistics while training. No data augmentation, no dropout: the
trajectory is a deterministic function of the config.

**Steps and data order.** ``step`` counts optimizer updates, as for UFMs ("step s" is the state
after s updates). An epoch is ⌈N/B⌉ steps; epoch e visits the training set in the order of a
permutation drawn from a generator seeded with (seed, e), cut into batches of B (the last one
may be smaller). With B = N (the default) every step is one full-batch step in class order.
Because the order is a function of (seed, epoch) and the checkpoint holds the parameters,
BatchNorm buffers and optimizer state, a resumed run repeats the uninterrupted one exactly.

**Metrics** (one row per logged step, the UFM keys where they make sense), all for the state
of step s before its update:

* ``loss``, ``fit``, ``reg``, ``train_acc``: over the whole training set with BatchNorm in
  eval mode (running statistics) — the network the analyses see;
* ``nc1``/``nc2`` (entries l = 1..L+1: h(x), then the input of every further head layer, then
  the logits), ``nc3`` and ``sv`` (top K+1 singular values) per head layer W_l, ``gamma_measured``:
  from the same eval-mode features (:class:`dufm_core.networks.HeadView`, in float64);
* ``test_acc``: on the held-out set (eval mode), None when there is none;
* ``batch_loss`` and ``grad_norm``: the train-mode objective L_B of step s's batch and the norm
  of its gradient over every parameter (what the optimiser steps on);
* ``lr``, ``epoch`` (steps / steps-per-epoch), ``time``.

Checkpoints, cancellation by SIGTERM/SIGINT, divergence detection, status.json and resume are
those of every run: the one loop of :mod:`dufm_core.training.loop` (docs/design.md §3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from dufm_core.config import ConfigError, RunConfig
from dufm_core.data import RealData
from dufm_core.models import fit_term
from dufm_core.networks import HeadView, RealNetwork, eval_mode
from dufm_core.training.loop import Optimizer, StepOutcome, TrainingSession, pick_device
from dufm_core.training.ufm import compute_metrics

__all__ = [
    "RealSession",
    "accuracy",
    "batch_gradient",
    "batch_indices",
    "check_device",
    "evaluate",
    "lr_at",
    "objective",
    "steps_per_epoch",
]

EVAL_BATCH = 1024  # samples per forward pass in eval mode (memory only; results do not depend)


# --------------------------------------------------------------------------- schedule
def lr_at(cfg: RunConfig, step: int) -> float:
    """Learning rate of the update from step ``step`` to ``step + 1``."""
    frac = step / cfg.steps
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.01 if frac >= 0.75 else 0.1 if frac >= 0.5 else 1.0)
    return cfg.lr


def steps_per_epoch(N: int, batch_size: int) -> int:
    """⌈N/B⌉ with B = N when ``batch_size`` is 0 or at least N."""
    B = N if batch_size <= 0 or batch_size >= N else batch_size
    return -(-N // B)


def _mix(seed: int, epoch: int) -> int:
    return (seed * 0x9E3779B97F4A7C15 + 0x0E0C + epoch * 0xBF58476D1CE4E5B9) % (2**63)


def batch_indices(N: int, batch_size: int, seed: int, step: int) -> torch.Tensor | None:
    """Training-set indices of step ``step``'s batch (None = the whole set in class order).

    Epoch e = step // steps_per_epoch uses the permutation of a generator seeded with
    (seed, e), so any step's batch is known without replaying earlier ones.
    """
    spe = steps_per_epoch(N, batch_size)
    if spe == 1:
        return None
    epoch, k = divmod(step, spe)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(_mix(seed, epoch)))
    return perm[k * batch_size : (k + 1) * batch_size]


# --------------------------------------------------------------------------- objective
def head_reg(model: RealNetwork, cfg: RunConfig) -> torch.Tensor:
    """Σ_l (λ_{W_l}/2)‖W_l‖² + (λ_b/2)‖θ_backbone‖² (the parameter part of the regulariser)."""
    reg = torch.zeros((), dtype=model.head_weights[0].dtype, device=model.head_weights[0].device)
    for lam, W in zip(cfg.lam_ws, model.head_weights, strict=True):
        reg = reg + 0.5 * lam * W.square().sum()
    if cfg.lam_backbone > 0:
        reg = reg + 0.5 * cfg.lam_backbone * sum(
            p.square().sum() for p in model.backbone_parameters()
        )
    return reg


def objective(
    model: RealNetwork, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, fit, reg, logits) of the batch (x, y) as the module docstring defines L_B.

    With ``cfg.amp`` the backbone runs under bf16 autocast (CUDA); the features are cast back
    to the parameter dtype, so the head and the loss are computed in full precision.
    """
    dtype = model.head_weights[0].dtype
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp):
        h = model.features(x)
    h = h.to(dtype)
    logits = model.head(h)
    fit = fit_term(logits, y, cfg.loss)
    reg = 0.5 * cfg.lam_h * h.square().sum(dim=1).mean() + head_reg(model, cfg)
    return fit + reg, fit, reg, logits


def batch_gradient(
    model: RealNetwork, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
    cfg: RunConfig,
) -> tuple[tuple[torch.Tensor, ...], float, float]:
    """(∇L_B over ``params``, L_B, ‖∇L_B‖²) of the batch (x, y): one training step's gradient.

    The loss and the squared norm come back to the host in one transfer — one sync per step,
    not one per parameter (on a GPU each sync is a stall) — for the divergence checks.
    """
    total, _, _, _ = objective(model, x, y, cfg)
    grads = torch.autograd.grad(total, params)
    grad_sq = torch.stack(torch._foreach_norm(grads)).double().square().sum()
    batch_loss, grad_sq = torch.stack([total.detach().double(), grad_sq]).tolist()
    return grads, batch_loss, grad_sq


@torch.no_grad()
def accuracy(model: RealNetwork, x: torch.Tensor, y: torch.Tensor, amp: bool) -> float | None:
    """Fraction of (x, y) classified correctly, BatchNorm in eval mode (None when y is empty)."""
    if y.numel() == 0:
        return None
    correct = 0
    with eval_mode(model):
        for a in range(0, x.shape[0], EVAL_BATCH):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                h = model.features(x[a : a + EVAL_BATCH])
            z = model.head(h.to(model.head_weights[0].dtype))
            correct += int((z.argmax(dim=1) == y[a : a + EVAL_BATCH]).sum())
    return correct / y.numel()


@torch.no_grad()
def evaluate(model: RealNetwork, data: RealData, cfg: RunConfig) -> dict[str, Any]:
    """Eval-mode metrics of the whole training set (and the test accuracy): every key of the
    module docstring except ``batch_loss``, ``grad_norm``, ``lr``, ``epoch`` and ``time``."""
    view = HeadView.from_network(model, data, EVAL_BATCH, dtype=torch.float64)
    logits = view()
    if not bool(torch.isfinite(logits).all()):  # diverged: no metric is meaningful
        nan = math.nan
        return {"loss": nan, "fit": nan, "reg": nan, "train_acc": None, "test_acc": None}
    fit = float(fit_term(logits, view.labels, cfg.loss))
    feat_pen = 0.5 * cfg.lam_h * float(view.features.square().sum()) / view.N
    reg = feat_pen + float(head_reg(model, cfg))
    row = compute_metrics(view, cfg, [], fit, reg)
    row.pop("grad_norm", None)
    row["train_acc"] = float((logits.argmax(dim=1) == view.labels).double().mean())
    row["test_acc"] = accuracy(model, data.x_test, data.y_test, cfg.amp)
    return row


# --------------------------------------------------------------------------- preparation
def check_device(cfg: RunConfig) -> torch.device:
    """The device of the run; bf16 autocast (``amp``) is refused unless it is a CUDA GPU."""
    device = pick_device(cfg.device)
    if cfg.amp and device.type != "cuda":
        raise ConfigError(
            "amp",
            f"needs a CUDA GPU (bf16 autocast is GPU-only) but the run would use {device} "
            f"(--device {cfg.device}); leave amp off on the CPU",
        )
    return device


# --------------------------------------------------------------------------- session
class RealSession(TrainingSession):
    """Training steps of a real network (``model = "resnet20"``) from ``start`` on ``data`` (already
    loaded and checked by the kind, on the run's device): batches, the learning-rate schedule,
    eval-mode metrics at log points (before the step's train-mode pass moves the BatchNorm
    buffers)."""

    def __init__(
        self,
        model: RealNetwork,
        cfg: RunConfig,
        data: RealData,
        start: int = 0,
        optimizer_state: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.cfg, self.data, self.start = model, cfg, data, start
        self.params = list(model.parameters())
        self.optimizer = Optimizer([p.data for p in self.params], cfg)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        model.train()
        self.spe = steps_per_epoch(data.N, cfg.batch_size)
        self.status_extra = {"steps_per_epoch": self.spe, "n_train": data.N}
        self.checkpoint_extra = {"data": {"mean": data.mean, "std": data.std,
                                          "source": data.source}}

    def step(self, step: int, logging: bool, check: bool) -> StepOutcome:
        cfg, data = self.cfg, self.data
        row: dict[str, Any] | None = None
        if logging:
            row = {"epoch": step / self.spe, "lr": lr_at(cfg, step)}
            row.update(evaluate(self.model, data, cfg))
        # the gradient of step s (train mode; also moves the BatchNorm buffers)
        idx = batch_indices(data.N, cfg.batch_size, cfg.seed, step)
        device = data.x_train.device
        x = data.x_train if idx is None else data.x_train[idx.to(device)]
        y = data.y_train if idx is None else data.y_train[idx.to(device)]
        grads, batch_loss, grad_sq = batch_gradient(self.model, self.params, x, y, cfg)
        bad = None
        if not math.isfinite(batch_loss):
            bad = "the loss became non-finite"
        elif not math.isfinite(grad_sq):
            bad = "the gradient became non-finite (NaN/inf)"
        elif row is not None and not math.isfinite(row["loss"]):
            bad = "the loss became non-finite"
        if row is not None:
            row["batch_loss"] = batch_loss
            row["grad_norm"] = math.sqrt(grad_sq)
        return StepOutcome(grads, row, bad)

    def update(self, step: int, grads: Sequence[torch.Tensor]) -> None:
        self.optimizer.lr = lr_at(self.cfg, step)
        self.optimizer.step(list(grads))

    def progress_text(self, step: int, row: dict[str, Any]) -> str:
        test = row.get("test_acc")
        return (
            f"step {step}/{self.cfg.steps}  epoch {row['epoch']:.4g}  loss {row['loss']:.6g}  "
            f"train_acc {row['train_acc']:.4f}  "
            f"test_acc {'-' if test is None else f'{test:.4f}'}  grad_norm {row['grad_norm']:.3g}"
        )
