"""The typed report: ``Report.from_json(d).to_json() == d`` (keys in the same order) for the
reports of a linear, a ReLU and a CE UFM (with and without the full Hessian) and of a tiny
ResNet-20 run; unknown keys survive; a report cached by another version is recomputed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dufm_core import reports
from dufm_core.config import RunConfig
from dufm_core.kinds import train
from dufm_core.report_types import (
    REPORT_VERSION,
    FullHessian,
    LayerRecord,
    NetworkBlock,
    Report,
    Theory,
)
from dufm_core.runtime import cpu_threads
from dufm_core.store import read_json


def _round_trip(data: dict) -> Report:
    rep = Report.from_json(data)
    out = rep.to_json()
    assert out == data
    assert json.dumps(out) == json.dumps(data)  # same key order: the same file text
    return rep


def _cached(run, step: int) -> dict:
    return read_json(reports.report_path(run, step))


UFM_CASES = {
    "linear": dict(K=3, n=4, width=6, depth=2, steps=60, checkpoint_points=2),
    "relu": dict(K=3, n=4, width=6, depth=3, steps=60, checkpoint_points=2, activation="relu"),
    "ce": dict(K=3, n=4, width=6, depth=2, steps=60, checkpoint_points=2, loss="ce",
               lam_w=1e-3, lam_h=1e-3),
}


@pytest.mark.parametrize("case", sorted(UFM_CASES))
def test_ufm_reports_round_trip(case: str, runs_dir: Path) -> None:
    run = train(RunConfig(**UFM_CASES[case]), runs_dir=runs_dir, progress=None).run
    step = run.checkpoints()[-1]
    made = reports.analyze(run, step)
    rep = _round_trip(_cached(run, step))
    assert run.cached_report(step) == made == rep  # the run store reads back what was made
    assert isinstance(rep.theory, Theory) and rep.full_hessian is None
    assert all(isinstance(lay, LayerRecord) for lay in rep.layers)
    assert rep.report_version == REPORT_VERSION and rep.current and rep.K == 3
    assert rep.layers[0].hessian_top == _cached(run, step)["layers"][0]["hessian_top"]
    reports.analyze(run, step, full=True)
    full = _round_trip(_cached(run, step))
    assert isinstance(full.full_hessian, FullHessian) and full.full_hessian.params == "weights"
    # the layers did not change when the full Hessian was added
    assert [lay.to_json() for lay in full.layers] == [lay.to_json() for lay in rep.layers]


def test_real_network_report_round_trips(runs_dir: Path) -> None:
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 3, "steps": 3, "log_points": 4,
                               "checkpoint_points": 2, "width": [64, 16, 16]})
    with cpu_threads(1):
        run = train(cfg, runs_dir=runs_dir, progress=None).run
        step = run.checkpoints()[-1]
        reports.analyze(run, step, full=True)
    rep = _round_trip(_cached(run, step))
    assert isinstance(rep.network, NetworkBlock) and rep.network.N == 30
    assert rep.ufm_config is not None and rep.full_hessian.params == "head"


def test_unknown_keys_survive_and_absent_keys_stay_absent() -> None:
    data = {"zz_new": 1, "report_version": REPORT_VERSION, "run": "r", "step": 3,
            "config": {"K": 2}, "theory": {"gamma": None, "future": [1, 2]},
            "loss": {"total": 1.0, "fit": 0.5, "reg": 0.5},
            "layers": [{"layer": 1, "nc1": 0.1, "new_key": {"a": 1}}]}
    rep = _round_trip(data)
    assert rep.extra == {"zz_new": 1} and rep.theory.extra == {"future": [1, 2]}
    assert rep.layers[0].get("new_key") == {"a": 1} and rep.layers[0].nc1 == 0.1
    assert "full_hessian" not in rep.to_json() and "hessian" not in rep.to_json()
    rep.full_hessian = FullHessian(params="weights", top=[2.0, 1.0])
    assert rep.to_json()["full_hessian"]["top"] == [2.0, 1.0]
    # built in code: every modelled key is written, optional blocks only when set
    built = Report(run="x", step=0, theory=Theory(), layers=[LayerRecord(layer=1)]).to_json()
    assert built["report_version"] == REPORT_VERSION and "network" not in built
    assert built["theory"]["gamma"] is None and built["layers"][0]["layer"] == 1


def test_report_of_another_version_is_recomputed(runs_dir: Path) -> None:
    run = train(RunConfig(**UFM_CASES["linear"]), runs_dir=runs_dir, progress=None).run
    step = run.checkpoints()[-1]
    reports.analyze(run, step)
    path = reports.report_path(run, step)
    old = read_json(path)
    old["report_version"] = REPORT_VERSION - 1
    old["layers"][0]["nc1"] = -1.0  # a value the recomputation must replace
    path.write_text(json.dumps(old))
    reports.analyze(run, step)
    new = read_json(path)
    assert new["report_version"] == REPORT_VERSION and new["layers"][0]["nc1"] != -1.0
    _round_trip(new)
