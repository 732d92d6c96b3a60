"""The run comparer's data (ui/compare.py) and its figure (ui/figures/compare.py): the config
diff, the series of metrics rows and of analysis/series.json (per layer too), seed groups and
their bands with known numbers, legend names, the closed-form references and which runs get
them (issue #13 item 2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dufm_core import RunConfig, theory
from dufm_core.store import RunSummary
from ui import compare, figures

BASE = RunConfig(K=3, n=10, width=12, depth=3, steps=300).to_dict()


def _cfg(**changes) -> dict:
    return {**BASE, **changes}


def _summary(run_id: str, run_state: str = "finished") -> RunSummary:
    return RunSummary(id=run_id, path=Path(run_id), state=run_state, step=0, total_steps=1)


# --------------------------------------------------------------------------- which runs
def test_parse_ids_drops_blanks_and_repeats() -> None:
    assert compare.parse_ids(" a, b,,a ,c") == ["a", "b", "c"]
    assert compare.parse_ids(None) == [] and compare.parse_ids("") == []


def test_missing_message_names_at_most_three_runs() -> None:
    assert compare.missing_message(["x"]) == (
        "Run `x` was not found in the runs folder; pick runs below.")
    assert compare.missing_message(list("abcde"), str.upper) == (
        "Runs `A`, `B`, `C` and 2 more were not found in the runs folder; pick runs below.")


def test_default_is_the_two_newest_runs_with_metrics_never_queued() -> None:
    rows = [_summary("new", "queued"), _summary("empty", "failed"), _summary("b"),
            _summary("a", "running"), _summary("old")]
    has = {"new": True, "empty": False, "b": True, "a": True, "old": True}
    assert compare.default_ids(rows, has) == ["b", "a"]
    assert compare.default_ids(rows, {"old": True}) == ["old"]
    assert compare.default_ids(rows, {}) == []


# --------------------------------------------------------------------------- config diff
def test_config_table_lists_only_the_differing_fields_unless_asked() -> None:
    configs = {"r1": _cfg(lam_w=1e-3, seed=1), "r2": _cfg(lam_w=[1e-3, 1e-3, 2e-3], seed=1),
               "r3": {**_cfg(seed=2), "extra": True}}
    assert compare.differing_fields(configs) == ["lam_w", "seed", "extra"]
    table = compare.config_table(configs, {"r1": "one", "r2": "two", "r3": "three"})
    assert table == {
        "field": ["lam_w", "seed", "extra"],
        "one": ["0.001", "1", "—"],
        "two": ["[0.001, 0.001, 0.002]", "1", "—"],
        "three": ["0.01", "2", "True"],
    }
    full = compare.config_table(configs, {}, show_all=True)
    assert full["field"][: len(BASE)] == list(BASE) and full["field"][-1] == "extra"
    assert full["r1"][full["field"].index("K")] == "3"
    close = {"a": _cfg(lr=0.1), "b": _cfg(lr=0.1 + 1e-13)}  # exact values decide, not shown
    assert compare.differing_fields(close) == ["lr"]
    assert compare.seed_groups(close) == [["a"], ["b"]]
    same = compare.config_table({"a": _cfg(), "b": _cfg()}, {})
    assert same == {"field": [], "a": [], "b": []}


# --------------------------------------------------------------------------- legend names
def test_id_suffixes_are_the_shortest_unique_tails() -> None:
    ids = ["20261206-125119-ufm-linear-mse-K3-L3-d4e3", "20261206-125119-ufm-linear-mse-K3-L3-0a9f",
           "x-0a9f"]
    assert compare.id_suffixes(ids) == {ids[0]: "d4e3", ids[1]: "L3-0a9f", ids[2]: "x-0a9f"}


def test_legend_names_prefer_name_then_differing_values_then_id_suffix() -> None:
    configs = {"run-aaaa": _cfg(name="baseline", lam_w=1e-3, seed=2),
               "run-bbbb": _cfg(lam_w=1e-3, seed=3),
               "run-cccc": _cfg(lam_w=1e-2, seed=2)}
    assert compare.legend_names(configs) == {
        "run-aaaa": "baseline", "run-bbbb": "lam_w=0.001, seed=3", "run-cccc": "lam_w=0.01, seed=2"
    }
    twins = {"run-aaaa": _cfg(), "run-bbbb": _cfg()}  # nothing differs: the id tells them apart
    assert compare.legend_names(twins) == {"run-aaaa": "aaaa", "run-bbbb": "bbbb"}
    many = {"a": _cfg(K=2, n=3, width=4, depth=2), "b": _cfg()}
    assert compare.legend_names(many)["a"] == "K=2, n=3, width=4, …"
    assert compare.unique({"x": "same", "y": "same", "z": "other"}) == {
        "x": "same", "y": "same (2)", "z": "other"}


# --------------------------------------------------------------------------- series
ROWS = [
    {"step": 0, "loss": 0.5, "grad_norm": 2.0, "nc1": [1.0, 2.0, 3.0, 4.0], "time": 0.0,
     "sv": [[3.0, 1.0, 2.0, 0.5], [1.0, 1.0, 1.0], [0.1]]},
    {"step": 10, "loss": 0.25, "nc1": [0.5, 1.0, 1.5, None], "epoch": 1.0, "lr": 0.2},
    {"step": 20, "loss": float("nan"), "grad_norm": 1.0, "note": "text"},
]


def test_metric_series_has_scalars_and_per_layer_values_by_layer() -> None:
    s = compare.metric_series(ROWS, K=3)
    assert s["loss"] == ([0, 10, 20], [0.5, 0.25, None])  # a NaN is a gap
    assert s["grad_norm"] == ([0, 20], [2.0, 1.0])  # a row without it: no point
    assert s["nc1[1]"] == ([0, 10], [1.0, 0.5]) and s["nc1[4]"] == ([0, 10], [4.0, None])
    assert s["sv_max[1]"] == ([0], [3.0]) and s["sv_min_top_k[1]"] == ([0], [1.0])
    assert s["sv_min_top_k[2]"] == ([0], [1.0]) and "sv_min_top_k[3]" not in s  # < K values
    assert "epoch" not in s and "step" not in s and "note" not in s
    keys = compare.available({"r": s})
    assert keys[:3] == ["loss", "grad_norm", "lr"]
    assert keys.index("nc1[4]") < keys.index("sv_max[1]")
    assert compare.describe("nc1[2]") == "nc1[2] · NC1 of H_l (l = L+1: the output)"
    assert compare.title("nc1[2]") == "NC1 of H_l (l = L+1: the output), l = 2"
    assert compare.split_key("hessian_top1[12]") == ("hessian_top1", 12)


def _series_json() -> dict:
    def layer(l: int, top: list[float], ratio: float) -> dict:
        return {"layer": l, "top": top, "next": 0.01, "outlier_ratio": ratio, "outlier_count": 4,
                "alignment_f_mean": 0.9, "subspace_capture_mean": 0.8,
                "gradient_inside_fraction": 0.99, "effective_rank": 2.1,
                "hessian_effective_rank": 5.0, "nc1": 0.1, "nc2": 0.2, "nc3": 0.3}
    return {"run": "r", "steps": [100, 200], "K": 2, "depth": 2, "theory": {}, "entries": [
        {"step": 100, "loss": 0.3, "layers": [layer(1, [4.0, 3.0, 2.0, 1.0], 4.0),
                                               layer(2, [2.0, 2.0], None)], "full_top": []},
        {"step": 200, "loss": 0.2, "layers": [layer(1, [2.0, 2.0, 2.0, 1.0], 2.0),
                                               layer(2, [1.0, 1.0, 1.0, 1.0], 1.0)],
         "full_top": [5.0, 4.0, 4.0, 3.0]},
    ]}


def test_analysed_series_per_layer_and_full() -> None:
    s = compare.analysed_series(_series_json())
    assert s["hessian_top1[1]"] == ([100, 200], [4.0, 2.0])
    assert s["hessian_topK2[1]"] == ([100, 200], [1.0, 1.0])
    assert s["hessian_topK2[2]"] == ([100, 200], [None, 1.0])  # only 2 of K² = 4 values
    assert s["outlier_ratio[2]"] == ([100, 200], [None, 1.0])
    assert s["gradient_inside_fraction[1]"] == ([100, 200], [0.99, 0.99])
    assert s["full_top1"] == ([200], [5.0]) and s["full_topK2"] == ([200], [3.0])
    assert not any(k.startswith(("nc1", "loss")) for k in s)  # those come from the metrics
    assert compare.analysed_series(None) == {}
    damaged = {"K": 2, "entries": [3, {"step": "x"}, {"step": 5, "layers": [None, {"layer": 1,
               "top": 7, "outlier_ratio": "1"}, {"layer": True, "top": [1.0]}], "full_top": 2}]}
    assert compare.analysed_series(damaged) == {}  # nothing readable, and no exception
    assert compare.analysed_series([1, 2]) == {}
    run = compare.RunData("r", _cfg(K=2), "finished", ROWS, _series_json())
    both = compare.run_series(run)
    assert "loss" in both and "hessian_top1[2]" in both
    assert compare.needs_series(run, [100, 200]) is False
    assert compare.needs_series(run, [100, 200, 300]) is True
    assert compare.needs_series(compare.RunData("q", {}, "finished"), []) is False


# --------------------------------------------------------------------------- references
def test_references_of_a_linear_mse_run_are_its_closed_forms() -> None:
    cfg = _cfg(lam_w=0.01, lam_h=0.01)
    pred = theory.predict(3, 10, (0.01, 0.01, 0.01), 0.01)
    assert compare.reference(cfg, "loss") == pytest.approx(pred.loss, rel=1e-12)
    assert compare.reference(cfg, "fit") + compare.reference(cfg, "reg") == pytest.approx(
        pred.loss, rel=1e-12)
    assert compare.reference(cfg, "gamma_measured") == pytest.approx(pred.gamma, rel=1e-12)
    assert compare.reference(cfg, "hessian_top1[2]") == pytest.approx(
        0.01 * pred.gamma / pred.one_minus_gamma, rel=1e-9)  # λ_W γ/(1−γ)
    assert compare.reference(cfg, "sv_max[3]") == pytest.approx(pred.sigma[2])
    assert compare.reference(cfg, "hessian_top1[4]") is None  # no such layer
    assert compare.reference(cfg, "outlier_ratio[1]") == 1.0
    assert compare.reference(cfg, "effective_rank[1]") == 3.0
    assert compare.reference(cfg, "grad_norm") is None and compare.reference(cfg, "nc1[1]") is None
    assert compare.reference({}, "loss") is None  # an unreadable config: not the defaults'


@pytest.mark.parametrize("changes", [{"activation": "relu"}, {"loss": "ce"}, {"lam_h": 0.0},
                                     {"K": "x"}])
def test_no_reference_where_the_theory_does_not_apply(changes: dict) -> None:
    cfg = _cfg(**changes)
    assert compare.reference(cfg, "loss") is None
    assert compare.reference(cfg, "gamma_measured") is None
    assert compare.reference(cfg, "outlier_ratio[1]") is None


# --------------------------------------------------------------------------- seed groups
def test_seed_groups_join_runs_equal_but_for_seed_and_name() -> None:
    configs = {"a": _cfg(seed=1, name="x"), "b": _cfg(lam_w=0.02, seed=1), "c": _cfg(seed=2),
               "d": _cfg(lam_w=0.02, seed=5), "e": _cfg(lr=0.1, seed=1)}
    groups = compare.seed_groups(configs)
    assert groups == [["a", "c"], ["b", "d"], ["e"]]
    assert compare.group_names(configs, groups) == [
        "lam_w=0.01, lr=0.2 · 2 seeds", "lam_w=0.02, lr=0.2 · 2 seeds", "lam_w=0.01, lr=0.1"]
    assert compare.group_names({"a": _cfg(seed=1), "b": _cfg(seed=2)}, [["a", "b"]]) == [
        "2 seeds"]


def test_band_with_known_numbers() -> None:
    curves = [([0, 10, 20], [1.0, 2.0, 6.0]), ([0, 10, 20, 30], [3.0, None, 2.0, 9.0]),
              ([0, 10, 20], [5.0, 4.0, 1.0])]
    b = compare.band(curves, "min–max")
    assert b.steps == [0, 10, 20] and b.runs == 3  # step 30: not every run logged it
    assert b.mean == [3.0, 3.0, 3.0]  # step 10: the missing value is left out
    assert b.lower == [1.0, 2.0, 1.0] and b.upper == [5.0, 4.0, 6.0]
    s = compare.band(curves, "±1 std")
    sd0 = math.sqrt(8 / 3)  # population std of 1, 3, 5
    assert s.lower[0] == pytest.approx(3 - sd0) and s.upper[0] == pytest.approx(3 + sd0)
    assert s.upper[1] == pytest.approx(4.0)  # std of 2 and 4 is 1
    with pytest.raises(ValueError, match="spread"):
        compare.band(curves, "iqr")


def test_build_lines_grouped_and_not() -> None:
    def run(rid: str, seed: int, lam: float, losses: list[float]) -> compare.RunData:
        rows = [{"step": s, "loss": v} for s, v in zip((0, 10), losses, strict=True)]
        return compare.RunData(rid, _cfg(seed=seed, lam_w=lam), "finished", rows)

    runs = {"r1": run("r1", 1, 0.01, [1.0, 0.4]), "r2": run("r2", 2, 0.01, [3.0, 0.2]),
            "r3": run("r3", 1, 0.02, [2.0, 0.5]),
            "r4": compare.RunData("r4", _cfg(seed=9), "failed", [{"step": 0, "fit": 1.0}])}
    lines, missing = compare.build_lines(runs, "loss", grouped=False)
    assert missing == ["r4"] and [ln.name for ln in lines] == [
        "lam_w=0.01, seed=1", "lam_w=0.01, seed=2", "lam_w=0.02, seed=1"]
    assert lines[0].reference == pytest.approx(theory.predict(3, 10, (0.01,) * 3, 0.01).loss)
    lines, _ = compare.build_lines(runs, "loss", grouped=True, members=True)
    mean = lines[0]  # r1, r2 and r4 share a config but r4 lacks the loss
    assert mean.name == "lam_w=0.01 · 3 seeds, mean" and mean.band_name.endswith(", min–max")
    assert list(mean.values) == [2.0, pytest.approx(0.3)]
    assert list(mean.lower) == [1.0, 0.2] and list(mean.upper) == [3.0, 0.4]
    assert [m[0] for m in mean.members] == ["lam_w=0.01, seed=1", "lam_w=0.01, seed=2"]
    assert lines[1].name == "lam_w=0.02, seed=1" and lines[1].lower is None
    ref = repr(lines[0].reference)
    assert compare.lines_csv(lines, "loss").splitlines() == [
        "curve,step,loss,lower,upper,reference",
        f'"lam_w=0.01 · 3 seeds, mean",0,2.0,1.0,3.0,{ref}',
        f'"lam_w=0.01 · 3 seeds, mean",10,{(0.4 + 0.2) / 2!r},0.2,0.4,{ref}',
        f'"lam_w=0.01, seed=1",0,1.0,,,{ref}',
        f'"lam_w=0.01, seed=1",10,0.4,,,{ref}',
        f'"lam_w=0.01, seed=2",0,3.0,,,{ref}',
        f'"lam_w=0.01, seed=2",10,0.2,,,{ref}',
        f'"lam_w=0.02, seed=1",0,2.0,,,{lines[1].reference!r}',
        f'"lam_w=0.02, seed=1",10,0.5,,,{lines[1].reference!r}',
    ]


# --------------------------------------------------------------------------- the figure
def test_figure_draws_bands_members_and_references() -> None:
    lines = [
        figures.CompareLine("g, mean", [0, 10], [2.0, 1.0], [1.0, 0.5], [3.0, 1.5],
                            [("a", [0, 10], [1.0, 0.5])], reference=0.25, band_name="g, min–max"),
        figures.CompareLine("h", [0, 10, 20], [4.0, 0.0, 1.0], reference=0.25),
    ]
    fig = figures.compare_curves(lines, "Loss", "loss", log_x=True, log_y=True)
    names = [t.name for t in fig.data]
    assert names == [None, "g, min–max", "a", "g, mean", "h", "closed form 0.25"]
    assert fig.data[1].fill == "tonexty" and fig.data[2].showlegend is False
    assert list(fig.data[3].x) == [0.5, 10]  # step 0 on a log axis
    assert list(fig.data[4].y) == [4.0, None, 1.0]  # zero is a gap on a log axis
    assert fig.data[5].line.dash == "dash" and list(fig.data[5].x) == [0.5, 20]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    two = [figures.CompareLine("a", [0, 1], [1.0, 1.0], reference=0.1),
           figures.CompareLine("b", [0, 1], [1.0, 1.0], reference=0.2),
           figures.CompareLine("c", [0, 1], [1.0, 1.0])]
    fig = figures.compare_curves(two, "Loss", "loss")
    refs = [t for t in fig.data if t.line.dash == "dash"]
    assert [t.name for t in refs] == ["closed form 0.1 · a", "closed form 0.2 · b"]
    assert refs[0].line.color == figures.COLORS[0] and refs[1].line.color == figures.COLORS[1]
