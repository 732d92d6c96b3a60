"""The dashboard with real-network runs (issue #5): the Train page's model and data choices, the
accuracy and loss figures of the live view and the Collapse page, the Runs table's columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core import RunConfig, theory
from dufm_core.config import MODEL_DEFAULTS
from dufm_core.presets import PRESETS
from tests.dashboard.conftest import run_page

PRE = "paper-linear_resnet20_"  # widget keys after switching the default preset to resnet20


_run = run_page


def _resnet20(at: AppTest) -> AppTest:
    at.selectbox(key="paper-linear_model").set_value("resnet20").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def _real_id(root: Path) -> str:
    return next(p.name for p in root.iterdir() if "-real-" in p.name)


def test_switching_to_resnet20_applies_its_defaults(dash_env: Path) -> None:
    at = _resnet20(_run("train"))
    d = MODEL_DEFAULTS["resnet20"]
    assert at.title[0].value == "Train a real network"
    assert at.number_input(key=PRE + "K").value == d["K"] == 10
    assert at.text_input(key=PRE + "width").value == str(d["width"]) == "64"
    assert at.number_input(key=PRE + "depth").value == d["depth"] == 3
    assert float(at.text_input(key=PRE + "lam_w").value) == d["lam_w"]
    assert float(at.text_input(key=PRE + "lam_h").value) == d["lam_h"]
    assert at.selectbox(key=PRE + "optimizer").value == "momentum"
    assert float(at.text_input(key=PRE + "lr").value) == d["lr"]
    assert at.selectbox(key=PRE + "dtype").value == "float32"
    # the real-network fields, at the RunConfig defaults
    assert at.selectbox(key=PRE + "dataset").value == "digits"
    assert at.text_input(key=PRE + "data_dir").disabled  # not needed for digits
    assert at.number_input(key=PRE + "batch_size").value == 0
    assert at.selectbox(key=PRE + "lr_schedule").value == "constant"
    assert not at.checkbox(key=PRE + "amp").value
    # valid: no error, Launch enabled, and the UFM prediction at λ_H/N
    assert not at.error
    assert not at.button[0].disabled
    n = at.number_input(key=PRE + "n").value
    N = 10 * n
    assert any(f"λ_H/N = 1e-06/{N}" in c.value for c in at.caption)
    pred = theory.predict(10, n, [d["lam_w"]] * 3, d["lam_h"] / N)
    assert at.metric[0].value == f"{pred.gamma:.8f}"
    # and back to the UFM: the preset's values again
    at.selectbox(key="paper-linear_model").set_value("ufm").run()
    assert at.title[0].value == "Train a deep UFM"
    assert at.number_input(key="paper-linear_K").value == PRESETS["paper-linear"]["K"]


def test_resnet20_refuses_K_other_than_10(dash_env: Path) -> None:
    at = _resnet20(_run("train"))
    at.number_input(key=PRE + "K").set_value(3).run()
    assert [e.value for e in at.error] == [
        "K: must be 10 for dataset digits (its number of classes) (got 3)"
    ]
    assert at.button[0].disabled


def test_resnet20_checks_n_and_width_in_the_page(dash_env: Path) -> None:
    at = _resnet20(_run("train"))
    at.number_input(key=PRE + "n").set_value(500).run()
    assert at.error[0].value.startswith("n: must be at most 139 for dataset digits")
    assert at.button[0].disabled
    at.number_input(key=PRE + "n").set_value(5).run()
    at.text_input(key=PRE + "width").set_value("32").run()
    assert at.error[0].value.startswith("width: must start with d_1 = 64")
    at.text_input(key=PRE + "width").set_value("64,128,128").run()
    assert not at.error and not at.button[0].disabled


def test_resnet20_data_folder_errors_disable_launch(dash_env: Path, tmp_path: Path) -> None:
    at = _resnet20(_run("train"))
    at.selectbox(key=PRE + "dataset").set_value("mnist").run()
    assert at.error[0].value.startswith("data_dir: must name the folder")
    assert "nothing is downloaded" in at.error[0].value
    at.text_input(key=PRE + "data_dir").set_value(str(tmp_path)).run()
    assert at.error[0].value.startswith("data_dir: mnist: train-images-idx3-ubyte[.gz] not found")
    assert at.button[0].disabled
    at.selectbox(key=PRE + "dataset").set_value("cifar10").run()
    assert at.error[0].value.startswith("data_dir: cifar10: data_batch_1 not found")


def test_resnet20_amp_is_refused_without_a_gpu(dash_env: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: amp is allowed")
    at = _resnet20(_run("train"))
    at.checkbox(key=PRE + "amp").check().run()
    assert at.error[0].value.startswith("amp: needs a CUDA GPU")


def test_resnet20_preset(dash_env: Path) -> None:
    at = _run("train")
    at.selectbox(key="preset").set_value("resnet20-digits").run()
    assert not at.exception
    assert at.selectbox(key="resnet20-digits_model").value == "resnet20"
    key = "resnet20-digits_resnet20_"
    assert at.number_input(key=key + "n").value == PRESETS["resnet20-digits"]["n"]
    assert at.number_input(key=key + "steps").value == PRESETS["resnet20-digits"]["steps"]
    assert not at.error and not at.button[0].disabled
    cfg = RunConfig.from_dict(PRESETS["resnet20-digits"])
    assert cfg.validate() == []
    assert (cfg.K, cfg.width, cfg.depth, cfg.loss, cfg.lam_w, cfg.lam_h) == (
        10,
        64,
        3,
        "mse",
        5e-3,
        1e-6,
    )


def test_live_view_of_a_real_run_shows_accuracy(real_env: Path) -> None:
    at = _run("train", run=_real_id(real_env))
    assert not at.exception, [e.value for e in at.exception]
    titles = _titles(at)
    assert "Accuracy (eval mode)" in titles
    assert any(t.startswith("Loss: whole training set (eval) and batch") for t in titles)
    acc = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "Accuracy" in json.loads(c.proto.spec)["layout"]["title"]["text"]
    )
    assert [d["name"] for d in acc["data"]] == ["train", "test"]
    assert "epoch" in acc["data"][0]["hovertemplate"]
    progress = at.get("progress")[0].proto.text
    assert "train acc" in progress and "test acc" in progress


def test_live_view_of_a_ufm_run_is_unchanged(real_env: Path) -> None:
    ufm = next(p.name for p in real_env.iterdir() if "-real-" not in p.name)
    at = _run("train", run=ufm)
    assert not at.exception
    assert _titles(at) == ["Loss (closed form dashed)", "NC1 = tr(Σ_W Σ_B^†)/K per layer"]
    assert "train acc" not in at.get("progress")[0].proto.text


def test_collapse_page_of_a_real_run(real_env: Path) -> None:
    at = _run("collapse", run=_real_id(real_env), layer="2")
    assert not at.exception, [e.value for e in at.exception]
    titles = _titles(at)
    assert titles[0] == "Accuracy (eval mode)"
    assert titles[1].startswith("Loss: whole training set")
    assert len(titles) >= 8  # + the six collapse and weight figures


def test_collapse_page_of_a_ufm_run_has_no_accuracy(real_env: Path) -> None:
    ufm = next(p.name for p in real_env.iterdir() if "-real-" not in p.name)
    at = _run("collapse", run=ufm, layer="2")
    assert not at.exception
    assert not any("Accuracy" in t for t in _titles(at))


def test_runs_table_columns(real_env: Path) -> None:
    at = _run("runs")
    assert not at.exception
    df = at.dataframe[0].value.set_index("run")
    real, ufm = (
        _real_id(real_env),
        next(p.name for p in real_env.iterdir() if "-real-" not in p.name),
    )
    assert {"model", "dataset", "train_acc", "test_acc"} <= set(df.columns)
    assert df.loc[real, "model"] == "resnet20" and df.loc[real, "dataset"] == "digits"
    assert 0 <= df.loc[real, "train_acc"] <= 1 and 0 <= df.loc[real, "test_acc"] <= 1
    assert df.loc[ufm, "model"] == "ufm"
    assert df[["dataset", "train_acc", "test_acc"]].loc[ufm].isna().all()


def test_runs_table_of_a_ufm_store_has_no_real_columns(dash_env: Path) -> None:
    at = _run("runs")
    assert not {"dataset", "train_acc", "test_acc"} & set(at.dataframe[0].value.columns)


@pytest.mark.parametrize("page", ["spectrum", "alignment", "gradients", "collapse", "inspect"])
def test_analysis_pages_work_on_a_real_network_run(real_env: Path, page: str) -> None:
    """Every analysis page accepts a resnet20 run: its report is on the head layers."""
    at = _run(page, run=_real_id(real_env), layer="2")
    assert not at.exception, [e.value for e in at.exception]
    if page != "inspect":
        assert at.get("plotly_chart"), page


def test_real_vs_ufm_page(real_env: Path) -> None:
    at = _run("real_vs_ufm", run=_real_id(real_env))
    assert not at.exception, [e.value for e in at.exception]
    titles = _titles(at)
    assert any("measured top eigenvalues vs the UFM" in t for t in titles)
    table = at.dataframe[0].value
    assert len(table) == 3 and table["UFM outliers"].tolist() == [100, 100, 100]
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    preds = [t for t in fig["data"] if "UFM prediction" in t["name"]]
    report = json.loads(next((real_env / _real_id(real_env) / "analysis").glob("step_*.json"))
                        .read_text())
    assert preds[0]["y"][0] == pytest.approx(report["theory"]["layer_outlier"][0])
    assert "λ_H,UFM = λ_H/N" in at.caption[0].value


def test_real_vs_ufm_page_explains_itself_on_a_ufm_run(dash_env: Path) -> None:
    at = _run("real_vs_ufm")
    assert not at.exception
    assert "real network" in at.info[0].value


def test_spectrum_page_keeps_a_cached_whole_network_hessian(real_env: Path) -> None:
    """A full Hessian over every parameter (``analyze --full-params all``, costly) in a cached
    report is shown, never replaced by the page's default head Hessian."""
    from dufm_core import reports
    from dufm_core.report_types import FullHessian
    from dufm_core.store import atomic_write_json, open_run, read_json

    run = open_run(real_env / _real_id(real_env))
    step = run.checkpoints()[-1]
    report = reports.analyze(run, step)
    report.full_hessian = FullHessian(
        params="all", dim=277616, top=[5.0, 4.0, 3.0], predicted=[], method="test", seconds=1.0,
        converged=True, note="marker-all-parameters", density=None,
    )
    atomic_write_json(reports.report_path(run, step), report.to_json())
    at = _run("spectrum", run=run.id, step=str(step))
    at.radio[0].set_value("full (all head weights)").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("marker-all-parameters" in c.value for c in at.caption)
    after = read_json(reports.report_path(run, step))
    assert after["full_hessian"]["params"] == "all"


