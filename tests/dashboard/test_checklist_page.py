"""The Reproduction checklist page (pages/checklist.py) under AppTest, on the tiny stand-ins
for the paper's presets (tests/checklist_helpers.py): with finished runs every row passes and
links to its page; with none, the rows say "not run yet" and the button trains them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dufm_core import checklist
from dufm_core.store import iter_runs
from tests.checklist_helpers import train_tiny_runs, use_tiny_runs
from tests.dashboard.conftest import run_page, serve_runs
from ui.checklist import RESULT

PASS, FAIL = f"{RESULT['pass']} pass", RESULT["fail"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checklist_page") / "runs"
    train_tiny_runs(root)
    return root


def _texts(at) -> str:
    return "\n".join(m.value for m in [*at.markdown, *at.caption])


def test_finished_runs_show_passes(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_runs(monkeypatch)
    serve_runs(tiny_root, monkeypatch)
    at = run_page("checklist")
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Reproduction checklist"
    text = _texts(at)
    n = len(checklist.CLAIMS)
    assert f"{n} of {n} claims pass" in text
    assert text.count(PASS) == n and FAIL not in text and "not run yet" not in text
    for claim in checklist.CLAIMS:
        assert claim.title in text and claim.caption in text
    # each row links to its page with the run, step and the layer it concerns
    relu = checklist.find_runs(tiny_root)["paper-relu"].finished
    assert relu is not None
    assert f"spectrum?run={relu.id}&step={relu.checkpoints()[-1]}&layer=4" in text


def test_no_runs_rows_not_run_yet_and_button(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_runs(monkeypatch)
    root = serve_runs(tmp_path / "runs", monkeypatch)
    at = run_page("checklist")
    assert not at.exception, [e.value for e in at.exception]
    text = _texts(at)
    assert text.count(f"{RESULT['not run yet']} not run yet") == len(checklist.CLAIMS)
    assert f"0 of {len(checklist.CLAIMS)} claims pass" in text
    button = next(b for b in at.button if b.label == "Run the checklist")
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    runs = list(iter_runs(root))
    assert sorted(r.config().name for r in runs) == sorted(
        checklist.run_config(k).name for k in checklist.RUNS)
    assert f"{RESULT['training']} training" in _texts(at) or PASS in _texts(at)
    # the background workers finish (tiny runs: seconds); then the page shows the passes
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = checklist.find_runs(root)
        if all(s.finished is not None for s in states.values()):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the checklist runs did not finish in 120 s")
    at = run_page("checklist")
    assert not at.exception, [e.value for e in at.exception]
    assert f"{len(checklist.CLAIMS)} of {len(checklist.CLAIMS)} claims pass" in _texts(at)
