"""Training: one loop for every model kind, and each kind's steps.

* :mod:`~dufm_core.training.loop` — the loop (status, signals, checkpoints, logging, divergence,
  resume, finish), the optimisers, log/checkpoint schedules and the device choice;
* :mod:`~dufm_core.training.ufm` — full-batch steps and metrics of the deep UFM;
* :mod:`~dufm_core.training.real` — batched steps and eval-mode metrics of a real network.

Which session a run gets is the model kind's business: start runs with
:func:`dufm_core.kinds.train` / :func:`dufm_core.kinds.resume` (also ``dufm_core.train``).
"""

from dufm_core.training.loop import (
    Optimizer,
    Trainer,
    TrainingSession,
    TrainResult,
    pick_device,
    schedule,
)

__all__ = ["Optimizer", "TrainResult", "Trainer", "TrainingSession", "pick_device", "schedule"]