def test_an_uploaded_resnet20_checkpoint_gets_the_real_network_report(real_env: Path) -> None:
    """Inspect's upload path goes through the checkpoint's model kind: a resnet20 file gets the
    report on its head layers with the network block (it used to get the UFM analysis, which
    cannot run a RealNetwork)."""
    from ui import analysis_view as av

    run_dir = real_env / _real_id(real_env)
    ckpt = sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1]
    report = av.report_of_file("mine.pt", ckpt.read_bytes())
    assert report.config["model"] == "resnet20" and report.run == "mine.pt"
    assert report.network.N == 30 and report.network.bn_mode
    assert len(report.layers) == report.config["depth"]
    assert report.full_hessian.params == "head"  # the page asks for the full Hessian
    from dufm_core import reports
    from dufm_core.store import open_run

    own = reports.analyze(open_run(run_dir), int(ckpt.stem.split("_")[1]))
    assert report.layers[0].hessian_top == pytest.approx(
        own.layers[0].hessian_top, rel=1e-9
    )  # the same report as the run's own analysis of that checkpoint


def test_a_broken_upload_is_named_by_its_file_name(real_env: Path) -> None:
    from dufm_core.checkpoints import CheckpointError
    from ui import analysis_view as av

    ckpt = sorted((real_env / _real_id(real_env) / "checkpoints").glob("step_*.pt"))[-1]
    with pytest.raises(CheckpointError, match=r"^mine\.pt: not a readable PyTorch checkpoint"):
        av.report_of_file("mine.pt", ckpt.read_bytes()[:100])  # truncated
