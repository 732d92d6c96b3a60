"""Inspect's "your own model" mode in Streamlit's AppTest: a state dict and a data file give the
report with the collapse table and the weight spectrum; a wrong architecture is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.dashboard.conftest import run_page

OWN = "your own model (any classifier)"


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DUFM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DUFM_LAUNCHER", "off")
    return tmp_path


def _upload(at, index: int, path: Path, name: str) -> None:
    at.file_uploader[index].set_value((name, path.read_bytes(), "application/octet-stream"))


def test_own_model_report_and_refusal(page_env: Path, mlp, data_npz: Path) -> None:
    torch.save(mlp.state_dict(), page_env / "m.pt")
    at = run_page("inspect")
    at.radio[0].set_value(OWN).run()
    assert not at.exception
    _upload(at, 0, page_env / "m.pt", "mine.pt")
    _upload(at, 1, data_npz, "digits.npz")
    at.text_input[0].set_value("mlp:64-12-10-10").run()
    at.button(key="own_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(s.value.startswith("your model mine.pt") for s in at.success), [
        s.value for s in at.success]
    assert at.dataframe and len(at.get("plotly_chart")) >= 2
    at.text_input[0].set_value("mlp:64-9-10").run()
    assert not at.exception
    (error,) = [e.value for e in at.error]
    assert error.startswith("mine.pt: its tensors do not fit --arch mlp:64-9-10")
    assert "/tmp" not in error and "\n" not in error
