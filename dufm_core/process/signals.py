"""Stop requests by signal, defined once: SIGTERM or SIGINT sets a flag that a loop polls.

A trainer (:meth:`dufm_core.training.Trainer._catch_stop_signals`) checkpoints and ends
``cancelled`` when the flag is set; the sweep driver stops starting members and asks the running
ones to stop. Handlers run between two bytecodes of the main thread, so they only set the flag
and call the owner's short ``on_stop`` (which must not block). Outside the main thread Python
cannot install handlers: the block then runs without cancellation by signal, as before.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

OnStop = Callable[[int, FrameType | None], None]  # a signal handler's arguments


@dataclass
class StopRequest:
    """The flag: ``signum`` of the first stop signal received in the block, else None."""

    signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_signals(on_stop: OnStop | None = None) -> Iterator[StopRequest]:
    """For the block, SIGTERM and SIGINT set the yielded :class:`StopRequest` and call
    ``on_stop(signum, frame)``; the previous handlers are restored afterwards."""
    request = StopRequest()

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.signum is None:
            request.signum = signum
        if on_stop is not None:
            on_stop(signum, frame)

    old = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            old[sig] = signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
