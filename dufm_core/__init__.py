"""DUFM Lab engine: deep unconstrained feature models, their training, run store and theory.

The engine never imports Streamlit. Public entry points::

    from dufm_core import RunConfig, train, load_checkpoint
"""

from dufm_core.checkpoints import CheckpointError
from dufm_core.config import ConfigError, RunConfig
from dufm_core.kinds import load_checkpoint, resume, train
from dufm_core.store import list_runs, open_run

__all__ = [
    "CheckpointError",
    "ConfigError",
    "RunConfig",
    "list_runs",
    "load_checkpoint",
    "open_run",
    "resume",
    "train",
]
