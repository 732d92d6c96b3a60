"""Runs you can find and open: the short run label of the pickers, the run header of the
analysis pages, the links from a finished run to its analysis pages, steps/s and time left,
and the Runs table's links (issue #13 item 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core.store import RunSummary
from tests.dashboard.conftest import run_page, serve_runs
from tests.helpers import ROOT
from ui import links, live, state

UFM = {"model": "ufm", "activation": "linear", "loss": "mse", "K": 3, "depth": 3, "name": ""}


def _summary(run_id: str, config: dict, run_state: str = "finished") -> RunSummary:
    return RunSummary(id=run_id, path=Path(run_id), state=run_state, step=0, total_steps=1,
                      config=config)  # fmt: skip


def _run_id(runs: Path) -> str:
    return next(p.name for p in runs.iterdir())


def test_labels_of_runs_sharing_a_timestamp_are_short_and_distinct() -> None:
    a = _summary("20261206-125119-ufm-linear-mse-K3-L3-d4e3", UFM)
    b = _summary("20261206-125119-ufm-linear-mse-K3-L3-0a9f", UFM, "running")
    la, lb = state.run_label(a), state.run_label(b)
    assert la == "linear/mse K3 L3 · 12:51 d4e3 ✓"
    assert lb == "linear/mse K3 L3 · 12:51 0a9f ▸"
    assert la != lb and max(len(la), len(lb)) <= 33  # what the sidebar picker shows whole


def test_label_prefers_the_run_name_and_keeps_it_short() -> None:
    named = _summary("20261206-125119-my-run-beef", {**UFM, "name": "my run"})
    assert state.run_label(named) == "my run · 12:51 beef ✓"
    long = _summary("20261206-125119-x-beef", {**UFM, "name": "a" * 80})
    label = state.run_label(long)
    assert label.startswith("a" * (state.MAX_NAME - 1) + "…") and len(label) <= 33
    real = {"model": "resnet20", "dataset": "digits", "depth": 3}
    assert state.run_label(_summary("20261206-010203-real-0001", real)).startswith(
        "resnet20 digits · 01:02 0001 ✓"
    )
    assert state.run_label(_summary("odd-name", UFM, "failed")) == "linear/mse K3 L3 · odd-name ✗"


def test_sidebar_picker_shows_the_label(dash_env: Path) -> None:
    at = run_page("spectrum")
    picker = at.sidebar.selectbox(key="run_pick")
    assert picker.options == [state.run_label(r) for r in state.all_runs()]
    assert picker.options[0].startswith("fixture · ") and picker.options[0].endswith(" ✓")


@pytest.mark.parametrize("page", ["spectrum", "collapse"])
def test_analysis_page_names_its_run(page: str, dash_env: Path) -> None:
    run_id = _run_id(dash_env)
    at = run_page(page, run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    header = next(m.value for m in at.markdown if f"`{run_id}`" in m.value)
    assert header.startswith(":small[**fixture · ") and " ✓** · finished · " in header
    assert "UFM linear/mse, K=3, L=3" in header
    assert "step 3,000 of 3,000" in header


def test_finished_run_links_to_its_analysis_pages(dash_env: Path) -> None:
    """On its own (no navigation) the Train page falls back to markdown links."""
    run_id = _run_id(dash_env)
    at = run_page("train", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    shown = [m.value for m in at.markdown]
    for page, label, _ in links.ANALYSIS_PAGES:
        assert f"[{label}]({page}?run={run_id})" in shown
    assert not any("real_vs_ufm" in m for m in shown)  # a UFM run: no real-network page
    assert any(c.value.endswith(" steps/s") for c in at.caption)  # finished: no time left


def test_links_are_page_links_inside_the_app(
    finished_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_runs(finished_runs, monkeypatch)
    run_id = _run_id(finished_runs)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = run_id
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    links = {(p.proto.page, p.proto.query_string) for p in at.get("page_link")}
    for page in ("spectrum", "alignment", "gradients", "collapse"):
        assert (page, f"run={run_id}") in links


def test_pace_text() -> None:
    rows = [{"step": s, "time": s / 1000} for s in range(0, 2001, 100)]
    status = {"step": 2000, "started_at": None, "updated_at": None}
    assert live.pace_text(rows, status, 14000, active=True) == "1 000 steps/s · about 12 s left"
    assert live.pace_text(rows, status, 14000, active=False) == "1 000 steps/s"
    # no timed rows: the status's start and last update
    status = {"step": 30, "started_at": 100.0, "updated_at": 110.0}
    assert live.pace_text([], status, 30 + 3 * 600, active=True) == "3 steps/s · about 10 min left"
    assert live.pace_text([], {"step": 0, "started_at": None, "updated_at": 5.0}, 10, True) == ""
    assert live.pace_text([{"step": 5, "time": 1.0}], {"step": 5}, 10, True) == ""
    resumed = [*rows, *({"step": s, "time": (s - 2000) / 500} for s in range(2100, 3001, 100))]
    assert live.pace_text(resumed, {"step": 3000}, 3000, active=False) == "500 steps/s"


def test_real_network_run_also_links_to_real_vs_ufm(real_env: Path) -> None:
    run_id = next(p.name for p in real_env.iterdir() if "-real-" in p.name)
    at = run_page("train", run=run_id)
    assert not at.exception, [e.value for e in at.exception]
    assert f"[Real network vs UFM](real_vs_ufm?run={run_id})" in [m.value for m in at.markdown]


def test_runs_table_rows_link_to_the_live_view(dash_env: Path) -> None:
    at = run_page("runs")
    assert not at.exception, [e.value for e in at.exception]
    run_id = _run_id(dash_env)
    df = at.dataframe[0].value
    assert list(df["run"]) == [run_id] and list(df["open"]) == [f"train?run={run_id}"]


def test_layer_picked_on_one_page_is_kept_on_the_next(dash_env: Path) -> None:
    """The sidebar's page links drop the query parameters: the next analysis page opens on the
    layer picked last (run and step are kept by their pickers), and a link's layer still wins."""
    at = run_page("spectrum")
    assert at.selectbox(key="layer_pick").value == 3
    at.selectbox(key="layer_pick").set_value(2).run()
    remembered = at.session_state[state.LAST_LAYER]
    assert remembered == 2
    nxt = AppTest.from_file(str(ROOT / "pages" / "alignment.py"), default_timeout=60)
    nxt.session_state[state.LAST_LAYER] = remembered  # the session carried over to the next page
    nxt.run()
    assert not nxt.exception
    assert nxt.selectbox(key="layer_pick").value == 2
    assert nxt.query_params["layer"] == "2"  # the URL names it, so the view can be shared
    linked = AppTest.from_file(str(ROOT / "pages" / "alignment.py"), default_timeout=60)
    linked.session_state[state.LAST_LAYER] = 2
    linked.query_params["layer"] = "1"
    linked.run()
    assert linked.selectbox(key="layer_pick").value == 1
    assert linked.session_state[state.LAST_LAYER] == 1
