"""Full-batch training of the deep UFM, with logging, checkpoints, cancellation and resume.

The loss is exactly docs/theory.md §1.3 (MSE) or §1.5 (CE):

    L = fit(W_L ⋯ W_1 H_1, Y) + Σ_l (λ_{W_l}/2)‖W_l‖_F² + (λ_H/2)‖H_1‖_F².

**Fast path (linear MSE).** With A_{l+1} = W_L ⋯ W_{l+1} (K × d_{l+1}, A_{L+1} = I_K) and the
scaled residual R = (A_1 H_1 − Y)/N (K × N), the fit gradients are

    ∇_{W_l} = A_{l+1}ᵀ (R H_lᵀ),    R H_{l+1}ᵀ = (R H_lᵀ) W_lᵀ,    ∇_{H_1} = A_1ᵀ R,

so a step needs only K-row products (K ≪ d): O(L K d² + K d N) flops instead of the O(L d² N)
forward and backward passes autograd runs. Every other model (ReLU, CE) uses autograd. Both are
tested against each other.

**Step semantics.** "Step s" is the state after s updates. At every step the gradient of the
current state is computed; metrics and checkpoints of step s are written before the update, so a
checkpoint at s plus resume reproduces an uninterrupted run exactly.

**Real networks.** A config with ``model = "resnet20"`` is handed to
:mod:`dufm_core.real_training`, whose trainer subclasses :class:`Trainer` and shares its
status, signal, progress, divergence and resume machinery (the ``_``-helpers below).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dufm_core import collapse
from dufm_core.config import RunConfig
from dufm_core.models import DeepUFM, build_model, fit_term
from dufm_core.process.signals import stop_signals
from dufm_core.runtime import cpu_threads, threads_for
from dufm_core.store import Run, create_run, load_checkpoint, open_run, save_checkpoint

STATUS_EVERY_S = 0.5  # status.json is rewritten at most this often (at log points)
PROGRESS_EVERY_S = 2.0  # progress lines on stderr at most this often
FINITE_CHECK_EVERY = 50  # steps between cheap NaN/inf checks between log points


# --------------------------------------------------------------------------- schedules
def schedule(total: int, points: int, kind: str = "log") -> list[int]:
    """Steps at which to log or checkpoint: 0, the final step, and ``points`` steps spaced
    logarithmically (so early dynamics are captured) or linearly. For ``log`` a quarter of the
    points are also spread linearly, so the late phase is not left empty."""
    steps = {0, total}
    if kind == "log":
        n_log = max(points - points // 4, 2)
        for i in range(n_log):
            steps.add(round(math.exp(math.log(total) * i / (n_log - 1))))
        n_lin = points // 4
    else:
        n_lin = points
    for i in range(1, n_lin + 1):
        steps.add(round(total * i / n_lin))
    return sorted(s for s in steps if 0 <= s <= total)


def pick_device(requested: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device: 'cuda' was requested but no CUDA GPU is visible; use cpu or auto"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


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


# --------------------------------------------------------------------------- optimisers
class Optimizer:
    """Full-batch GD, heavy-ball momentum (PyTorch's SGD convention) or Adam, with a state of
    plain tensors so it checkpoints with ``weights_only`` loading."""

    def __init__(self, params: list[torch.Tensor], cfg: RunConfig) -> None:
        self.params = params
        self.kind = cfg.optimizer
        self.lr = cfg.lr
        self.momentum = cfg.momentum
        self.beta1, self.beta2 = cfg.betas
        self.eps = 1e-8
        self.t = 0
        self.buf: list[torch.Tensor] = []
        self.sq: list[torch.Tensor] = []
        if self.kind in ("momentum", "adam"):
            self.buf = [torch.zeros_like(p) for p in params]
        if self.kind == "adam":
            self.sq = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        if self.kind == "gd":
            torch._foreach_add_(self.params, grads, alpha=-self.lr)
        elif self.kind == "momentum":
            torch._foreach_mul_(self.buf, self.momentum)
            torch._foreach_add_(self.buf, grads)
            torch._foreach_add_(self.params, self.buf, alpha=-self.lr)
        else:
            b1, b2 = self.beta1, self.beta2
            torch._foreach_lerp_(self.buf, grads, 1 - b1)
            torch._foreach_mul_(self.sq, b2)
            torch._foreach_addcmul_(self.sq, grads, grads, value=1 - b2)
            c1 = 1 - b1**self.t
            c2 = 1 - b2**self.t
            denom = torch._foreach_sqrt(self.sq)
            torch._foreach_div_(denom, math.sqrt(c2))
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(self.params, self.buf, denom, value=-self.lr / c1)

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "t": self.t,
            "buf": [b.detach().cpu() for b in self.buf],
            "sq": [s.detach().cpu() for s in self.sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(
                f"optimizer state is for {state.get('kind')!r}, run uses {self.kind!r}"
            )
        self.t = int(state["t"])
        dev = self.params[0].device
        self.buf = [b.to(dev) for b in state["buf"]]
        self.sq = [s.to(dev) for s in state["sq"]]


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


def _clean(x: Any) -> Any:
    """Replace non-finite floats by None so that metrics are strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    return x


def divergence_error(cfg: RunConfig, bad: str, step: int, last_loss: float | None) -> str:
    """The status error of a diverged run: what became non-finite, where, and what to try."""
    return (
        f"{bad} at step {step} (last finite loss {last_loss}): the learning "
        f"rate {cfg.lr:g} is too large for this model; try --lr {cfg.lr / 4:g}"
        + (" or --dtype float64" if cfg.dtype != "float64" else "")
        + (" or a smaller --init-scale" if cfg.init == "random" else "")
    )


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    run: Run
    state: str
    step: int
    loss: float | None


class Trainer:
    """Trains one run folder from its config (fresh or from its last checkpoint).

    The ``_``-helpers (signals, status, progress, finish) are shared with
    :class:`dufm_core.real_training.RealTrainer`, which overrides ``_train`` and ``_threads``.
    """

    def __init__(
        self, run: Run, cfg: RunConfig, progress: Callable[[str], None] | None = None
    ) -> None:
        self.run = run
        self.cfg = cfg
        self.progress = progress
        self._stop_signal: int | None = None
        self._last_status = self._last_progress = 0.0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop_signal = signum

    def train(self, resume: bool = False) -> TrainResult:
        """Train (or resume) the run; any error is written to status.json as `failed`."""
        cfg = self.cfg
        try:
            device = pick_device(cfg.device)
            with cpu_threads(self._threads(device)):
                return self._train(device, resume)
        except Exception as exc:
            if self.run.status().get("state") not in ("failed", "diverged", "cancelled"):
                self.run.write_status(
                    state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time()
                )
            raise

    # ------------------------------------------------------------------ shared helpers
    def _threads(self, device: torch.device) -> int | None:
        """CPU threads for this run (one for small UFMs; see :mod:`dufm_core.runtime`)."""
        return threads_for(max(self.cfg.dims), device)

    @contextlib.contextmanager
    def _catch_stop_signals(self) -> Any:
        """SIGTERM/SIGINT set ``_stop_signal`` (the loop checkpoints and cancels) for the block;
        outside the main thread signals cannot be caught and cancellation by signal is off."""
        with stop_signals(self._on_signal):
            yield

    def _resume_metrics(self, start: int) -> set[int]:
        """On resume: drop metrics rows after ``start`` and return the steps already logged."""
        self.run.truncate_metrics(start)
        return {int(r["step"]) for r in self.run.metrics()}

    def _write_running(self, start: int, device: torch.device, **extra: Any) -> float:
        """status.json → running at ``start``; returns the wall-clock start time."""
        t_start = time.time()
        self.run.write_status(
            state="running",
            step=start,
            total_steps=self.cfg.steps,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=t_start,
            finished_at=None,
            error=None,
            device=str(device),
            **extra,
        )
        self._last_status = self._last_progress = time.monotonic()
        return t_start

    def _stop_error(self, step: int) -> str:
        """The status error of a run cancelled by a signal."""
        assert self._stop_signal is not None
        return f"stopped by signal {signal.Signals(self._stop_signal).name} at step {step}"

    def _progress_text(self, step: int, row: dict[str, Any]) -> str:
        return (
            f"step {step}/{self.cfg.steps}  loss {row['loss']:.10g}  "
            f"grad_norm {row['grad_norm']:.3g}"
        )

    def _report(self, step: int, row: dict[str, Any]) -> None:
        """After a metrics row: status.json (at most every STATUS_EVERY_S) and a progress line
        (at most every PROGRESS_EVERY_S); both always at the final step."""
        now = time.monotonic()
        final = step == self.cfg.steps
        if now - self._last_status >= STATUS_EVERY_S or final:
            self.run.write_status(step=step, loss=row["loss"])
            self._last_status = now
        if self.progress and (now - self._last_progress >= PROGRESS_EVERY_S or final):
            self._last_progress = now
            self.progress(self._progress_text(step, row))

    def _finish(
        self, state: str, step: int, error: str | None, last_loss: float | None
    ) -> TrainResult:
        """Final status.json and progress line; the result."""
        self.run.write_status(
            state=state, step=step, error=error, finished_at=time.time(), loss=last_loss
        )
        if self.progress:
            self.progress(f"{state} at step {step}" + (f": {error}" if error else ""))
        return TrainResult(run=self.run, state=state, step=step, loss=last_loss)

    def _restore(self, device: torch.device) -> tuple[Any, int, dict | None, set[int]]:
        """(model, step, optimizer state, steps already logged) of the run's last checkpoint."""
        step = self.run.latest_checkpoint()
        if step is None:
            raise RuntimeError(f"{self.run.path}: no checkpoint to resume from")
        ckpt = load_checkpoint(self.run.checkpoint_path(step), device=device)
        return ckpt.model, ckpt.step, ckpt.optimizer, self._resume_metrics(ckpt.step)

    def _train(self, device: torch.device, resume: bool) -> TrainResult:
        cfg, run = self.cfg, self.run
        start = 0
        if resume:
            model: DeepUFM
            model, start, opt_state, logged_before = self._restore(device)
            opt = Optimizer([model.features.data, *[w.data for w in model.weights]], cfg)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
        else:
            logged_before = set()
            model = build_model(cfg, device=device)
            opt = Optimizer([model.features.data, *[w.data for w in model.weights]], cfg)
        model.requires_grad_(False)
        for p in model.parameters():
            p.requires_grad_(not (cfg.activation == "linear" and cfg.loss == "mse"))
        grad_fn = GradientFn(model, cfg)
        log_steps = set(schedule(cfg.steps, cfg.log_points, cfg.schedule))
        ckpt_steps = set(schedule(cfg.steps, cfg.checkpoint_points, cfg.schedule))

        last_loss: float | None = None
        state, error = "finished", None
        step = start
        with self._catch_stop_signals():
            t_start = self._write_running(start, device)
            try:
                for step in range(start, cfg.steps + 1):
                    logging = step in log_steps
                    grads, fit, reg = grad_fn(want_loss=logging)
                    if self._stop_signal is not None:
                        save_checkpoint(run, step, model, opt.state_dict(), cfg)
                        state, error = "cancelled", self._stop_error(step)
                        break
                    if logging or step % FINITE_CHECK_EVERY == 0:
                        bad = self._nonfinite(grad_fn, grads, fit, reg, logging)
                        if bad:
                            state, error = "diverged", divergence_error(cfg, bad, step, last_loss)
                            break
                    if logging and not (step == start and start in logged_before):
                        row = {"step": step, "time": round(time.time() - t_start, 4)}
                        row.update(compute_metrics(model, cfg, grads, fit, reg))
                        run.append_metrics(_clean(row))
                        last_loss = row["loss"]
                        self._report(step, row)
                    if step in ckpt_steps and not (resume and step == start):
                        save_checkpoint(run, step, model, opt.state_dict(), cfg)
                    if step == cfg.steps:
                        break
                    opt.step(grads)
            except Exception as exc:  # the run folder must say what went wrong
                state, error = "failed", f"{type(exc).__name__}: {exc}"
                run.write_status(state=state, step=step, error=error, finished_at=time.time())
                raise
        return self._finish(state, step, error, last_loss)

    @staticmethod
    def _nonfinite(
        grad_fn: GradientFn, grads: list[torch.Tensor], fit: float, reg: float, logging: bool
    ) -> str | None:
        if logging and not (math.isfinite(fit) and math.isfinite(reg)):
            return "the loss became non-finite"
        probe = grad_fn.residual
        if probe is not None and not bool(torch.isfinite(probe.sum())):
            return "the outputs became non-finite (NaN/inf)"
        if not bool(torch.isfinite(grads[0].sum())):
            return "the gradient became non-finite (NaN/inf)"
        return None


# --------------------------------------------------------------------------- entry points
def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(
    cfg: RunConfig,
    runs_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = _stderr,
    run: Run | None = None,
) -> TrainResult:
    """Validate ``cfg``, create its run folder (unless ``run`` is given) and train it.

    ``model = "resnet20"`` is handed to :func:`dufm_core.real_training.train`, which loads and
    checks the data before it creates the run folder (a bad data folder is a ConfigError).
    """
    cfg.validate()
    if cfg.model == "resnet20":
        from dufm_core import real_training

        return real_training.train(cfg, runs_dir=runs_dir, progress=progress, run=run)
    run = run or create_run(cfg, runs_dir)
    return Trainer(run, cfg, progress).train(resume=False)


def trainer_for(
    run: Run, cfg: RunConfig, progress: Callable[[str], None] | None = None
) -> Trainer:
    """The trainer class that fits ``cfg.model`` (UFM or real network) for ``run``."""
    if cfg.model == "resnet20":
        from dufm_core.real_training import RealTrainer

        return RealTrainer(run, cfg, progress)
    return Trainer(run, cfg, progress)


def resume(
    run_dir: str | Path,
    steps: int | None = None,
    progress: Callable[[str], None] | None = _stderr,
    device: str | None = None,
) -> TrainResult:
    """Continue a run from its last checkpoint; ``steps`` extends (or sets) the total.

    ``device`` moves the run (e.g. trained on a GPU, continued on the CPU). The checkpoint is
    device-independent, so the continuation is the same computation, but floating-point
    results then differ from an uninterrupted run in the last bits (bit-exact resumption holds
    on the same device only).
    """
    run = open_run(run_dir)
    cfg = run.config()
    if device is not None:
        cfg.device = device
    if steps is not None:
        last = run.latest_checkpoint() or 0
        if steps < last:
            from dufm_core.config import ConfigError

            raise ConfigError("steps", f"must be >= the last checkpoint step {last} (got {steps})")
        cfg.steps = steps
    cfg.validate()
    from dufm_core.store import atomic_write_json

    atomic_write_json(run.path / "config.json", cfg.to_dict())
    return trainer_for(run, cfg, progress).train(resume=True)
