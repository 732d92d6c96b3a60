"""ui/figures/sweeps.py and theory.py: the studies of a sweep's table, the closed-form figures."""

from __future__ import annotations

from ui.figures import sweeps, theory
from ui.figures.common import COLORS


def _rows() -> list[dict]:
    return [
        {"member": f"m{i}", "K": 3, "n": 4, "depth": 2 + i % 2, "lam_over_crit": 0.5 * (i + 1),
         "gamma_measured": 0.5 - 0.1 * i, "gamma_diag": [0.4, 0.6], "outlier_count_max": 9,
         "outlier_count_min": 8, "width": 2 ** (i + 1), "gamma_predicted": 0.4,
         "activation": "linear", "loss": "mse", "lam": 10.0 ** -i, "f_mean": 0.9,
         "nc1_max": 1e-3}
        for i in range(4)
    ]


def test_phase_gamma_groups_by_K_n_depth() -> None:
    curves = [{"x": [0.1, 1.0, 10.0], "gamma": [0.5, 0.5, 0.0], "K": 3, "n": 4, "L": 2}]
    fig = sweeps.sweep_phase_gamma(_rows(), curves)
    names = [t.name for t in fig.data]
    assert names[0] == "closed form K=3 n=4 L=2"
    assert "γ measured (K=3, n=4, depth=2)" in names and "per class (K=3, n=4, depth=3)" in names
    assert fig.layout.xaxis.type == "log"
    assert fig.layout.annotations[0].text == "λ_crit"


def test_width_and_sensitivity_studies() -> None:
    gamma, outliers = sweeps.sweep_width_figures(_rows(), K=3)
    assert [t.name for t in gamma.data] == ["measured", "closed form"]
    assert outliers.layout.annotations[-1].text == "K²"
    panels = sweeps.sweep_sensitivity_figures(_rows(), "lam")
    assert len(panels) == 4
    assert [t.name for t in panels[0].data] == ["model=linear/mse"]  # no closed form
    assert panels[0].data[0].marker.color == COLORS[0]
    assert panels[3].layout.yaxis.type == "log"


def test_gamma_vs_lambda_marks_lambda_crit() -> None:
    fig = theory.gamma_vs_lambda([1e-3, 1e-2], [0.9, 0.8], lambda_crit=5e-3, current=1e-3)
    assert [a.text for a in fig.layout.annotations] == ["λ_crit", "λ"]
    assert fig.layout.xaxis.type == "log"
