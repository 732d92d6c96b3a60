"""The Sweeps page under AppTest, against a small finished sweep (a λ grid of the linear UFM)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core import sweeps
from tests.dashboard.conftest import serve_runs
from tests.helpers import ROOT

SPEC = """
name = "phase-mini"
[base]
K = 3
n = 5
width = 6
depth = 2
lr = 0.5
steps = 1500
log_points = 20
checkpoint_points = 2
[grid]
lam_over_crit = [0.2, 0.6, 1.5]
"""


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder holding one finished three-member sweep (run in this process)."""
    root = tmp_path_factory.mktemp("sweepdash") / "runs"
    sweeps.run_sweep(sweeps.load_spec("<t>", SPEC), runs_dir=root, executor="inline")
    return root


@pytest.fixture
def env(sweep_runs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return serve_runs(sweep_runs, monkeypatch)


def _page(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "sweeps.py"), default_timeout=60)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def test_page_shows_the_sweep_and_its_phase_diagram(env: Path) -> None:
    at = _page(sweep="phase-mini")
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Sweeps"
    assert "Phase diagram (linear MSE)" in [s.value for s in at.subheader]
    assert len(at.get("plotly_chart")) >= 2
    table = at.dataframe[0].value
    assert list(table["state"]) == ["finished"] * 3
    # each member's row links to its run's live view, and the run is one the store lists
    assert list(table["open"]) == [f"train?run={r}" for r in table["run"]]
    assert all((env / r / "config.json").is_file() for r in table["run"])


def test_page_validates_a_pasted_spec(env: Path) -> None:
    at = _page()
    assert not at.exception
    at.selectbox(key="sweep_preset").set_value("custom").run()
    at.text_area(key="spec_custom").set_value(SPEC.replace("lr = 0.5", "lr = -1")).run()
    assert any("member 0 [lam_over_crit=0.2]: lr: must be" in e.value for e in at.error)
    launch = next(b for b in at.button if b.label == "Launch sweep")
    assert launch.disabled


def test_every_preset_is_a_valid_spec(env: Path) -> None:
    presets = sweeps.presets.spec_files()
    assert {"phase", "depth", "width", "sensitivity"} <= set(presets)
    at = _page()
    for name in presets:
        at.selectbox(key="sweep_preset").set_value(name).run()
        assert not at.exception and not at.error, name
        assert any("members over" in s.value for s in at.success)


def test_without_ray_the_page_says_how_to_install_it(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real(n, *a)
    )
    at = _page()
    at.radio(key="sweep_executor").set_value("ray").run()
    assert not at.exception
    assert any("pip install 'ray>=2.9,<3'" in w.value for w in at.warning)
    assert next(b for b in at.button if b.label == "Launch sweep").disabled


def test_a_link_to_a_missing_sweep_says_so_and_waits_for_a_pick(env: Path) -> None:
    at = _page(sweep="../nope")
    assert not at.exception, [e.value for e in at.exception]
    assert [w.value for w in at.warning] == [
        "Sweep `../nope` was not found in the runs folder; pick one below."
    ]
    assert at.query_params["sweep"] == "../nope"  # not rewritten to another sweep
    assert not at.dataframe  # no sweep is shown until one is picked
    at.selectbox(key="sweep_pick_missing").set_value("phase-mini").run()
    assert not at.exception and not at.warning
    assert at.query_params["sweep"] == "phase-mini"
    assert list(at.dataframe[0].value["state"]) == ["finished"] * 3
