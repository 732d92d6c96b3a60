"""Model kinds: the one place that knows what ``config.model`` means (see :mod:`.base`).

``get(name)`` gives the :class:`~dufm_core.kinds.base.ModelKind`; the entry points here are the
ones every caller uses, whatever the kind: :func:`train` a config, :func:`resume` a run,
:func:`trainer_for` an existing run folder (the workers of the job queue and of sweeps), and
:func:`load_checkpoint`; :func:`predict_for` says which theory applies to a config.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dufm_core.checkpoints import Checkpoint, read_checkpoint
from dufm_core.config import MODELS, ConfigError, RunConfig
from dufm_core.kinds.base import ModelKind
from dufm_core.kinds.resnet20 import ResNet20Kind
from dufm_core.kinds.ufm import UFMKind
from dufm_core.predictions import TheoryFor
from dufm_core.store import Run, atomic_write_json, create_run, open_run
from dufm_core.training.loop import Trainer, TrainResult

__all__ = ["KINDS", "ModelKind", "TheoryFor", "check_memory", "get", "load_checkpoint",
           "predict_for", "resume", "train", "trainer_for"]

KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (UFMKind(), ResNet20Kind())}
assert tuple(KINDS) == MODELS, "every model name of the config has its kind here"

Progress = Callable[[str], None] | None


def get(name: str) -> ModelKind:
    """The kind called ``name`` (a ``config.model`` value); ValueError names the field."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"model: must be one of {' | '.join(KINDS)} (got {name!r})") from None


def check_memory(cfg: RunConfig) -> None:
    """Refuse a validated ``cfg`` whose training would need more memory than the cap: a
    :class:`~dufm_core.resources.MemoryCapError` (a ConfigError) with one line giving the
    estimate, its biggest parts and the cap (:mod:`dufm_core.resources`). Every entry calls it
    before a run folder is made (train, jobs.launch, sweeps, resume, the Train page)."""
    get(cfg.model).check_memory(cfg)


def predict_for(cfg: RunConfig) -> TheoryFor:
    """Which closed forms apply to a run of ``cfg`` and with which λ: its kind's UFM config
    (λ_H/N for a real network) and whether the global closed forms hold (MSE, positive λ)."""
    return get(cfg.model).predict_for(cfg)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a ``.pt`` checkpoint with ``weights_only=True`` (or a ``.safetensors`` export) and
    rebuild its model through its kind: a DeepUFM, or a
    :class:`~dufm_core.networks.RealNetwork` (parameters and BatchNorm buffers; ``labels`` are
    those of the class-ordered training set, ``arange(K).repeat_interleave(n)``).

    Raises :class:`~dufm_core.checkpoints.CheckpointError` with a one-line reason for a missing,
    truncated, foreign or code-carrying file, tensors that do not fit the config (the first bad
    name, expected and found shape), or a config whose model would exceed the memory cap
    (:mod:`dufm_core.resources`): all checked before the model is allocated; never unpickles
    arbitrary objects.
    """
    state = read_checkpoint(path, device, expect=lambda cfg: get(cfg.model).checkpoint_spec(cfg))
    return get(state.config.model).restore(state, device)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def trainer_for(run: Run, cfg: RunConfig, progress: Progress = None) -> Trainer:
    """The loop over ``cfg``'s kind for the existing run folder ``run``."""
    return get(cfg.model).trainer(run, cfg, progress)


def train(
    cfg: RunConfig,
    runs_dir: str | Path | None = None,
    progress: Progress = _stderr,
    run: Run | None = None,
) -> TrainResult:
    """Validate ``cfg``, let its kind check what it needs (a real network loads its data: a bad
    data folder is a ConfigError) and refuse a run above the memory cap *before* a run folder is
    made, create the folder (unless ``run`` is given) and train it."""
    cfg.validate()
    kind = get(cfg.model)
    try:
        kind.check_memory(cfg)
        prepared = kind.prepare(cfg)
    except Exception as exc:
        if run is not None:
            run.write_status(
                state="failed", error=f"{type(exc).__name__}: {exc}", finished_at=time.time()
            )
        raise
    run = run or create_run(cfg, runs_dir)
    return kind.trainer(run, cfg, progress, prepared).train(resume=False)


def resume(
    run_dir: str | Path,
    steps: int | None = None,
    progress: Progress = _stderr,
    device: str | None = None,
) -> TrainResult:
    """Continue a run from its last loadable checkpoint; ``steps`` extends (or sets) the total.

    ``device`` moves the run (e.g. trained on a GPU, continued on the CPU). The checkpoint is
    device-independent, so the continuation is the same computation, but floating-point
    results then differ from an uninterrupted run in the last bits (bit-exact resumption holds
    on the same device only).

    The run lock is taken first: if another process trains the run this raises
    :class:`~dufm_core.runlock.RunBusyError` ("run X is being trained by pid P") and changes
    nothing. The new ``steps``/``device`` are written to config.json only once a checkpoint
    has loaded, just before training starts; a checkpoint that does not load is set aside and
    the one before it used (:class:`~dufm_core.training.loop.Trainer`).
    """
    run = open_run(run_dir)
    with run.lock():
        cfg = run.config()
        if device is not None:
            cfg.device = device
        if steps is not None:
            last = run.latest_checkpoint() or 0
            if steps < last:
                raise ConfigError(
                    "steps", f"must be >= the last checkpoint step {last} (got {steps})"
                )
            cfg.steps = steps
        cfg.validate()
        check_memory(cfg)  # before anything is loaded
        trainer = trainer_for(run, cfg, progress)
        trainer.on_start = lambda: atomic_write_json(run.path / "config.json", cfg.to_dict())
        return trainer.train(resume=True)
