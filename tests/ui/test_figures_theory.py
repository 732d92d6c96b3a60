"""ui/figures/theory.py: γ against λ with the chosen setting on the curve, and predicted spectra
as stems with their multiplicities written on them."""

from __future__ import annotations

import math

import pytest

from dufm_core import theory
from ui.figures.theory import gamma_vs_lambda, multiplicity_label, predicted_spectrum

CASE_A = {"K": 3, "n": 40, "L": 5, "lam": 1e-2, "d": 60}  # docs/theory.md case A


def _trace(fig, name: str):
    return next(t for t in fig.data if t.name == name)


def test_gamma_point_sits_on_the_curve_with_its_label() -> None:
    fig = gamma_vs_lambda([1e-4, 1e-3, 1e-2], [0.99, 0.95, 0.8], lambda_crit=2e-2,
                          current=1e-3, current_gamma=0.95, current_label="λ_eq = 0.001",
                          x_range=(1e-5, 1e-1))  # fmt: skip
    point = _trace(fig, "this setting")
    assert (list(point.x), list(point.y)) == ([1e-3], [0.95])
    assert [a.text for a in fig.layout.annotations] == ["λ_crit", "λ_eq = 0.001"]
    assert fig.layout.annotations[1].y == 0.95  # the label points at the point, not the axis
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.range) == [-5.0, -1.0]
    assert fig.layout.xaxis.dtick == 1
    assert fig.layout.template.layout.paper_bgcolor == "white"  # the dashboard's white look


def test_gamma_without_a_current_gamma_draws_only_the_line() -> None:
    fig = gamma_vs_lambda([1e-3, 1e-2], [0.9, 0.8], lambda_crit=None, current=1e-3)
    assert [t.name for t in fig.data] == ["γ(λ), every λ equal"]
    assert [a.text for a in fig.layout.annotations] == ["λ"]


@pytest.mark.parametrize(
    ("m", "K", "text"),
    [(9, 3, "K² = 9"), (3, 3, "K(K−1)/2 = 3"), (6, 3, "K(K+1)/2 = 6"), (7, 3, "×7"),
     (9, None, "×9"), (13167, 3, "×13 167")],
)  # fmt: skip
def test_multiplicity_labels(m: int, K: int | None, text: str) -> None:
    assert multiplicity_label(m, K) == text


def test_layer_spectrum_stem_and_zeros_apart() -> None:
    K, n, L, lam, d = CASE_A.values()
    groups = theory.layer_hessian_spectrum(K, n, [lam] * L, lam, 3, width_in=d, width_out=d)
    outlier = theory.predict(K, n, [lam] * L, lam).layer_outlier[2]
    fig = predicted_spectrum(groups, "layer", K, marks=[(outlier, "λ_W γ/(1−γ)")])
    up = _trace(fig, "eigenvalue > 0 (up)")
    assert list(up.x) == [pytest.approx(outlier)]
    assert up.text[0].startswith("K² = 9<br>λ_W γ/(1−γ) = 0.1632")
    assert up.xaxis == "x2" and fig.layout.xaxis2.type == "log"
    zero = _trace(fig, "eigenvalue 0")
    assert (list(zero.x), list(zero.text)) == (["0"], [f"×{d * d - K * K:,}".replace(",", " ")])
    assert zero.xaxis in (None, "x") and fig.layout.xaxis.type == "category"
    # the zero axis sits left of the log axis
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]


def test_full_spectrum_outliers_split_by_rho_and_negative_stems_point_down() -> None:
    K, n, L, lam, d = CASE_A.values()
    pred = theory.predict(K, n, [lam] * L, lam)
    groups = theory.hessian_spectrum(K, n, [lam] * L, lam, widths=[d] * L)
    marks = [(pred.full_outliers[0], "GN + ρ"), (pred.full_outliers[-1], "GN − ρ")]
    fig = predicted_spectrum(groups, "full", K, marks=marks)
    up, down = _trace(fig, "eigenvalue > 0 (up)"), _trace(fig, "eigenvalue < 0 (down)")
    labels = dict(zip(up.text, up.y, strict=True))
    plus = next(t for t in labels if t.startswith("K(K−1)/2 = 3<br>GN + ρ = 0.8562"))
    minus = next(t for t in labels if t.startswith("K(K+1)/2 = 6<br>GN − ρ = 0.7762"))
    assert labels[plus] != labels[minus]  # close stems: labels at different heights
    assert all(y < 0 for y in down.y) and all(y > 0 for y in up.y)
    assert any("×" in t for t in up.text)  # the bulk at λ is not named in terms of K
    # every non-zero value is inside the log axis; the multiplicities add up to the dimension
    lo, hi = fig.layout.xaxis2.range
    assert all(lo < math.log10(abs(v)) < hi for v, _ in groups if v != 0)
    drawn = [m for t in (up, down) for _, m in t.customdata]
    zeros = int(_trace(fig, "eigenvalue 0").text[0][1:].replace(" ", ""))
    assert sum(drawn) + zeros == sum(m for _, m in groups) == L * d * d - d * d + K * d


def test_spectrum_without_zeros_uses_the_whole_width() -> None:
    fig = predicted_spectrum([(2.0, 4), (1.0, 5)], "no zeros", x_range=(0.1, 10.0))
    assert [t.name for t in fig.data if t.name] == ["eigenvalue > 0 (up)"]
    assert list(fig.layout.xaxis2.domain) == [0.0, 1.0]
    assert list(fig.layout.xaxis2.range) == [-1.0, 1.0]
    assert list(fig.data[1].text) == ["×4<br>2", "×5<br>1"]  # no marks: no K forms
