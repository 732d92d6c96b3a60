"""One list of figures per analysis page (ui/page_figures.py): each page shows the figures that
the run's figure bundle holds, under the same file names, titles and data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dufm_core import reports
from dufm_core.store import Run
from tests.dashboard.conftest import run_page, serve_runs
from ui import bundle
from ui.figures import export

LAYER2 = {
    "collapse": ["nc1_per_layer", "nc2_per_layer", "nc3_per_weight", "dnc1_frobenius",
                 "singular_values_w2", "singular_values_last_step"],
    "spectrum": ["spectrum_layer2", "top_eigenvalues_layer2",
                 "top_eigenvalues_layer2_over_training", "outlier_ratio_layer2_over_training"],
    "alignment": ["alignment_f_layer2", "subspace_capture_layer2",
                  "eigenvector_cosines_layer2", "principal_angles_layer2"],
    "gradients": ["gradient_C_layer2", "gradient_I_over_K_layer2", "gradient_eigenbasis_layer2"],
}


@pytest.fixture
def series_run(finished_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """A copy of the finished run with its series analysed (as the pages' "Analyse every
    checkpoint" does), served to the pages; the shared fixture run is left as it is."""
    src = next(p for p in finished_runs.iterdir() if p.is_dir())
    shutil.copytree(src, tmp_path / "runs" / src.name)
    serve_runs(tmp_path / "runs", monkeypatch)
    run = Run(tmp_path / "runs" / src.name)
    reports.analyze_series(run)
    return run


def _shown(page: str, run: Run, **query: str) -> dict[str, dict]:
    """{file stem: the figure's JSON} of every chart the page draws."""
    at = run_page(page, run=run.id, layer="2", **query)
    assert not at.exception, [e.value for e in at.exception]
    out = {}
    for chart in at.get("plotly_chart"):
        stem = json.loads(chart.proto.config)["toImageButtonOptions"]["filename"]
        out[stem] = json.loads(chart.proto.spec)
    return out


@pytest.mark.parametrize("page", sorted(LAYER2))
def test_a_page_shows_its_bundle_figures(page: str, series_run: Run) -> None:
    run = series_run
    made = dict(bundle.run_figures(run))
    shown = _shown(page, run)
    for name in LAYER2[page]:
        stem = export.file_stem(name)  # the page's download name (lower case)
        assert name in made and stem in shown, (name, sorted(shown))
        want = json.loads(made[name].to_json())
        assert shown[stem]["layout"]["title"] == want["layout"]["title"], name
        assert [t.get("y") for t in shown[stem]["data"]] == [t.get("y") for t in want["data"]]


def test_spectrum_shows_another_steps_histogram_beside_its_own(series_run: Run) -> None:
    """The "Histogram at step" view draws the same figures under names of their own (no
    duplicate widget keys)."""
    run = series_run
    at = run_page("spectrum", run=run.id, layer="2")
    first = run.checkpoints()[0]
    at.select_slider[0].set_value(first).run()
    assert not at.exception, [e.value for e in at.exception]
    stems = [json.loads(c.proto.config)["toImageButtonOptions"]["filename"]
             for c in at.get("plotly_chart")]
    assert f"top_eigenvalues_layer2_step{first}" in stems and "top_eigenvalues_layer2" in stems
