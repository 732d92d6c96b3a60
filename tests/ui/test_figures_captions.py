"""Issue #13 item 4 in the figures: predicted values that nearly coincide get one label, not
three overprinted ones; a measured heatmap and its prediction share one colour scale."""

from __future__ import annotations

import itertools
import math

import numpy as np

from ui.figures import alignment, spectra


def _labels(fig) -> list[tuple[float, float, str]]:
    return [(a.x, a.y, a.text) for a in fig.layout.annotations if a.text.startswith("pred")]


def test_close_predictions_share_one_label() -> None:
    """CE's three DNC-point values (a factor ~2 apart) on a 17-decade axis: three dashed lines,
    one label naming all three."""
    hist = {"edges": [-16.0, -8.0, 0.0, 1.0], "positive": [3, 0, 9], "negative": [0, 0, 0]}
    preds = [0.12, 0.061, 0.061, 0.03, 0.0]
    fig = spectra.binned_histogram(hist, predicted=preds)
    assert len(fig.layout.shapes) == 3  # one line per distinct positive value
    labels = _labels(fig)
    assert len(labels) == 1
    assert all(f"{v:.4g}" in labels[0][2] for v in (0.12, 0.061, 0.03))


def test_far_predictions_get_separate_labels_that_do_not_collide() -> None:
    hist = {"edges": [-6.0, -3.0, 0.0, 3.0], "positive": [1, 2, 3], "negative": [0, 0, 0]}
    fig = spectra.binned_histogram(hist, predicted=[1e-5, 1.0, 1e2])
    labels = sorted(_labels(fig))
    assert len(labels) == 3
    gap = spectra.PRED_LABEL_GAP * 9.0
    for (x0, y0, _), (x1, y1, _) in itertools.pairwise(labels):
        assert x1 - x0 >= gap or y0 != y1  # far enough apart, or at different heights


def test_neighbouring_labels_alternate_heights() -> None:
    fig = spectra.spectrum_histogram(
        np.array([1e-3, 1.0, 2.0, 10.0]), predicted=[1.0, 10 ** 0.9]
    )
    labels = sorted(_labels(fig))
    span = math.log10(10.0) - math.log10(1e-3)
    assert labels[1][0] - labels[0][0] >= spectra.PRED_LABEL_GAP * span  # two groups
    assert labels[0][1] != labels[1][1]  # close groups: staggered


def test_pred_label_groups() -> None:
    assert spectra.pred_label_groups([0.0, 0.1, 5.0, 5.05, 10.0], span=10.0) == [
        [0, 1], [2, 3], [4]]  # fmt: skip
    assert spectra.pred_label_groups([3.0], span=0.0) == [[0]]


def test_shared_scale_non_negative_and_signed() -> None:
    C = np.array([[0.9, 0.01], [0.0, 0.05]])
    identity = np.eye(2) / 2
    scale = alignment.shared_scale(C, identity)
    assert scale == {"diverging": False, "zmin": 0.0, "zmax": 0.9}
    a = alignment.heatmap(C, "C", **scale).data[0]
    b = alignment.heatmap(identity, "I/K", **scale).data[0]
    assert (a.zmin, a.zmax) == (b.zmin, b.zmax) == (0.0, 0.9)
    signed = alignment.shared_scale(np.array([[-0.2, 0.1]]), identity)
    assert signed == {"diverging": True, "zmin": -0.5, "zmax": 0.5}
    a = alignment.heatmap(np.array([[-0.2, 0.1]]), "C", **signed).data[0]
    b = alignment.heatmap(identity, "I/K", **signed).data[0]
    assert (a.zmin, a.zmax, a.zmid) == (b.zmin, b.zmax, b.zmid) == (-0.5, 0.5, 0.0)
