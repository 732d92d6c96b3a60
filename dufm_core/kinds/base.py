"""What a model kind is: everything that differs between a deep UFM and a real network.

A run's ``config.model`` names its kind. The kind knows how to build the model (fresh, or empty
to receive a checkpoint's tensors), the labels of its training samples in class order, what must
be checked or loaded before a run folder is made, the training session the one loop of
:mod:`dufm_core.training.loop` runs, the CPU threads it wants, its full-Hessian parameter sets,
and how a checkpoint of it becomes the analysis report (docs/design.md §5). Nothing outside
:mod:`dufm_core.kinds` asks ``config.model`` which of these to do.

Each kind also says how much memory its work needs (:meth:`ModelKind.memory_estimate` for
training, :meth:`ModelKind.analysis_memory` for a report, :meth:`ModelKind.load_memory` for a
checkpoint), computed from the config alone, so that :mod:`dufm_core.resources` can refuse an
absurd config before anything is allocated; and which tensors a checkpoint of a config must hold
(:meth:`ModelKind.state_spec`, from a model built on PyTorch's ``meta`` device: shapes without
storage), so that a checkpoint is checked before its model is built.

A new kind is one new module beside :mod:`~dufm_core.kinds.ufm` and
:mod:`~dufm_core.kinds.resnet20` with a subclass of :class:`ModelKind`, listed in the registry
(:mod:`dufm_core.kinds`), plus its name and defaults in :data:`dufm_core.config.MODEL_DEFAULTS`
(the config is the bottom layer and is validated without importing any kind).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from dufm_core import resources
from dufm_core.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointState,
    TensorSpec,
    read_checkpoint,
)
from dufm_core.config import ConfigError, RunConfig
from dufm_core.predictions import TheoryFor
from dufm_core.report_types import Report
from dufm_core.store import Run
from dufm_core.training.loop import Trainer, TrainingSession

Progress = Callable[[str, float], None] | None


class ModelKind(ABC):
    """One model kind (see the module docstring). Instances are stateless singletons."""

    name: ClassVar[str]
    label: ClassVar[str]  # a few words for pages and messages
    full_params: ClassVar[tuple[str, ...]]  # full-Hessian parameter sets; the first is default
    full_params_aliases: ClassVar[dict[str, str]] = {}
    # the layers are the head of a network trained on real data: its metrics have accuracies,
    # its report a ``network`` block, and the UFM predictions apply at λ_H,UFM = λ_H/N
    real_network: ClassVar[bool] = False
    weights_label: ClassVar[str] = "all weights"  # what the full Hessian over the weights spans

    # ------------------------------------------------------------------ the model
    @abstractmethod
    def build(
        self, cfg: RunConfig, device: torch.device | str | None = None, init: bool = True
    ) -> torch.nn.Module:
        """The model of ``cfg`` on ``device``: seeded from ``cfg.seed`` when ``init``, else as
        PyTorch makes it (to receive a checkpoint's tensors)."""

    @abstractmethod
    def labels(self, cfg: RunConfig) -> torch.Tensor:
        """Class index of every training sample, in the class order the model uses."""

    def restore(self, state: CheckpointState, device: torch.device | str = "cpu") -> Checkpoint:
        """The model of a checkpoint read by :func:`dufm_core.checkpoints.read_checkpoint`.

        The checkpoint's tensors are checked against the ones its config implies (names, shapes,
        dtypes; :meth:`checkpoint_spec`, which also applies the memory cap) before anything is
        allocated; the model is then built on the ``meta`` device and takes the checkpoint's
        tensors as its own (``load_state_dict(assign=True)``): no second copy, the same numbers.
        """
        cfg = state.config
        try:
            expected = self.checkpoint_spec(cfg)
        except ConfigError as exc:  # above the memory cap
            raise CheckpointError(f"{state.path}: {exc}") from None
        state.check(expected)
        with torch.device("meta"):
            model = self.build(cfg, device="meta", init=False)
        model.load_state_dict(state.model, assign=True)
        self.fill_buffers(model, cfg)
        model = model.to(device)
        return Checkpoint(
            model=model,
            labels=self.labels(cfg).to(device),
            config=cfg,
            step=state.step,
            optimizer=state.optimizer,
            path=state.path,
        )

    def fill_buffers(self, model: torch.nn.Module, cfg: RunConfig) -> None:
        """Give a model restored on the ``meta`` device the buffers a state dict does not hold
        (non-persistent ones; none by default)."""
        return None

    # ------------------------------------------------------------------ memory
    def state_spec(self, cfg: RunConfig) -> dict[str, TensorSpec]:
        """Name → (shape, dtype) of every tensor in the state dict of ``cfg``'s model, from a
        model built on the ``meta`` device (no storage is allocated, whatever the sizes)."""
        with torch.device("meta"):
            model = self.build(cfg, device="meta", init=False)
        return {k: TensorSpec(tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}

    def load_memory(self, cfg: RunConfig) -> resources.MemoryEstimate:
        """What a loaded checkpoint of ``cfg`` holds: its tensors and the labels."""
        tensors = sum(resources.numel(s.shape) * s.dtype.itemsize
                      for s in self.state_spec(cfg).values())
        return resources.MemoryEstimate("loading this checkpoint", (
            resources.Part("tensors", tensors, "width × depth"),
            resources.Part("labels", 8 * cfg.N, "K × n"),
        ))

    def checkpoint_spec(self, cfg: RunConfig) -> dict[str, TensorSpec]:
        """The tensors a checkpoint of ``cfg`` must hold, after refusing (MemoryCapError) a
        config whose checkpoint would not fit under the memory cap; nothing is allocated."""
        resources.check(self.load_memory(cfg))
        return self.state_spec(cfg)

    @abstractmethod
    def memory_estimate(self, cfg: RunConfig) -> resources.MemoryEstimate:
        """The peak memory of training ``cfg`` (parameters, gradients, optimiser state, data,
        activations, metrics), from the config alone; it should not under-estimate."""

    @abstractmethod
    def analysis_memory(self, cfg: RunConfig, full: bool = False,
                        full_params: str | None = None) -> resources.MemoryEstimate:
        """The peak memory of the report of a checkpoint of ``cfg``: the model in float64, its
        layer features and the largest dense object of one layer's analysis (and of the full
        Hessian over ``full_params`` when ``full``)."""

    def check_memory(self, cfg: RunConfig) -> resources.MemoryEstimate:
        """Refuse (MemoryCapError, a ConfigError naming the fields) a run of ``cfg`` that would
        need more than the memory cap; ``cfg`` must be validated."""
        return resources.check(self.memory_estimate(cfg))

    # ------------------------------------------------------------------ theory
    def ufm_config(self, cfg: RunConfig) -> RunConfig:
        """The UFM config whose closed forms apply to a run of this kind (a UFM: its own)."""
        return cfg

    def predict_for(self, cfg: RunConfig) -> TheoryFor:
        """Which theory applies to ``cfg`` and with which λ (:mod:`dufm_core.predictions`)."""
        return TheoryFor(self.ufm_config(cfg))

    # ------------------------------------------------------------------ training
    def prepare(self, cfg: RunConfig) -> Any:
        """Check (and load) what training needs before a run folder is made; raises a
        ConfigError naming the field. What it returns is handed to :meth:`session`."""
        return None

    @abstractmethod
    def session(
        self,
        cfg: RunConfig,
        device: torch.device,
        checkpoint: Checkpoint | None,
        prepared: Any = None,
    ) -> TrainingSession:
        """The training session of ``cfg`` on ``device``: fresh when ``checkpoint`` is None,
        else continuing from it (model, step and optimizer state)."""

    def threads(self, cfg: RunConfig, device: torch.device) -> int | None:
        """CPU threads for training (None: what PyTorch was given)."""
        return None

    def trainer(
        self,
        run: Run,
        cfg: RunConfig,
        progress: Callable[[str], None] | None = None,
        prepared: Any = None,
    ) -> Trainer:
        """The one loop over this kind's session for ``run``; ``train(resume=True)`` continues
        from the run's last checkpoint."""

        def open_session(device: torch.device, resume: bool) -> TrainingSession:
            checkpoint = None
            if resume:
                step = run.latest_checkpoint()
                if step is None:
                    raise RuntimeError(f"{run.path}: no checkpoint to resume from")
                path = run.checkpoint_path(step)
                checkpoint = self.restore(
                    read_checkpoint(path, device, expect=self.checkpoint_spec), device)
            return self.session(cfg, device, checkpoint, prepared)

        return Trainer(run, cfg, open_session, lambda d: self.threads(cfg, d), progress)

    # ------------------------------------------------------------------ analysis
    def normalise_full_params(self, params: str) -> str:
        """The full-Hessian parameter set ``params`` in this kind's terms; ValueError names the
        field and the allowed sets."""
        params = self.full_params_aliases.get(params, params)
        if params not in self.full_params:
            raise ValueError(f"full_params: must be one of {' | '.join(self.full_params)} for "
                             f"{self.name} runs (got {params!r})")
        return params

    def report(
        self,
        checkpoint: Checkpoint,
        run_id: str,
        cached: dict[str, Any] | None = None,
        full: bool = False,
        full_params: str | None = None,
        progress: Progress = None,
    ) -> dict[str, Any]:
        """The analysis report of ``checkpoint`` (docs/design.md §5), or the ``cached`` one
        completed with the asked-for full Hessian; ``full_params`` defaults to the kind's first
        parameter set and is normalised here, once for every kind."""
        params = self.normalise_full_params(full_params or self.full_params[0])
        if cached is None or full:
            resources.check(self.analysis_memory(checkpoint.config, full, params))
        return self._report(checkpoint, run_id, cached, full, params, progress)

    @abstractmethod
    def _report(
        self,
        checkpoint: Checkpoint,
        run_id: str,
        cached: dict[str, Any] | None,
        full: bool,
        full_params: str,
        progress: Progress,
    ) -> dict[str, Any]:
        """:meth:`report` with ``full_params`` already one of :attr:`full_params`."""

    def series_theory(self, cfg: RunConfig, last_report: Report | None) -> dict[str, Any]:
        """The ``theory`` block of ``analysis/series.json``: the predictions the series is drawn
        against (by default those of the last report)."""
        if last_report is None or last_report.theory is None:
            return {}
        return last_report.theory.to_json()
