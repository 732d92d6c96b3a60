"""A figure as files for a paper (ui/figures/export.py): the SVG is valid XML holding the
figure's title, the PNG has the print size asked for, the CSV holds the traces' data; the
download row of ui/charts.py offers all three without rendering anything while a page draws."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from ui import figures
from ui.figures import export

MISSING = export.image_engine_missing()
needs_images = pytest.mark.skipif(
    MISSING is not None, reason=f"no image export here: {MISSING} (CI installs kaleido)"
)


def _bars():
    return figures.bars([1.0, 2.5, 4.0], "Principal angles of layer 2", "degrees")


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])  # the IHDR chunk: width, height


def test_file_stem_is_a_safe_name() -> None:
    assert export.file_stem("Layer-2 spectrum (γ)") == "layer-2_spectrum"
    assert export.file_stem("top_1_layer") == "top_1_layer"
    assert export.file_stem("../../etc/passwd") == "etc_passwd"
    assert export.file_stem("γ") == "figure"


def test_camera_button_saves_a_print_png_named_after_the_figure() -> None:
    fig = _bars()
    opts = export.chart_config("Angles, layer 2", fig)["toImageButtonOptions"]
    assert opts == {"format": "png", "filename": "angles_layer_2", "width": 700,
                    "height": fig.layout.height, "scale": 3}  # fmt: skip
    assert opts["width"] * opts["scale"] >= 300 * 7  # 300 dpi across 7 inches


def test_csv_holds_each_trace_point() -> None:
    fig = figures.series_lines([0, 10, 20], {"a": [1.0, 2.0, 3.0], "b": [4.0, None, 6.0]},
                               "Two lines", "value")  # fmt: skip
    frame = pd.read_csv(io.BytesIO(export.to_csv(fig)))
    assert list(frame.columns) == ["trace", "type", "x", "y"]
    a = frame[frame.trace == "a"]
    assert a.x.tolist() == [0, 10, 20] and a.y.tolist() == [1.0, 2.0, 3.0]
    b = frame[frame.trace == "b"]
    assert b.y.isna().tolist() == [False, True, False]


def test_csv_of_a_heatmap_is_one_row_per_cell() -> None:
    fig = figures.heatmap([[0.1, 0.2], [0.3, 0.4]], "C", ["c'=1", "c'=2"], ["c=1", "c=2"])
    frame = pd.read_csv(io.BytesIO(export.to_csv(fig)))
    assert list(frame.columns) == ["trace", "type", "x", "y", "z"]
    cell = frame[(frame.x == "c'=2") & (frame.y == "c=1")]
    assert cell.z.tolist() == [0.2] and len(frame) == 4


def test_csv_of_a_page_table_is_that_table() -> None:
    table = pd.DataFrame({"step": [1, 2], "gamma": [0.5, 0.9]})
    assert export.to_csv(_bars(), table).decode().splitlines() == ["step,gamma", "1,0.5", "2,0.9"]


def test_missing_kaleido_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None)
    reason = export.image_engine_missing()
    assert reason is not None and "kaleido" in reason and "\n" not in reason
    with pytest.raises(export.ExportError, match="kaleido"):
        export.to_svg(_bars())


@needs_images
def test_svg_and_png_at_print_size() -> None:
    fig = _bars()
    svg, png = export.render_images([fig, fig], ["svg", "png"])
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    text = "".join(root.itertext())
    assert "Principal angles of layer 2" in text
    assert _png_size(png) == (700 * 3, fig.layout.height * 3)


def _page_with_two_charts() -> None:
    import streamlit as st

    from ui import charts, figures

    fig = figures.bars([1.0, 2.0], "Angles", "degrees")
    c1, c2 = st.columns(2)
    charts.show(c1, fig, "Angles layer 1", key="ang_1")
    charts.show(c2, fig, "Angles layer 2")


def test_every_chart_gets_svg_png_csv_buttons() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_page_with_two_charts, default_timeout=30).run()
    assert not at.exception
    buttons = at.get("download_button")
    labels = [b.proto.label for b in buttons]
    assert labels == ["⬇ SVG", "PNG", "CSV"] * 2
    assert [b.proto.id.split("-")[-1] for b in buttons[:3]] == ["ang_1_svg", "ang_1_png",
                                                                 "ang_1_csv"]  # fmt: skip
    disabled = [b.proto.disabled for b in buttons]
    assert disabled == ([MISSING is not None] * 2 + [False]) * 2  # CSV works without kaleido


def test_missing_browser_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "_browser_found", lambda: False)
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: object())  # kaleido
    reason = export.image_engine_missing()
    assert reason is not None and "Chromium" in reason and "\n" not in reason
    with pytest.raises(export.ExportError, match="Chromium"):
        export.render_images([_bars()], ["png"])
