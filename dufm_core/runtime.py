"""Process-level settings shared by training and analysis.

Small problems (the UFMs here: matrices of a few hundred rows) run fastest on one CPU thread:
an OpenMP team of two costs more in start-up and spinning than it gains, and when another process
busies the second core a two-thread LAPACK call on a 360×360 matrix was measured 140× slower
(0.9 s against 6 ms). :func:`cpu_threads` pins the thread count for a block of work and restores it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

SMALL_WIDTH = 256  # up to this width one CPU thread is faster (docs/benchmarks.md)


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: leave as is), then restore."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def threads_for(width: int, device: torch.device | str = "cpu") -> int | None:
    """One thread for small CPU problems, else the default (None)."""
    return 1 if torch.device(device).type == "cpu" and width <= SMALL_WIDTH else None
