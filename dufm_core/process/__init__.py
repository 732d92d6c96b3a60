"""The process wing: everything that starts, feeds and stops other processes (docs/design.md §1).

The dashboard and the sweep driver never train in their own process. The modules, from the
bottom up (an arrow is an import; there are no cycles)::

    env        the child processes' command line and environment, the package root
    ray_cluster  whether Ray is installed; connect to a cluster or start a local Ray  → env
    signals    SIGTERM/SIGINT → a "stop requested" flag for a block (trainers, the sweep driver)
    launcher   the fork server: protocol, client, and the server loop (what its child runs is
               given by worker)
    jobs       queue, launch, cancel and delete of run workers          → launcher, env
    worker     the one worker entry: what every started or forked child runs
               (a run worker, the fork server, a sweep pool worker)     → jobs, launcher, env
    executors  the sweep's inline, local (forked or fresh processes) and Ray executors
               → worker, ray_cluster

Every child this package starts runs ``python -m dufm_core.process.worker ROLE ...`` (or the same
function in a forked copy of a warm process). Nothing here imports :mod:`dufm_core.cli`: the CLI
verbs ``train --run-dir`` and ``launcher`` call :mod:`worker` too. The package is installed (see
pyproject.toml), so children import it like any other: no ``PYTHONPATH`` is set.
"""
