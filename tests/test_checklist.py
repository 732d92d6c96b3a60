"""The reproduction checklist (dufm_core/checklist.py): each claim's measure passes on a
converged model and fails on a report that breaks it; predictions are theory's; the CLI's exit
code says whether every claim passes."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pytest

from dufm_core import checklist, kinds, reports, theory
from dufm_core.checklist import CLAIMS, PAPER_CASE_A_LOSS, Claim, run_config
from dufm_core.cli import main
from dufm_core.config import RunConfig
from dufm_core.presets import PRESETS
from dufm_core.report_types import Report
from dufm_core.store import create_run, find_run
from tests.checklist_helpers import TINY_RUNS, train_tiny_runs, use_tiny_runs

BY_ID = {c.id: c for c in CLAIMS}
LINEAR = [c for c in CLAIMS if c.run == "paper-linear"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both tiny runs trained and analysed once (the linear one with its full Hessian)."""
    root = tmp_path_factory.mktemp("checklist") / "runs"
    ids = train_tiny_runs(root)
    with pytest.MonkeyPatch.context() as mp:
        use_tiny_runs(mp)
        cfgs = {k: checklist.run_config(k) for k in TINY_RUNS}
    lin = find_run(ids["paper-linear"], root)
    relu = find_run(ids["paper-relu"], root)
    assert lin is not None and relu is not None
    return {"root": root, "ids": ids, "cfg": cfgs,
            "linear": reports.analyze(lin, full=True).to_json(),
            "relu": reports.analyze(relu).to_json()}


def _measure(claim: Claim, data: dict, cfg: RunConfig) -> checklist.Outcome:
    return claim.measure(Report.from_json(copy.deepcopy(data)), cfg)


# --------------------------------------------------------------------------- the runs, the paper
def test_paper_loss_is_theorys_case_a_loss() -> None:
    pred = theory.predict(3, 40, 0.01, 0.01, L=5)
    assert abs(PAPER_CASE_A_LOSS - pred.loss) <= 5e-11  # stated to 10 decimals
    cfg = run_config("paper-linear")
    assert (cfg.K, cfg.n, cfg.depth, cfg.lam_ws, cfg.lam_h) == (3, 40, 5, [0.01] * 5, 0.01)


def test_run_configs_are_the_presets_named() -> None:
    lin = run_config("paper-linear").to_dict()
    assert lin == RunConfig.from_dict({**PRESETS["paper-linear"],
                                       "name": "checklist-paper-linear"}).to_dict()
    relu = run_config("paper-relu").to_dict()
    preset = RunConfig.from_dict(PRESETS["paper-relu"]).to_dict()
    assert relu["steps"] == 10_000 < preset["steps"]  # the documented shorter variant
    assert {k: v for k, v in relu.items() if k not in ("steps", "name")} == \
        {k: v for k, v in preset.items() if k not in ("steps", "name")}
    assert {c.run for c in CLAIMS} == set(checklist.RUNS)


# --------------------------------------------------------------------------- measures pass
@pytest.mark.parametrize("claim_id", [c.id for c in LINEAR])
def test_linear_claims_pass_on_a_converged_model(tiny: dict, claim_id: str) -> None:
    out = _measure(BY_ID[claim_id], tiny["linear"], tiny["cfg"]["paper-linear"])
    assert out.ok, (claim_id, out)


def test_predictions_are_theorys(tiny: dict) -> None:
    cfg = tiny["cfg"]["paper-linear"]
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    data = tiny["linear"]
    assert _measure(BY_ID["loss"], data, cfg).predicted == pred.loss
    assert _measure(BY_ID["gn-ranks"], data, cfg).predicted_text == " / ".join(
        map(str, (0, cfg.K * (cfg.K - 1), cfg.K)))
    full = _measure(BY_ID["full-hessian"], data, cfg).predicted_text
    hi, lo = max(pred.full_outliers), min(pred.full_outliers)  # K(K−1)/2 above, K(K+1)/2 below
    assert full == f"{cfg.K * (cfg.K - 1) // 2} × {hi:.10g}, {cfg.K * (cfg.K + 1) // 2} × {lo:.10g}"
    assert f"{pred.sigma[0]:.8g}" in _measure(BY_ID["sigma"], data, cfg).predicted_text
    relu_cfg = tiny["cfg"]["paper-relu"]
    dnc = theory.relu_layer_eigenvalues(relu_cfg.K, relu_cfg.n, relu_cfg.lam_ws, relu_cfg.lam_h, 0)
    assert _measure(BY_ID["relu-unequal"], tiny["relu"], relu_cfg).predicted == \
        pytest.approx(dnc[3][0] / dnc[3][relu_cfg.K - 1]) == 1.0


