"""A run's figure bundle (ui/bundle.py): one zip with every figure of the run's pages as SVG (and
PNG), each figure's data as CSV, the tidy metrics.csv and config.json; offered on a finished
run's view of the Train page."""

from __future__ import annotations

import io
import json
import struct
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from dufm_core.store import Run
from tests.dashboard.conftest import run_page
from ui import bundle
from ui.figures import export

MISSING = export.image_engine_missing()


def _run(root: Path) -> Run:
    return Run(next(p for p in root.iterdir() if p.is_dir()))


def _zip(data: bytes) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(data))


def _no_images(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "image_engine_missing", lambda: "no kaleido in this test")


def test_bundle_holds_every_figures_data_metrics_and_config(
    finished_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_images(monkeypatch)
    run = _run(finished_runs)
    names = [n for n, _ in bundle.run_figures(run)]
    # the pages' figures: training curves, and per layer spectrum, alignment and gradient views
    for must in ("loss", "nc1_per_layer", "singular_values_w3", "top_eigenvalues_layer1",
                 "alignment_f_layer2", "gradient_C_layer3", "gradient_I_over_K_layer3"):
        assert must in names
    seen: list[float] = []
    z = _zip(bundle.build_bundle(run, progress=lambda m, f: seen.append(f)))
    top = f"{run.id}-figures/"
    members = set(z.namelist())
    assert {top + "config.json", top + "metrics.csv", top + "README.txt"} <= members
    assert {f"{top}data/{n}.csv" for n in names} <= members
    assert not any(m.startswith(top + "figures/") for m in members)  # no image engine
    assert json.loads(z.read(top + "config.json"))["K"] == 3
    metrics = pd.read_csv(io.BytesIO(z.read(top + "metrics.csv")))
    assert {"step", "loss", "nc1_l1", "nc1_l4", "sv_l1_1"} <= set(metrics.columns)
    loss = pd.read_csv(io.BytesIO(z.read(top + "data/loss.csv")))
    assert list(loss.columns) == ["trace", "type", "x", "y"] and len(loss) > 10
    heat = pd.read_csv(io.BytesIO(z.read(top + "data/gradient_I_over_K_layer1.csv")))
    assert list(heat.columns) == ["trace", "type", "x", "y", "z"] and len(heat) == 9
    assert sorted(heat.z.round(6).unique()) == [0.0, round(1 / 3, 6)]  # I/K for K = 3
    readme = z.read(top + "README.txt").decode()
    assert "no kaleido in this test" in readme and "top_eigenvalues_layer1: Top eigen" in readme
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


@pytest.mark.skipif(MISSING is not None, reason=f"no image export here: {MISSING}")
def test_bundle_images_are_svg_and_print_png(
    finished_runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(finished_runs)
    two = bundle.run_figures(run)[:1]  # one figure: the drawing is what is tested here
    monkeypatch.setattr(bundle, "run_figures", lambda run, progress=None: two)
    z = _zip(bundle.build_bundle(run, png=True))
    top = f"{run.id}-figures/figures/"
    name, fig = two[0]
    svg = ET.fromstring(z.read(f"{top}{name}.svg"))
    assert fig.layout.title.text in "".join(svg.itertext())
    png = z.read(f"{top}{name}.png")
    assert struct.unpack(">II", png[16:24]) == (2100, 3 * fig.layout.height)


def test_a_finished_run_on_train_offers_its_bundle(
    dash_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_images(monkeypatch)
    run = _run(dash_env)
    at = run_page("train", run=run.id)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.get("download_button") or all(
        "bundle" not in b.proto.label for b in at.get("download_button"))
    at.button(key=f"bundle_{run.id}_make").click().run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [b.proto.label for b in at.get("download_button")]
    assert "⬇ Download figure bundle (.zip)" in labels


@pytest.mark.parametrize("page", ["collapse", "spectrum", "alignment", "gradients"])
def test_a_finished_runs_analysis_pages_offer_its_bundle(
    page: str, dash_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_images(monkeypatch)
    run = _run(dash_env)
    at = run_page(page, run=run.id)
    assert not at.exception, [e.value for e in at.exception]
    assert "Figure bundle" in [h.value for h in at.subheader]
    at.button(key=f"bundle_{run.id}_make").click().run()
    assert not at.exception, [e.value for e in at.exception]
    get = [b for b in at.get("download_button") if "bundle" in b.proto.label]
    assert [b.proto.label for b in get] == ["⬇ Download figure bundle (.zip)"]
