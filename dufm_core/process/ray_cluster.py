"""Ray, where the engine uses it: whether it is installed (one line saying how to install it when
not), and connecting to a cluster or starting a local Ray. Shared by the sweep's Ray executor
(:mod:`dufm_core.process.executors`) and the data-parallel Hessian
(:mod:`dufm_core.curvature.sharded`); it imports nothing of the engine but the package root, so
either can use it without an import cycle.
"""

from __future__ import annotations

import importlib.util

from dufm_core.process.env import PACKAGE_DIR

RAY_INSTALL = "pip install 'ray>=2.9,<3'"  # the same range as pyproject.toml's `ray` extra


def ray_missing() -> str | None:
    """One line saying how to install Ray when it is not importable, else None (Ray is optional:
    only ``--executor ray`` needs it)."""
    if importlib.util.find_spec("ray") is None:
        return f"executor: ray needs Ray, which is not installed: {RAY_INSTALL}"
    return None


def connect_ray(address: str | None, cpus: int) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local Ray with ``cpus`` CPUs, unless
    Ray is already initialised in this process; True if this call did it (then the caller shuts
    it down). A cluster's workers get the engine shipped to them (they need torch, numpy and
    scipy installed). Shared by the sweep executor and the sharded Hessian
    (:mod:`dufm_core.curvature.sharded`)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        runtime_env = {"py_modules": [str(PACKAGE_DIR)], "excludes": ["__pycache__", "*.pyc"]}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    return True
