"""DUFM Lab engine: deep unconstrained feature models, their training, run store and theory.

The engine never imports Streamlit. Public entry points::

    from dufm_core import RunConfig, train, load_checkpoint

They are imported on first use (PEP 562), so that ``import dufm_core.store`` — what the
dashboard's first page needs to list runs — does not import torch and the training code: the
dashboard's cold first page is about a second faster (docs/benchmarks.md §3).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name → the module that defines it
_EXPORTS = {
    "CheckpointError": "dufm_core.checkpoints",
    "ConfigError": "dufm_core.config",
    "RunConfig": "dufm_core.config",
    "load_checkpoint": "dufm_core.kinds",
    "resume": "dufm_core.kinds",
    "train": "dufm_core.kinds",
    "list_runs": "dufm_core.store",
    "open_run": "dufm_core.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'dufm_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
