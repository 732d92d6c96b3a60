"""The process wing (dufm_core/process/) and the sweeps package: one worker entry, stop signals
defined once, and no import cycle through them (every import statement counts, lazy ones too:
the graph of tests/test_architecture.py)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from dufm_core.process import signals, worker
from tests.test_architecture import cycles, import_graph

WING = ("dufm_core.process", "dufm_core.sweeps", "dufm_core.cli")


def test_no_import_cycle_runs_through_the_process_wing_or_sweeps() -> None:
    graph = import_graph()
    assert "dufm_core.process.worker" in graph and "dufm_core.sweeps.driver" in graph
    through = [c for c in cycles(graph) if any(m.startswith(WING) for m in c)]
    assert not through, through
    # the fork server and the workers never go back through the command line
    assert not [m for m in graph if m.startswith("dufm_core.process") and "dufm_core.cli" in
                graph[m]]
    # moved, not copied: the old top-level modules are gone
    assert not {"dufm_core.jobs", "dufm_core.launcher", "dufm_core.executors"} & set(graph)


def test_stop_signals_set_the_flag_call_back_and_restore() -> None:
    calls = []
    before = signal.getsignal(signal.SIGTERM)
    with signals.stop_signals(lambda signum, _frame: calls.append(signum)) as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop and stop.signum == signal.SIGTERM  # the first one
    assert calls == [signal.SIGTERM, signal.SIGINT]
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_signals_outside_the_main_thread_change_nothing() -> None:
    seen = []

    def body() -> None:
        with signals.stop_signals() as stop:
            seen.append(bool(stop))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [False]


def test_the_worker_entry_refuses_what_it_does_not_know(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert worker.main(["paint", "x"]) == 2
    assert "usage: python -m dufm_core.process.worker" in capsys.readouterr().err
    assert worker.main(["run", str(tmp_path / "no-such-run")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_forked_child_never_returns_into_its_parent(tmp_path: Path) -> None:
    """``run_forked`` leaves with the body's exit code, and with 1 when the body raises (the
    fork server's loop must never run on in a child); its output goes to the log."""
    log = tmp_path / "log.txt"

    def say_and_end() -> int:
        os.write(1, b"to the log\n")
        return 3

    cases = [(say_and_end, 3), (lambda: sys.exit(5), 5)]
    if threading.active_count() == 1:  # the traceback's lock cannot be held by another thread
        cases.append((lambda: 1 // 0, 1))
    for body, code in cases:
        pid = os.fork()
        if pid == 0:
            worker.run_forked(body, output=str(log))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == code
    assert log.read_text().startswith("to the log\n")