def test_relu_claim_passes_on_relu_and_fails_on_the_linear_optimum(tiny: dict) -> None:
    claim = BY_ID["relu-unequal"]
    out = _measure(claim, tiny["relu"], tiny["cfg"]["paper-relu"])
    assert out.ok and out.measured > 1 + checklist.RELU_UNEQUAL and out.layer == 4
    # the converged linear model has equal outliers: "unequal" must fail there
    lin_cfg = tiny["cfg"]["paper-linear"]
    out = _measure(claim, tiny["linear"], lin_cfg)
    assert not out.ok and out.measured == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- measures fail
def _broken(data: dict, claim_id: str) -> tuple[dict, int | None]:
    """A copy of the converged report with the claim's quantity broken (at layer 2)."""
    d = copy.deepcopy(data)
    lay = d["layers"][1]
    if claim_id == "loss":
        d["loss"]["total"] *= 1 + 1e-4
    elif claim_id == "outlier-ratio":
        lay["outlier_ratio"] = 1.001
    elif claim_id == "alignment":
        lay["alignment_f"][0][1] = 0.999
    elif claim_id == "gradient":
        lay["gradient_coefficients"][0][1] = 1e-3
    elif claim_id == "gn-ranks":
        lay["gn_split"]["ranks"] = [1, *lay["gn_split"]["ranks"][1:]]
    elif claim_id == "full-hessian":
        d["full_hessian"]["top"][0] *= 1 + 1e-4
        return d, None
    elif claim_id == "sigma":
        lay["weight_singular_values"][0] *= 1 + 1e-4
    return d, 2


@pytest.mark.parametrize("claim_id", [c.id for c in LINEAR])
def test_linear_claims_fail_when_broken(tiny: dict, claim_id: str) -> None:
    data, layer = _broken(tiny["linear"], claim_id)
    out = _measure(BY_ID[claim_id], data, tiny["cfg"]["paper-linear"])
    assert not out.ok, claim_id
    if layer is not None and claim_id != "loss":
        assert out.layer == layer  # the link opens on the layer that broke it


def test_full_split_counts_must_match(tiny: dict) -> None:
    """Right values, wrong multiplicities (all K² at the upper value) fail; so does a report
    without the full Hessian."""
    cfg = tiny["cfg"]["paper-linear"]
    d = copy.deepcopy(tiny["linear"])
    top = d["full_hessian"]["top"]
    d["full_hessian"]["top"] = [max(top)] * cfg.K ** 2 + top[cfg.K ** 2:]
    assert not _measure(BY_ID["full-hessian"], d, cfg).ok
    del d["full_hessian"]
    out = _measure(BY_ID["full-hessian"], d, cfg)
    assert not out.ok and "no full Hessian" in out.detail


def test_missing_ratio_is_a_failure(tiny: dict) -> None:
    """A null outlier_ratio (rank < K²) is reported as the worst layer and fails."""
    d = copy.deepcopy(tiny["linear"])
    d["layers"][2]["outlier_ratio"] = None
    out = _measure(BY_ID["outlier-ratio"], d, tiny["cfg"]["paper-linear"])
    assert not out.ok and out.layer == 3 and math.isinf(out.measured)


