"""The one training loop of every model kind: status, signals, checkpoints, logging, divergence,
resume and finish are defined here once; a kind supplies a :class:`TrainingSession` (its model,
optimiser and gradient step, its metrics) through :mod:`dufm_core.kinds`.

**Step semantics.** "Step s" is the state after s updates. At every step the session computes
the gradient of the current state (and, at a log point, the metrics row of that state); the
row and the checkpoint of step s describe the state before its update, so a checkpoint at s plus
resume reproduces an uninterrupted run exactly.

**Per step** (s = start..steps): a stop signal (SIGTERM/SIGINT) writes a checkpoint of s and
ends the run as ``cancelled``; a checkpoint step writes one; the session's
:meth:`~TrainingSession.step` gives the gradient, the row (at log points) and what became
non-finite, if anything; the row is appended to ``metrics.jsonl`` (non-finite values as null);
a non-finite value ends the run as ``diverged`` with a suggestion; otherwise the session
updates the parameters. Any exception marks the run ``failed`` with its message, except that a
run whose last word was written (finished, failed, cancelled, diverged) keeps it when a resume
fails before training starts.

**One trainer a run.** :meth:`Trainer.train` holds the run lock (:mod:`dufm_core.runlock`) from
before anything is read or written until the end: a second trainer of the same run (a resume,
a queue worker, a sweep member) is refused at once with :class:`~dufm_core.runlock.RunBusyError`
and changes nothing. Holding it, the trainer first removes orphaned temp files of atomic writes
(:meth:`~dufm_core.store.Run.clean_stale_temps`).

**Resume falls back.** If the last checkpoint cannot be loaded (garbage, truncated, empty, not
matching the config), it is set aside as ``step_<step>.pt.unreadable`` with a progress line
saying why, and the next newest is tried; metrics are then truncated to the checkpoint used.
"""

from __future__ import annotations

import contextlib
import math
import signal
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dufm_core.checkpoints import CheckpointError, save_checkpoint
from dufm_core.config import RunConfig
from dufm_core.process.signals import stop_signals
from dufm_core.runlock import identity
from dufm_core.runtime import cpu_threads
from dufm_core.store import ENDED_STATES, Run

STATUS_EVERY_S = 0.5  # status.json is rewritten at most this often (at log points)
PROGRESS_EVERY_S = 2.0  # progress lines on stderr at most this often
FINITE_CHECK_EVERY = 50  # steps between cheap NaN/inf checks between log points

Progress = Callable[[str], None] | None


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


