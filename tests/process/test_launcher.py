"""The fork server's socket folder (private to the user, short paths) and its lifetime (it ends
soon after the dashboard that started it, with the idle timeout as a backstop)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dufm_core.process import launcher


@pytest.fixture
def short_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, short temp folder that this process and its children use as their temp folder
    (pytest's tmp_path is too long for a Unix socket path)."""
    base = Path(tempfile.mkdtemp(prefix="dl-", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    monkeypatch.setenv("TMPDIR", str(base))
    monkeypatch.delenv(launcher.ENABLE_ENV, raising=False)
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.1)


def test_socket_lives_in_a_private_folder_with_a_short_path(short_tmp: Path) -> None:
    path = launcher.socket_path(short_tmp / "runs")
    folder = short_tmp / f"dufm-{os.getuid()}"
    assert path.parent == folder
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    assert len(os.fsencode(path)) <= launcher.MAX_SOCKET_PATH
    assert launcher.socket_path(short_tmp / "runs") == path  # one per runs folder, stable
    assert launcher.socket_path(short_tmp / "other") != path


def test_a_long_temp_folder_falls_back_to_a_short_one(monkeypatch: pytest.MonkeyPatch) -> None:
    long = "/tmp/" + "x" * 120
    monkeypatch.setattr(tempfile, "tempdir", long)
    path = launcher.socket_path("/some/runs")
    assert path.parent == Path("/tmp") / f"dufm-{os.getuid()}"
    assert len(os.fsencode(path)) <= launcher.MAX_SOCKET_PATH


@pytest.mark.parametrize("case", ["group-readable", "symlink", "other-owner", "file"])
def test_an_unsafe_socket_folder_is_refused(
    case: str, short_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = short_tmp / f"dufm-{os.getuid()}"
    if case == "group-readable":
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
        reason = "open to group or others"
    elif case == "symlink":
        (short_tmp / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(short_tmp / "elsewhere")
        reason = "not a folder"
    elif case == "file":
        folder.write_text("")
        reason = "not a folder"
    else:
        real_uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)  # it is now someone else's
        folder = short_tmp / f"dufm-{real_uid + 1}"
        folder.mkdir(mode=0o700)
        os.chown(folder, real_uid, -1)  # owned by real_uid: not "this user" (real_uid + 1)
        reason = "not by this user"
    with pytest.raises(launcher.LauncherDirError, match=reason):
        launcher.socket_path(short_tmp / "runs")
    # nothing is asked of a socket there, and no launcher is started
    assert not launcher.ping(short_tmp / "runs")
    started = []
    monkeypatch.setattr(launcher, "spawn_detached", lambda *a, **k: started.append(a))
    launcher.ensure_launcher(short_tmp / "runs")
    assert started == []
    assert "no fork server" in capsys.readouterr().err


def test_an_impostor_socket_in_an_open_folder_is_not_trusted(short_tmp: Path) -> None:
    """A socket someone else placed where the launcher's would be, answering `ok <pid>`, is
    never asked: the folder is not private."""
    runs = short_tmp / "runs"
    path = launcher.socket_path(runs)  # the name the impostor guesses
    path.parent.chmod(0o777)  # ... in a folder that anyone may write to
    asked = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(3.0)

    def impostor() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            asked.append(conn.makefile().readline())
            conn.sendall(b"ok 1\n")

    t = threading.Thread(target=impostor, daemon=True)
    t.start()
    try:
        (runs / "r").mkdir(parents=True)
        (runs / "r" / "config.json").write_text("{}")
        assert launcher.launch_via_server(runs, runs / "r") is None
        assert not launcher.ping(runs)
    finally:
        srv.close()
        t.join(timeout=5)
    assert asked == []


def test_parent_token_names_one_process() -> None:
    token = launcher.parent_token()
    assert token.startswith(f"{os.getpid()}:")
    assert launcher.parent_alive(token)
    pid, _, start = token.partition(":")
    if start:  # Linux: the same pid with another start time is another process
        assert not launcher.parent_alive(f"{pid}:{int(start) + 1}")
    proc = subprocess.Popen(["sleep", "30"])
    token = launcher.parent_token(proc.pid)
    assert launcher.parent_alive(token)
    proc.kill()
    proc.wait(timeout=10)
    assert not launcher.parent_alive(token)
    assert launcher.parent_alive("not-a-pid")  # nothing to watch


def test_a_train_request_outside_its_runs_folder_is_refused(short_tmp: Path) -> None:
    runs = short_tmp / "runs"
    (runs / "ok").mkdir(parents=True)
    (runs / "ok" / "config.json").write_text("{}")
    outside = short_tmp / "decoy"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (runs / "link").symlink_to(outside)
    root = runs.resolve()
    assert launcher._is_run_of(str(root / "ok"), root)
    assert not launcher._is_run_of(str(outside), root)
    assert not launcher._is_run_of(str(root / "link"), root)
    assert not launcher._is_run_of(str(root / ".." / "decoy"), root)
    assert not launcher._is_run_of("ok", root)


_PARENT = textwrap.dedent(
    """
    import sys, time
    from dufm_core.process import launcher
    launcher.ensure_launcher(sys.argv[1])
    print("started", flush=True)
    time.sleep(120)
    """
)


def test_the_launcher_ends_soon_after_the_process_that_started_it(short_tmp: Path) -> None:
    """A stand-in for the dashboard server starts the real fork server (idle timeout 1800 s) and
    is killed; the fork server notices within a few seconds and removes its socket."""
    runs = short_tmp / "runs"
    env = dict(os.environ, DUFM_LAUNCHER_IDLE="1800", PYTHONPATH=str(Path.cwd()))
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(runs)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline().strip() == "started"
        _wait(lambda: launcher.ping(runs), 60, "the launcher did not come up")
        path = launcher.socket_path(runs)
        assert path.exists()
    finally:
        parent.kill()
        parent.wait(timeout=10)
    try:
        _wait(lambda: not launcher.ping(runs), 15, "the launcher outlived its parent")
        _wait(lambda: not path.exists(), 5, "the launcher left its socket behind")
    finally:
        launcher.stop(runs)


def test_the_idle_timeout_still_ends_a_launcher_without_parent(short_tmp: Path) -> None:
    runs = short_tmp / "runs"
    code = (
        "import os, sys; from dufm_core.process import launcher; "
        "sys.exit(launcher.serve(sys.argv[1], lambda d: os._exit(0)))"
    )
    env = dict(os.environ, DUFM_LAUNCHER_IDLE="2", PYTHONPATH=str(Path.cwd()))
    env.pop(launcher.PARENT_ENV, None)
    proc = subprocess.Popen([sys.executable, "-c", code, str(runs)], env=env)
    try:
        _wait(lambda: launcher.ping(runs) or proc.poll() is not None, 60, "no launcher")
        assert proc.wait(timeout=30) == 0  # ended by the idle timeout (2 s without a request)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
