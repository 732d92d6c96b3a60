"""The sharpness chart of the live view (ui/figures/training.py ``sharpness_curves``): the
curve, the dashed stability limit, the edge-of-stability markers and note, the closed form."""

from __future__ import annotations

from ui.figures.training import LIMIT_STYLE, sharpness_curves
from ui.live import sharpness_note


def _rows(values: list[float], limit: float = 2.0) -> list[dict]:
    return [{"step": 10 * i, "sharpness": v, "sharpness_limit": limit,
             "edge_of_stability": v >= limit} for i, v in enumerate(values)]


def test_sharpness_chart_draws_the_limit_the_flag_and_the_closed_form() -> None:
    rows = _rows([0.5, 1.5, 2.1, 1.99, 2.2])
    rows.insert(1, {"step": 5, "loss": 1.0})  # a row without sharpness is left out
    fig = sharpness_curves(rows, predicted=1.7)
    curve, marks = fig.data
    assert list(curve.y) == [0.5, 1.5, 2.1, 1.99, 2.2]
    assert list(marks.y) == [2.1, 2.2] and marks.mode == "markers"
    lines = {round(s.y0, 6): s.line.dash for s in fig.layout.shapes}
    assert lines == {2.0: LIMIT_STYLE["dash"], 1.7: "dash"}
    texts = [a.text for a in fig.layout.annotations]
    assert "2/η = 2" in texts and "closed form at the optimum 1.7" in texts
    assert "reached 2/η at step 20" in texts


def test_sharpness_chart_without_flag_or_prediction() -> None:
    fig = sharpness_curves(_rows([0.5, 0.7]), limit_label="(2+2β)/η")
    assert len(fig.data) == 1
    assert [a.text for a in fig.layout.annotations] == ["(2+2β)/η = 2"]


def test_sharpness_note_names_the_first_flagged_step() -> None:
    assert sharpness_note(_rows([0.5, 1.0]), "2/η") == ""
    note = sharpness_note(_rows([0.5, 2.5, 1.0, 2.0]), "2/η")
    assert note.startswith("Edge of stability: the sharpness reached 2/η = 2 at step 10 (2.5)")
    assert "2 of 4 logged steps" in note
    # a hand-edited row flagged without a number is not counted (and does not break the note)
    assert sharpness_note([{"step": 1, "edge_of_stability": True, "sharpness": None}], "2/η") == ""