# --------------------------------------------------------------------------- finding runs
def test_find_runs_newest_matching_finished(tmp_path: Path, tiny: dict,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_runs(monkeypatch)
    root = tiny["root"]
    states = checklist.find_runs(root)
    assert {k: s.finished.id for k, s in states.items()} == tiny["ids"]
    assert all(s.active is None for s in states.values())
    # a run of another config with the same name is ignored; a queued one of the checklist's
    # config is "training"
    other = tmp_path / "runs"
    cfg = checklist.run_config("paper-linear")
    create_run(RunConfig.from_dict({**cfg.to_dict(), "steps": 7}), other)
    queued = create_run(cfg, other)
    states = checklist.find_runs(other)
    assert states["paper-linear"].active.id == queued.id
    assert states["paper-linear"].finished is None
    assert checklist.missing(states) == ["paper-relu"]


def test_launch_missing_queues_only_the_missing(tiny: dict, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_runs(monkeypatch)
    launched: list[RunConfig] = []

    def fake_launch(cfg: RunConfig, runs_dir: Path):
        launched.append(cfg)
        return create_run(cfg, runs_dir)

    assert checklist.launch_missing(tiny["root"], launch=fake_launch) == []
    runs = checklist.launch_missing(tmp_path / "r", launch=fake_launch)
    assert [c.name for c in launched] == [checklist.run_config(k).name for k in TINY_RUNS]
    assert len(runs) == 2
    assert checklist.launch_missing(tmp_path / "r", launch=fake_launch) == []  # now queued


def test_evaluate_rows(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_tiny_runs(monkeypatch)
    rows = checklist.evaluate(tiny["root"])
    assert [r.state for r in rows] == ["pass"] * len(rows)
    row = next(r for r in rows if r.claim.id == "relu-unequal")
    assert row.run_id == tiny["ids"]["paper-relu"]
    assert row.query() == {"run": row.run_id, "step": str(row.step), "layer": "4"}
    empty = checklist.evaluate(tmp_path / "none")
    assert {r.state for r in empty} == {"not run yet"}
    table = checklist.format_table(rows)
    assert "8 of 8 claims pass" in table and "FAIL" not in table


# --------------------------------------------------------------------------- CLI
def test_cli_exit_codes(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture) -> None:
    use_tiny_runs(monkeypatch)
    assert main(["checklist", "--runs-dir", str(tiny["root"])]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == len(CLAIMS) and "claims pass" in out
    assert main(["checklist", "--runs-dir", str(tmp_path / "empty")]) == 1
    assert "not run yet" in capsys.readouterr().out
    # a claim that fails: the linear run's cached report with a wrong loss
    broken = tmp_path / "broken"
    shutil.copytree(tiny["root"], broken)
    lin = find_run(tiny["ids"]["paper-linear"], broken)
    path = lin.report_path(lin.checkpoints()[-1])
    data = json.loads(path.read_text())
    data["loss"]["total"] += 1e-3
    path.write_text(json.dumps(data))
    assert main(["checklist", "--runs-dir", str(broken)]) == 1
    assert "FAIL" in capsys.readouterr().out
    (tmp_path / "file").write_text("x")
    assert main(["checklist", "--runs-dir", str(tmp_path / "file")]) == 2


def test_cli_train_trains_the_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    """--train trains what is missing (here: only the ReLU run), then every claim passes."""
    use_tiny_runs(monkeypatch)
    root = tmp_path / "runs"
    kinds.train(checklist.run_config("paper-linear"), runs_dir=root, progress=None)
    assert main(["checklist", "--runs-dir", str(root), "--train"]) == 0
    assert "training checklist run paper-relu" in capsys.readouterr().err
    assert len(list(root.iterdir())) == 2


def test_ended_run_is_named_and_analysis_errors_are_rows(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed checklist run leaves its rows "not run yet" with the reason; a run whose
    analysis raises gives "error" rows for its claims only."""
    use_tiny_runs(monkeypatch)
    root = tmp_path / "runs"
    failed = create_run(checklist.run_config("paper-linear"), root)
    failed.write_status(state="failed", error="out of patience")
    rows = checklist.evaluate(root)
    lin = [r for r in rows if r.claim.run == "paper-linear"]
    assert {r.state for r in lin} == {"not run yet"}
    assert all(failed.id in r.message and "out of patience" in r.message for r in lin)
    done = create_run(checklist.run_config("paper-relu"), root)
    done.write_status(state="finished")
    done.checkpoint_path(5).write_bytes(b"")  # a checkpoint file that nothing can load

    def broken(run, full=False):
        raise RuntimeError("no such tensor")

    rows = checklist.evaluate(root, analyze=broken)
    relu = next(r for r in rows if r.claim.run == "paper-relu")
    assert relu.state == "error" and "RuntimeError: no such tensor" in relu.message
    assert "ERROR" in checklist.format_table(rows)
