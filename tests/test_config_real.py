"""RunConfig.ufm_lam_h: the λ_H that a real network is compared with in the closed forms
(λ_H/N: the run penalises the mean feature norm, docs/real_networks.md §3)."""

from __future__ import annotations

import pytest

from dufm_core import theory
from dufm_core.config import RunConfig


def test_ufm_lam_h_is_lam_h_for_a_ufm_and_lam_h_over_N_for_a_real_network() -> None:
    assert RunConfig(lam_h=0.03).ufm_lam_h == 0.03
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 50, "lam_h": 1e-6})
    assert cfg.N == 500
    assert cfg.ufm_lam_h == pytest.approx(1e-6 / 500)


def test_real_network_threshold_warning_uses_lam_h_over_N() -> None:
    # λ_W = 0.01, λ_H = 1 at K = 10, n = 2, L = 3: above the critical value for a UFM with
    # λ_H = 1, but below it with the real network's λ_H/N = 1/20
    lam_w, lam_h = 0.01, 1.0
    assert not theory.is_nontrivial(10, 2, [lam_w] * 3, lam_h)
    assert theory.is_nontrivial(10, 2, [lam_w] * 3, lam_h / 20)
    ufm = RunConfig(K=10, n=2, width=64, depth=3, lam_w=lam_w, lam_h=lam_h)
    assert any("critical value" in w for w in ufm.validate())
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 2, "lam_w": lam_w, "lam_h": lam_h})
    assert cfg.validate() == []
    big = RunConfig.from_dict({"model": "resnet20", "n": 2, "lam_w": lam_w, "lam_h": 20 * lam_h})
    (warning,) = big.validate()
    assert "critical value" in warning and "λ_H/N = 1, N = 20" in warning
