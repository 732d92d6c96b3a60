"""What a visitor sends cannot reach outside the runs folder, crash a page or show a traceback
(issue #12): links naming a path, a missing run, step or layer; hostile uploads; a page that
raises. AppTest, in this process (the browser side is tests/e2e/test_hostile_links.py)."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import socket
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core.store import atomic_write_json
from tests.dashboard.conftest import run_page, serve_runs
from tests.helpers import ROOT


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def _no_traceback(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    for text in [e.value for e in at.error] + _warnings(at):
        assert "Traceback" not in text and 'File "' not in text


@pytest.fixture
def decoy_env(
    finished_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict]:
    """A copy of the runs folder, a "running" decoy run folder outside it whose status.json names
    a live `sleep` (what a Cancel button would signal), and a symbolic link to the decoy inside
    the runs folder."""
    runs = tmp_path / "runs"
    shutil.copytree(finished_runs, runs, symlinks=True)
    real = next(p for p in runs.iterdir())
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    shutil.copy(real / "config.json", decoy / "config.json")
    sleeper = subprocess.Popen(["sleep", "120"])
    atomic_write_json(
        decoy / "status.json",
        {"state": "running", "pid": sleeper.pid, "host": socket.gethostname(), "step": 1,
         "total_steps": 10},
    )
    (runs / "zz-link").symlink_to(decoy)
    serve_runs(runs, monkeypatch)
    try:
        yield {"runs": runs, "decoy": decoy, "sleeper": sleeper, "real": real.name}
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_train_page_never_watches_or_cancels_a_folder_outside_the_runs_folder(
    kind: str, decoy_env: dict
) -> None:
    run_id = {"absolute": str(decoy_env["decoy"]), "dotdot": "../decoy", "symlink": "zz-link"}[kind]
    at = run_page("train", run=run_id)
    _no_traceback(at)
    assert any("was not found in the runs folder" in w for w in _warnings(at)), _warnings(at)
    assert not [b for b in at.button if b.label == "Cancel run"]
    assert "state: running" not in " ".join(m.value for m in at.markdown)
    assert at.query_params["run"] == run_id  # the link is not rewritten to something else
    assert decoy_env["sleeper"].poll() is None  # the decoy's pid was never signalled


def test_train_page_watches_a_real_run_of_the_runs_folder(decoy_env: dict) -> None:
    at = run_page("train", run=decoy_env["real"])
    _no_traceback(at)
    assert not _warnings(at) or not any("not found" in w for w in _warnings(at))
    assert any(f"Run `{decoy_env['real']}`" in m.value for m in at.markdown)


@pytest.mark.parametrize("run_id", ["nonexistent", "../decoy", "zz-link", "/etc"])
def test_an_analysis_page_says_the_run_was_not_found(run_id: str, decoy_env: dict) -> None:
    at = run_page("spectrum", run=run_id)
    _no_traceback(at)
    assert _warnings(at) == [
        f"Run `{run_id}` was not found in the runs folder; pick one in the sidebar."
    ]
    assert not at.get("plotly_chart")  # nothing else is shown in its place
    assert at.query_params["run"] == run_id
    picker = at.sidebar.selectbox[0]
    assert picker.value is None and "zz-link" not in picker.options
    # the visitor picks a run: the page shows it and the link now names it
    picker.set_value(decoy_env["real"]).run()
    _no_traceback(at)
    assert not _warnings(at)
    assert at.query_params["run"] == decoy_env["real"]
    assert len(at.get("plotly_chart")) >= 1


def test_a_missing_checkpoint_step_is_named_with_the_steps_there_are(dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = run_page("alignment", run=run_id, step="999999", layer="2")
    _no_traceback(at)
    (warning,) = _warnings(at)
    assert warning.startswith(f"Checkpoint step `999999` does not exist in run `{run_id}`: it has")
    assert "steps 0, " in warning
    assert not at.get("plotly_chart")
    assert at.query_params["step"] == "999999"
    steps = at.sidebar.selectbox[1]
    assert steps.value is None
    steps.set_value(steps.options[-1]).run()
    _no_traceback(at)
    assert not _warnings(at) and len(at.get("plotly_chart")) >= 1
    assert at.query_params["step"] == steps.options[-1]


@pytest.mark.parametrize("layer", ["99", "0", "x", "-1"])
def test_a_layer_out_of_range_is_said_so(layer: str, dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = run_page("gradients", run=run_id, layer=layer)
    _no_traceback(at)
    assert _warnings(at) == [f"Layer `{layer}` is out of range 1–3; pick one in the sidebar."]
    assert not at.get("plotly_chart")
    assert at.query_params["layer"] == layer


def test_collapse_page_with_a_bad_layer_still_shows_the_collapse_curves(dash_env: Path) -> None:
    run_id = next(p.name for p in dash_env.iterdir())
    at = run_page("collapse", run=run_id, layer="9")
    _no_traceback(at)
    assert _warnings(at) == ["Layer `9` is out of range 1–3; pick one in the sidebar."]
    assert len(at.get("plotly_chart")) >= 5  # everything but the chosen layer's chart


def test_a_hostile_value_is_shown_short_and_on_one_line(dash_env: Path) -> None:
    at = run_page("spectrum", run="a`b\n" + "x" * 500)
    _no_traceback(at)
    (warning,) = _warnings(at)
    assert "\n" not in warning and "a'b x" in warning and len(warning) < 160


def test_runs_page_lists_no_symlinked_run(decoy_env: dict) -> None:
    at = run_page("runs")
    _no_traceback(at)
    picker = at.selectbox(key="runs_pick")
    assert "zz-link" not in picker.options and decoy_env["real"] in picker.options
    assert "zz-link" not in at.multiselect[0].options
    assert decoy_env["sleeper"].poll() is None


def test_docs_page_says_a_document_or_section_is_missing(dash_env: Path) -> None:
    at = run_page("docs", doc="nope")
    _no_traceback(at)
    assert any("There is no document `nope`" in w for w in _warnings(at))
    assert at.query_params["doc"] == "nope"
    at = run_page("docs", doc="theory", section="99.9")
    _no_traceback(at)
    assert any("has no section §99.9" in w for w in _warnings(at))
    assert at.query_params["section"] == "99.9"


# --------------------------------------------------------------------------- uploads
def _pickle_bomb(marker: Path) -> bytes:
    class Bomb:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"model": Bomb(), "config": {}})


def _zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


def _mismatched(ckpt: bytes) -> bytes:
    """A well-formed checkpoint whose tensors do not fit its config (a multi-line torch error)."""
    import torch

    state = torch.load(io.BytesIO(ckpt), weights_only=True)
    state["model"] = {"nonsense": torch.zeros(3)}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _hostile_files(ckpt: bytes, marker: Path) -> dict[str, bytes]:
    return {
        "mismatched.pt": _mismatched(ckpt),
        "empty.pt": b"",
        "random.pt": os.urandom(4096),
        "truncated.pt": ckpt[: len(ckpt) // 2],
        "tiny.pt": ckpt[:100],
        "a.zip.pt": _zip_of("archive/data.pkl", b"not a pickle"),
        "pickle.pt": _pickle_bomb(marker),
        "torch-pickle.pt": _zip_of("archive/data.pkl", _pickle_bomb(marker)),
        "header.safetensors": (2**40).to_bytes(8, "little") + b"{}",
        "garbage.safetensors": (8).to_bytes(8, "little") + b"\xff" * 8,
        "random.safetensors": os.urandom(256),
    }


def test_inspect_refuses_hostile_uploads_in_one_line(dash_env: Path, tmp_path: Path) -> None:
    run = next(p for p in dash_env.iterdir())
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1].read_bytes()
    marker = tmp_path / "pwned"
    at = run_page("inspect")
    for name, data in _hostile_files(ckpt, marker).items():
        at.file_uploader[0].set_value((name, data, "application/octet-stream")).run()
        _no_traceback(at)
        errors = [e.value for e in at.error]
        assert len(errors) == 1, (name, errors)
        assert errors[0].startswith(name), (name, errors[0])
        assert "dufm-upload" not in errors[0] and "/tmp" not in errors[0], errors[0]
        assert "\n" not in errors[0]
        assert not at.get("plotly_chart")
    assert not marker.exists()  # no pickle ran


def test_an_unexpected_failure_on_an_upload_is_one_line_naming_the_file(
    dash_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from ui import analysis_view as av

    def explode(path: Path, *args, **kwargs):
        raise RuntimeError(f"cannot map {path}\nsecond line")

    monkeypatch.setattr(av, "load_checkpoint", explode)
    at = run_page("inspect")
    at.file_uploader[0].set_value(("mine.pt", b"x" * 10, "application/octet-stream")).run()
    _no_traceback(at)
    (error,) = [e.value for e in at.error]
    assert error == "mine.pt: could not be analysed: RuntimeError: cannot map mine.pt second line"
    assert "Traceback" in capsys.readouterr().err


def test_inspect_analyses_a_good_upload_once(
    dash_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ui import analysis_view as av

    run = next(p for p in dash_env.iterdir())
    ckpt = sorted((run / "checkpoints").glob("step_*.pt"))[-1].read_bytes()
    calls = []
    real = av.report_of_path
    monkeypatch.setattr(av, "report_of_path", lambda *a, **k: calls.append(a) or real(*a, **k))
    at = run_page("inspect")
    at.file_uploader[0].set_value(("mine.pt", ckpt, "application/octet-stream")).run()
    _no_traceback(at)
    assert not at.error
    assert at.success[0].value.startswith("mine.pt · ufm")
    assert len(at.get("plotly_chart")) >= 2
    at.file_uploader[0].set_value(("again.pt", ckpt, "application/octet-stream")).run()
    assert len(calls) == 1  # the same content is analysed once per session


def test_stage_upload_streams_in_chunks_and_hashes(tmp_path: Path) -> None:
    import hashlib

    from ui import analysis_view as av

    data = os.urandom(3 * av.UPLOAD_CHUNK + 17)

    sizes: list[int | None] = []

    class Reader(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            sizes.append(size)
            return super().read(size)

        def getvalue(self) -> bytes:
            raise AssertionError("the whole upload was copied")

    src = Reader(data)
    src.read(5)  # a position left elsewhere does not matter
    path, digest = av.stage_upload(src, tmp_path, "../../etc/x.safetensors")
    assert path == tmp_path / "upload.safetensors"
    assert path.read_bytes() == data and digest == hashlib.sha256(data).hexdigest()
    assert sizes[1:] and set(sizes[1:]) == {av.UPLOAD_CHUNK}  # chunk by chunk, never all
    path2, _ = av.stage_upload(io.BytesIO(b"x"), tmp_path, "weird name")
    assert path2.name == "upload.pt"


# --------------------------------------------------------------------------- the app shell
def _shell_app() -> None:
    import streamlit as st

    from ui import shell

    def boom() -> None:
        st.write("before the error")
        raise FileNotFoundError(2, "No such file or directory", "/srv/secret/lab/runs/x.json")

    def stops() -> None:
        st.write("stopped here")
        st.stop()

    def reruns() -> None:
        if not st.session_state.get("again"):
            st.session_state["again"] = True
            st.rerun()
        st.write("ran twice")

    def goes() -> None:
        st.switch_page(st.Page(reruns, title="Reruns", url_path="reruns"))

    which = st.query_params.get("p", "boom")
    pages = {
        "boom": st.Page(boom, title="Boom", url_path="boom"),
        "stops": st.Page(stops, title="Stops", url_path="stops"),
        "reruns": st.Page(reruns, title="Reruns", url_path="reruns"),
        "goes": st.Page(goes, title="Goes", url_path="goes"),
    }
    nav = st.navigation([pages[which], *[p for k, p in pages.items() if k != which]])
    shell.run_page(nav)


def test_an_exception_on_a_page_is_one_line_without_path_or_traceback(
    capsys: pytest.CaptureFixture,
) -> None:
    at = AppTest.from_function(_shell_app, default_timeout=30)
    at.query_params["p"] = "boom"
    at.run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith("Something went wrong on this page: FileNotFoundError: ")
    assert "…/x.json" in error and "/srv/secret" not in error and "\n" not in error
    assert "before the error" in [m.value for m in at.markdown]
    err = capsys.readouterr().err
    assert "Traceback" in err and "/srv/secret/lab/runs/x.json" in err  # for the operator


@pytest.mark.parametrize(("page", "text"), [("stops", "stopped here"), ("reruns", "ran twice"),
                                            ("goes", "ran twice")])
def test_streamlit_control_flow_passes_through_the_shell(page: str, text: str) -> None:
    at = AppTest.from_function(_shell_app, default_timeout=30)
    at.query_params["p"] = page
    at.run()
    assert not at.exception and not at.error
    assert text in [m.value for m in at.markdown]


def test_the_real_app_shows_a_failing_page_in_one_line(
    dash_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """app.py's default page (Overview) raises: the visitor sees one line without the path."""
    from dufm_core import store

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/srv/secret/runs/status.json")

    monkeypatch.setattr(store, "list_runs", broken)  # the Overview lists the recent runs
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error == (
        "Something went wrong on this page: PermissionError: [Errno 13] Permission denied: "
        "'…/status.json'"
    )
    assert at.title[0].value == "DUFM Lab"  # what the page showed before it failed stays
    assert "Traceback" in capsys.readouterr().err


def test_config_shows_no_tracebacks_and_limits_uploads() -> None:
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["client"]["showErrorDetails"] in ("type", "none")
    assert 10 <= cfg["server"]["maxUploadSize"] <= 200
