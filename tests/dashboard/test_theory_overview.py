"""The Theory explorer (the setting drawn on the γ curve, the spectra with their multiplicities,
readable metrics) and the Overview (recent runs with links, the start on an empty store)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core import theory
from tests.dashboard.conftest import run_page, serve_runs
from tests.helpers import ROOT

K, N, L = 3, 40, 5  # the explorer's defaults (docs/theory.md case A)


def _specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _point(spec: dict) -> tuple[float, float, str]:
    """The chosen setting on the γ figure: (λ, γ, its label)."""
    trace = next(t for t in spec["data"] if t.get("name") == "this setting")
    label = spec["layout"]["annotations"][-1]["text"]
    return trace["x"][0], trace["y"][0], label


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _explorer(log_w: float, log_h: float) -> AppTest:
    at = run_page("theory_explorer")
    at.slider(key="te_log_w").set_value(log_w)
    at.slider(key="te_log_h").set_value(log_h).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize(("log_w", "log_h"), [(-2.0, -2.0), (-2.5, -1.0), (-1.0, -1.0)])
def test_metrics_are_short_and_whole(log_w: float, log_h: float) -> None:
    at = _explorer(log_w, log_h)
    values = _metrics(at)
    assert set(values) == {"γ", "loss", "optimum", "common λ", "λ_crit"}
    assert all(len(v) <= 10 and "…" not in v for v in values.values()), values


def test_equal_lambda_point_and_spectra_labels() -> None:
    at = _explorer(-2.0, -2.0)
    specs = _specs(at)
    assert len(specs) == 3  # γ curve, layer spectrum, full spectrum
    lam, g, label = _point(specs[0])
    assert lam == pytest.approx(1e-2) and label == "λ = 0.01"
    assert g == pytest.approx(theory.gamma(K, N, [1e-2] * L, 1e-2), abs=1e-12)
    assert _metrics(at)["γ"] == f"{g:.8f}"
    layer_text = [t for tr in specs[1]["data"] for t in tr.get("text") or []]
    full_text = [t for tr in specs[2]["data"] for t in tr.get("text") or []]
    assert any(t.startswith("K² = 9<br>λ_W γ/(1−γ)") for t in layer_text)
    assert any(t.startswith("K(K−1)/2 = 3<br>GN + ρ") for t in full_text)
    assert any(t.startswith("K(K+1)/2 = 6<br>GN − ρ") for t in full_text)
    assert any(t.startswith("×") for t in layer_text)  # the zero eigenvalues, drawn apart


def test_unequal_lambdas_put_the_point_at_the_equivalent_common_lambda() -> None:
    lam_w, lam_h = 10**-2.5, 10**-1.0
    at = _explorer(-2.5, -1.0)
    lam, g, label = _point(_specs(at)[0])
    lam_eq = (lam_h * lam_w**L) ** (1 / (L + 1))  # same λ_H Π λ_W
    assert lam == pytest.approx(lam_eq, rel=1e-12)
    assert label.startswith("λ_eq = (λ_H λ_W^L)^(1/(L+1)) = ")
    # the point is on the equal-λ curve and is this setting's γ
    assert g == pytest.approx(theory.gamma(K, N, [lam_w] * L, lam_h), abs=1e-12)
    assert g == pytest.approx(theory.gamma(K, N, [lam_eq] * L, lam_eq), abs=1e-12)
    assert "common λ with the same product" in "\n".join(c.value for c in at.caption)


def test_above_lambda_crit_the_point_drops_to_zero() -> None:
    at = _explorer(-1.0, -1.0)  # λ = 0.1 > λ_crit = 0.031
    assert theory.lambda_crit(K, N, L) < 0.1
    specs = _specs(at)
    assert len(specs) == 1 and at.warning  # no spectra at the zero optimum
    lam, g, _ = _point(specs[0])
    assert (lam, g) == (pytest.approx(0.1), 0.0)
    lo, hi = specs[0]["layout"]["xaxis"]["range"]
    assert lo < math.log10(lam) < hi  # on the visible part of the axis
    assert _metrics(at)["optimum"] == "zero"


def _app(runs: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The whole app (app.py's navigation, so page links resolve) on its default page."""
    serve_runs(runs, monkeypatch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _links(at: AppTest) -> list:
    return [p.proto for p in at.get("page_link")]


def test_overview_lists_recent_runs_with_links(
    finished_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(finished_runs, monkeypatch)
    assert at.title[0].value == "DUFM Lab"
    links = _links(at)
    assert [(p.page, p.label) for p in links[:3]] == [
        ("train", "Train a model"), ("theory_explorer", "Theory explorer"), ("runs", "All runs")
    ]  # fmt: skip
    run_id = next(p.name for p in finished_runs.iterdir())
    assert any(p.page == "train" and p.query_string == f"run={run_id}" for p in links)
    text = "\n".join(m.value for m in at.markdown)
    assert "finished" in text and "UFM linear/mse, K=3, L=3" in text
    assert "3,000 / 3,000" in text
    assert "command line" not in text  # the dashboard is the way in now


def test_overview_of_an_empty_store_offers_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One click trains the paper's linear UFM and lands on its live view (issue #13: the first
    click used to show a plain Train page)."""
    runs = tmp_path / "runs"
    at = _app(runs, monkeypatch)
    assert "No runs yet" in at.info[0].value
    assert not any(p.query_string for p in _links(at))  # no run rows
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    (new,) = [p.name for p in runs.iterdir() if not p.name.startswith(".")]
    assert at.query_params["run"] == new  # the Train page, on the new run's live view
    cfg = json.loads((runs / new / "config.json").read_text())
    assert (cfg["K"], cfg["n"], cfg["width"], cfg["depth"]) == (3, 40, 60, 5)
    state = None
    for _ in range(240):  # the background worker trains it (seconds; the test waits for it)
        state = json.loads((runs / new / "status.json").read_text())["state"]
        if state in ("finished", "failed"):
            break
        time.sleep(0.5)
    assert state == "finished"


def test_overview_on_its_own_links_with_markdown(dash_env: Path) -> None:
    """Run as its own script (no navigation), the page falls back to plain links."""
    at = run_page("overview")
    assert not at.exception
    run_id = next(p.name for p in dash_env.iterdir())
    assert f"[{run_id}](train?run={run_id})" in [m.value for m in at.markdown]