def clean_for_json(x: Any) -> Any:
    """Replace non-finite floats by None so that metrics are strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, list):
        return [clean_for_json(v) for v in x]
    if isinstance(x, dict):
        return {k: clean_for_json(v) for k, v in x.items()}
    return x


def divergence_error(cfg: RunConfig, bad: str, step: int, last_loss: float | None) -> str:
    """The status error of a diverged run: what became non-finite, where, and what to try."""
    return (
        f"{bad} at step {step} (last finite loss {last_loss}): the learning "
        f"rate {cfg.lr:g} is too large for this model; try --lr {cfg.lr / 4:g}"
        + (" or --dtype float64" if cfg.dtype != "float64" else "")
        + (" or a smaller --init-scale" if cfg.init == "random" else "")
    )



# --------------------------------------------------------------------------- sessions
@dataclass
class StepOutcome:
    """One step of a session: the gradient to update with, the metrics row of the step's state
    (at log points, without ``step`` and ``time``), and what became non-finite (None if
    nothing did)."""

    grads: Sequence[torch.Tensor]
    row: dict[str, Any] | None = None
    bad: str | None = None


class TrainingSession(ABC):
    """What a model kind supplies to the loop for one run: the model and optimiser at the start
    step (fresh or restored from a checkpoint), its gradient step and its metrics."""

    model: torch.nn.Module
    optimizer: Optimizer
    start: int = 0
    status_extra: dict[str, Any]  # extra status.json fields (e.g. steps per epoch)
    checkpoint_extra: dict[str, Any] | None = None  # extra checkpoint keys (e.g. data stats)

    @abstractmethod
    def step(self, step: int, logging: bool, check: bool) -> StepOutcome:
        """The gradient at ``step`` (and its metrics row when ``logging``); ``check`` asks for
        the NaN/inf checks between log points (at log points they always run)."""

    @abstractmethod
    def update(self, step: int, grads: Sequence[torch.Tensor]) -> None:
        """Apply the update from ``step`` to ``step + 1``."""

    @abstractmethod
    def progress_text(self, step: int, row: dict[str, Any]) -> str:
        """One progress line for a logged row."""


OpenSession = Callable[[torch.device, bool], TrainingSession]  # (device, resume) -> session


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    run: Run
    state: str
    step: int
    loss: float | None


@dataclass
class Trainer:
    """Trains one run folder (fresh, or from its last checkpoint with ``resume``) with the
    session a model kind opens (:meth:`dufm_core.kinds.ModelKind.trainer` builds this)."""

    run: Run
    cfg: RunConfig
    open_session: OpenSession
    threads: Callable[[torch.device], int | None] = lambda _device: None
    progress: Progress = None
    # called once the session is open, before status.json says running (kinds.resume writes the
    # new config.json there, so a resume that fails before training leaves it as it was)
    on_start: Callable[[], None] | None = None
    _stop_signal: int | None = field(default=None, init=False, repr=False)
    _last_status: float = field(default=0.0, init=False, repr=False)
    _last_progress: float = field(default=0.0, init=False, repr=False)

    def train(self, resume: bool = False) -> TrainResult:
        """Train (or resume) the run holding its lock; RunBusyError (nothing written) if another
        process trains it. Any other error is written to status.json as ``failed``, unless the
        run had already ended and the error came before training started."""
        with self.run.lock():
            for path in self.run.clean_stale_temps():
                self._say(f"removed an orphaned temp file {path.relative_to(self.run.path)}")
            try:
                device = pick_device(self.cfg.device)
                with cpu_threads(self.threads(device)):
                    return self._loop(device, resume)
            except Exception as exc:
                if self.run.status()["state"] not in ENDED_STATES:
                    self.run.write_status(
                        state="failed", error=f"{type(exc).__name__}: {exc}",
                        finished_at=time.time(),
                    )
                raise

    def _loop(self, device: torch.device, resume: bool) -> TrainResult:
        cfg, run = self.cfg, self.run
        session = self._open_session(device, resume)
        if self.on_start is not None:
            self.on_start()
        start = session.start
        logged_before: set[int] = set()
        if resume:  # drop rows after the checkpoint; remember the steps already logged
            run.truncate_metrics(start)
            logged_before = {int(r["step"]) for r in run.metrics()}
        log_steps = set(schedule(cfg.steps, cfg.log_points, cfg.schedule))
        ckpt_steps = set(schedule(cfg.steps, cfg.checkpoint_points, cfg.schedule))

        def checkpoint(step: int) -> None:
            save_checkpoint(run, step, session.model, session.optimizer.state_dict(), cfg,
                            session.checkpoint_extra)

        last_loss: float | None = None
        state, error = "finished", None
        step = start
        with self._catch_stop_signals():
            t_start = self._write_running(start, device, **session.status_extra)
            try:
                for step in range(start, cfg.steps + 1):
                    if self._stop_signal is not None:
                        checkpoint(step)
                        state, error = "cancelled", self._stop_error(step)
                        break
                    if step in ckpt_steps and not (resume and step == start):
                        checkpoint(step)
                    logging = step in log_steps and not (step == start and start in logged_before)
                    out = session.step(step, logging, step % FINITE_CHECK_EVERY == 0)
                    if logging and out.row is not None:
                        row = {"step": step, **out.row, "time": round(time.time() - t_start, 4)}
                        run.append_metrics(clean_for_json(row))
                        if not out.bad:
                            last_loss = row["loss"]
                            self._report(session, step, row)
                    if out.bad:
                        state, error = "diverged", divergence_error(cfg, out.bad, step, last_loss)
                        break
                    if step == cfg.steps:
                        break
                    session.update(step, out.grads)
            except Exception as exc:  # the run folder must say what went wrong
                state, error = "failed", f"{type(exc).__name__}: {exc}"
                run.write_status(state=state, step=step, error=error, finished_at=time.time())
                raise
        return self._finish(state, step, error, last_loss)

    # ------------------------------------------------------------------ helpers
    def _say(self, msg: str) -> None:
        """A progress line (standard error when there is no progress callback)."""
        if self.progress:
            self.progress(msg)
        else:
            print(msg, file=sys.stderr, flush=True)

    def _open_session(self, device: torch.device, resume: bool) -> TrainingSession:
        """The kind's session; on resume from the newest checkpoint that loads: one that does
        not (CheckpointError) is set aside, with a line saying which and why."""
        set_aside: list[str] = []
        while True:
            try:
                return self.open_session(device, resume)
            except CheckpointError as exc:
                step = self.run.latest_checkpoint() if resume else None
                if step is None:
                    raise
                name = self.run.checkpoint_path(step).name
                moved = self.run.set_aside_checkpoint(step)
                set_aside.append(name)
                self._say(f"skipped checkpoint {name} (set aside as {moved.name}): {exc}")
            except RuntimeError as exc:
                if set_aside:  # no checkpoint left after setting the bad ones aside
                    raise RuntimeError(f"{exc} (set aside as unreadable: "
                                       f"{', '.join(set_aside)})") from None
                raise

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stop_signal = signum

    @contextlib.contextmanager
    def _catch_stop_signals(self) -> Any:
        """SIGTERM/SIGINT set ``_stop_signal`` (the loop checkpoints and cancels) for the block;
        outside the main thread signals cannot be caught and cancellation by signal is off."""
        with stop_signals(self._on_signal):
            yield

    def _write_running(self, start: int, device: torch.device, **extra: Any) -> float:
        """status.json → running at ``start``; returns the wall-clock start time."""
        t_start = time.time()
        self.run.write_status(
            state="running",
            step=start,
            total_steps=self.cfg.steps,
            host=socket.gethostname(),
            **identity(),
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

    def _report(self, session: TrainingSession, step: int, row: dict[str, Any]) -> None:
        """After a metrics row: status.json (at most every STATUS_EVERY_S) and a progress line
        (at most every PROGRESS_EVERY_S); both always at the final step."""
        now = time.monotonic()
        final = step == self.cfg.steps
        if now - self._last_status >= STATUS_EVERY_S or final:
            self.run.write_status(step=step, loss=row["loss"])
            self._last_status = now
        if self.progress and (now - self._last_progress >= PROGRESS_EVERY_S or final):
            self._last_progress = now
            self.progress(session.progress_text(step, row))

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
