"""ui/figures as a whole: one module per topic, each builder reachable from the package, and the
engine free of dashboard code (issue #11: the dashboard side holds its own code)."""

from __future__ import annotations

import subprocess
import sys

import plotly.graph_objects as go

import ui.figures
from tests.helpers import ROOT


def test_importing_the_engine_loads_no_plotly() -> None:
    """No dufm_core module imports plotly, streamlit, ui or pages (tests/test_architecture.py,
    DASHBOARD_ONLY), and importing the engine and its CLI loads neither library."""
    from tests.test_architecture import DASHBOARD_ONLY

    assert {"plotly", "streamlit"} <= DASHBOARD_ONLY
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, dufm_core, dufm_core.cli, dufm_core.config; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & {'plotly', 'streamlit'}))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.strip()
    assert loaded == "[]"


def test_every_builder_is_in_a_topic_module_and_in_the_package() -> None:
    topics = {p.stem for p in (ROOT / "ui" / "figures").glob("*.py")} - {"__init__"}
    assert topics - {"export"} == {
        "common", "training", "collapse", "spectra", "alignment", "sweeps", "theory", "compare",
        "landscape", "tracking",
    }  # export: a figure as files (SVG, PNG, CSV), not a builder
    builders = [getattr(ui.figures, n) for n in ui.figures.__all__ if not n.isupper()]
    assert all(b.__module__.split(".")[-1] in topics for b in builders)
    for path in (ROOT / "ui" / "figures").glob("*.py"):
        assert len(path.read_text().splitlines()) < 600, path.name


def test_builders_return_labelled_figures() -> None:
    fig = ui.figures.bars([1.0, 2.0], "Bars", "value", reference=1.5, reference_label="ref")
    assert isinstance(fig, go.Figure)
    assert (fig.layout.title.text, fig.layout.yaxis.title.text) == ("Bars", "value")
    assert fig.layout.template.layout.paper_bgcolor == "white"
    assert ui.figures.CONFIG["displaylogo"] is False
