"""The Compare page under AppTest (issue #13 item 2): tiny finished runs in a runs folder of
their own (two equal but for the seed, one with another λ_W); the page shows their config diff
and a chart, groups the seeds into a band, analyses their checkpoints on request, and a link
naming a run that is not there gets one line. The Runs page links to it with its chosen runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dufm_core import RunConfig, train
from tests.dashboard.conftest import run_page, serve_runs


@pytest.fixture(scope="module")
def compare_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """{role: run id} of three finished linear-MSE runs (K=3, L=3, 200 steps)."""
    root = tmp_path_factory.mktemp("compare") / "runs"
    ids = {}
    for role, changes in (("seed1", {"seed": 1}), ("seed2", {"seed": 2}),
                          ("lam", {"seed": 1, "lam_w": 0.02})):
        cfg = RunConfig(K=3, n=10, width=12, depth=3, steps=200, log_points=12,
                        checkpoint_points=2, **changes)
        ids[role] = train(cfg, runs_dir=root, progress=None).run.id
    ids["root"] = str(root)
    return ids


@pytest.fixture
def env(compare_runs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    serve_runs(Path(compare_runs["root"]), monkeypatch)
    return compare_runs


def _spec(at) -> dict:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def test_default_shows_two_runs_their_diff_and_a_chart(env: dict[str, str]) -> None:
    at = run_page("compare")
    assert not at.exception, [e.value for e in at.exception]
    chosen = at.multiselect(key="compare_runs").value
    assert len(chosen) == 2 and set(chosen) <= {env["seed1"], env["seed2"], env["lam"]}
    assert at.query_params["runs"] == ",".join(chosen)  # the link names the comparison
    (table,) = at.dataframe
    fields = list(table.value["field"])  # which two are newest depends on their random tags
    assert fields in (["seed"], ["lam_w"], ["lam_w", "seed"])
    spec = _spec(at)
    assert spec["layout"]["title"]["text"] == "Loss (fit + reg)"
    assert sum(1 for t in spec["data"] if t.get("mode", "").startswith("lines")) >= 2


def test_link_with_an_unknown_run_gets_one_line(env: dict[str, str]) -> None:
    at = run_page("compare", runs="nope-1234")
    assert not at.exception
    assert [w.value for w in at.warning] == [
        "Run `nope-1234` was not found in the runs folder; pick runs below."]
    assert not at.get("plotly_chart") and at.multiselect(key="compare_runs").value == []
    assert at.query_params["runs"] == "nope-1234"  # kept until the visitor picks
    at = run_page("compare", runs=f"nope-1234,{env['lam']}")  # the known one is still shown
    assert len(at.warning) == 1 and at.multiselect(key="compare_runs").value == [env["lam"]]
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.parametrize("bad", ["../../etc", "/tmp", "a`b\n" + "x" * 500, "x," * 200])
def test_a_hostile_link_is_one_short_line(bad: str, env: dict[str, str]) -> None:
    at = run_page("compare", runs=bad)
    assert not at.exception
    (warning,) = at.warning
    assert "\n" not in warning.value and len(warning.value) < 220
    assert warning.value.endswith("not found in the runs folder; pick runs below.")
    assert not at.get("plotly_chart")


def test_link_names_the_series(env: dict[str, str]) -> None:
    at = run_page("compare", runs=env["lam"], series="grad_norm")
    assert not at.exception and not at.warning
    assert at.selectbox(key="compare_series").value == "grad_norm"
    assert _spec(at)["layout"]["title"]["text"] == "Gradient norm"
    at.selectbox(key="compare_series").set_value("nc1[2]").run()
    assert at.query_params["series"] == "nc1[2]"
    at = run_page("compare", runs=env["lam"], series="bogus[9]")
    assert [w.value for w in at.warning] == [
        "Series `bogus[9]` is not among the chosen runs' series; pick one below."]
    assert at.selectbox(key="compare_series").value == "loss"  # the default, drawn
    assert len(at.get("plotly_chart")) == 1


def test_seeds_are_grouped_into_a_band_with_the_closed_form(env: dict[str, str]) -> None:
    at = run_page("compare", runs=f"{env['seed1']},{env['seed2']},{env['lam']}")
    assert not at.exception, [e.value for e in at.exception]
    names = [t.get("name") for t in _spec(at)["data"]]
    assert "lam_w=0.01 · 2 seeds, mean" in names and "lam_w=0.01 · 2 seeds, min–max" in names
    assert "lam_w=0.02, seed=1" in names
    closed = [n for n in names if n and n.startswith("closed form")]
    assert len(closed) == 2  # one per λ_W: each curve's own closed-form loss
    fills = [t for t in _spec(at)["data"] if t.get("fill") == "tonexty"]
    assert len(fills) == 1
    at.toggle(key="compare_group").set_value(False).run()
    names = [t.get("name") for t in _spec(at)["data"]]
    assert "lam_w=0.01, seed=2" in names and not any(t.get("fill") for t in _spec(at)["data"])


def test_analysing_the_checkpoints_adds_the_analysed_series(env: dict[str, str]) -> None:
    at = run_page("compare", runs=f"{env['seed1']},{env['lam']}")
    assert "hessian_top1[1]" not in at.selectbox(key="compare_series").options
    (button,) = at.button
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    options = at.selectbox(key="compare_series").options
    assert any(o.startswith("outlier_ratio[3] · ") for o in options)
    at.selectbox(key="compare_series").set_value("outlier_ratio[3]").run()
    spec = _spec(at)
    ref = [t for t in spec["data"] if t.get("name", "").startswith("closed form")]
    assert len(ref) == 1 and ref[0]["y"] == [1.0, 1.0]  # max/min → 1, the same for both
    assert not at.button  # every checkpoint analysed now


def test_runs_page_links_to_compare_with_its_chosen_runs(env: dict[str, str]) -> None:
    at = run_page("runs")
    assert not at.exception
    assert "[Compare runs](compare)" in [m.value for m in at.markdown]
    at.multiselect[0].set_value([env["lam"], env["seed2"]]).run()
    assert f"[Compare these runs](compare?runs={env['lam']}%2C{env['seed2']})" in [
        m.value for m in at.markdown]


def test_a_broken_checkpoint_gets_one_error_line(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "runs"
    shutil.copytree(Path(env["root"]) / env["lam"], root / env["lam"],
                    ignore=shutil.ignore_patterns("analysis"))
    for ck in (root / env["lam"] / "checkpoints").glob("step_*.pt"):
        ck.write_bytes(b"not a checkpoint")
    serve_runs(root, monkeypatch)
    at = run_page("compare", runs=env["lam"])
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    (error,) = at.error
    tag = env["lam"].rsplit("-", 1)[1]  # one run: its legend name is its id's tag
    assert error.value.startswith(f"Could not analyse {tag}: …/step_00000000.pt: not a PyTorch")
    assert "\n" not in error.value and len(at.get("plotly_chart")) == 1
