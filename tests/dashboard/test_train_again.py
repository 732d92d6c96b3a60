"""Train again (issue #13): the Train page opened on a run offers its settings as a starting
point; ``train?from=ID`` fills the form with run ID's config, so a visitor changes one value and
launches; a ResNet run opened on Train shows the real-network form and the run's own verdict."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core import kinds
from dufm_core.store import Run
from tests.dashboard.conftest import run_page, serve_runs
from ui.config_form import again_key


def _ids(root: Path) -> tuple[str, str]:
    """(the UFM run's id, the ResNet run's id) of the real_runs folder."""
    names = sorted(p.name for p in root.iterdir())
    real = next(n for n in names if "-real-" in n)
    return next(n for n in names if n != real), real


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _gamma_shown(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label.startswith("γ"))


def test_from_fills_the_form_with_the_runs_settings(real_env: Path) -> None:
    ufm, _ = _ids(real_env)
    cfg = Run(real_env / ufm).config()
    at = _ok(run_page("train", **{"from": ufm}))
    assert "Train again with these settings" in [s.value for s in at.subheader]
    key = again_key(ufm)
    assert at.number_input(key=key + "K").value == cfg.K == 3
    assert at.number_input(key=key + "n").value == cfg.n == 10
    assert at.text_input(key=key + "width").value == str(cfg.width)
    assert at.number_input(key=key + "steps").value == cfg.steps == 3000
    assert at.title[0].value == "Train a deep UFM"
    assert _gamma_shown(at) == f"{kinds.predict_for(cfg).prediction().gamma:.8f}"


def test_changing_one_value_keeps_the_others(real_env: Path) -> None:
    ufm, _ = _ids(real_env)
    at = _ok(run_page("train", **{"from": ufm}))
    key = again_key(ufm)
    before = _gamma_shown(at)
    at.text_input(key=key + "lam_w").set_value("2e-3").run()
    _ok(at)
    assert at.number_input(key=key + "K").value == 3  # the rest is still the run's
    assert _gamma_shown(at) != before and not at.error  # the verdict follows the new λ_W


def test_a_run_offers_train_again_and_the_click_fills_the_form(real_env: Path) -> None:
    ufm, _ = _ids(real_env)
    at = _ok(run_page("train", run=ufm))
    assert "from" not in at.query_params
    at.button(key="again_on").click().run()
    _ok(at)
    assert at.query_params["from"] == [ufm] or at.query_params["from"] == ufm
    assert at.number_input(key=again_key(ufm) + "K").value == 3
    at.button(key="again_off").click().run()  # back to the presets
    _ok(at)
    assert "from" not in at.query_params and at.selectbox(key="preset").value


def test_a_resnet_run_opens_on_the_real_network_form(real_env: Path) -> None:
    _, real = _ids(real_env)
    cfg = Run(real_env / real).config()
    at = _ok(run_page("train", run=real))
    assert at.title[0].value == "Train a real network"
    at.button(key="again_on").click().run()
    _ok(at)
    key = again_key(real)
    assert at.title[0].value == "Train a real network"
    assert at.selectbox(key=key + "dataset").value == cfg.dataset
    assert at.number_input(key=key + "n").value == cfg.n == 3
    # the verdict is the run's: the UFM at λ_H,UFM = λ_H/N of this run
    assert _gamma_shown(at) == f"{kinds.predict_for(cfg).prediction().gamma:.8f}"


def test_a_missing_run_to_train_again_is_one_line(real_env: Path) -> None:
    at = _ok(run_page("train", **{"from": "no-such-run"}))
    assert len(at.warning) == 1 and "\n" not in at.warning[0].value
    assert "no-such-run" in at.warning[0].value and "not found" in at.warning[0].value
    assert at.selectbox(key="preset").value  # the form starts at a preset


def test_a_hostile_from_is_refused_in_one_line(real_env: Path) -> None:
    at = _ok(run_page("train", **{"from": "../../etc`passwd\nx"}))
    assert len(at.warning) == 1 and "\n" not in at.warning[0].value
    assert "not found" in at.warning[0].value and "`passwd" not in at.warning[0].value


def test_a_damaged_run_cannot_be_trained_again(real_env: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "runs"
    shutil.copytree(real_env, root)
    ufm, _ = _ids(root)
    (root / ufm / "config.json").write_text("{not json")
    serve_runs(root, monkeypatch)
    at = _ok(run_page("train", **{"from": ufm}))
    assert len(at.warning) == 1 and "cannot be trained again" in at.warning[0].value
    assert "config.json" in at.warning[0].value and at.selectbox(key="preset").value
