"""predict_for: which closed forms apply to a run and with which λ (UFM: its own config;
ResNet-20: λ_H/N), and that the report's theory block and the pages' references agree with it."""

from __future__ import annotations

import pytest

from dufm_core import analysis, kinds, theory
from dufm_core.config import RunConfig
from ui.live import ufm_loss_reference


@pytest.mark.parametrize("d", [
    {}, {"activation": "relu", "K": 4, "n": 5}, {"lam_w": [1e-3, 2e-3, 5e-4], "lam_h": 3e-3},
    {"model": "resnet20", "n": 3}, {"model": "resnet20", "n": 7, "lam_h": 3e-3},
])
def test_closed_forms_apply_at_the_kinds_lambda(d) -> None:
    cfg = RunConfig.from_dict(d)
    t = kinds.predict_for(cfg)
    assert t.closed_form and t.cfg.model == "ufm"
    assert t.lam_h == cfg.ufm_lam_h  # λ_H for a UFM, λ_H/N for a real network
    assert t.lam_h == (cfg.lam_h if cfg.model == "ufm" else cfg.lam_h / cfg.N)
    pred = t.prediction()
    assert pred.to_dict() == theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.ufm_lam_h).to_dict()
    assert t.gamma() == theory.gamma(cfg.K, cfg.n, cfg.lam_ws, cfg.ufm_lam_h)
    assert ufm_loss_reference(cfg) == pred.loss
    # the report's theory block is made from the same config
    assert analysis.predictions(t.cfg)["gamma"] == pytest.approx(pred.gamma, rel=0, abs=0)


@pytest.mark.parametrize("d", [{"loss": "ce"}, {"lam_h": 0.0}, {"model": "resnet20", "n": 3,
                                                                 "loss": "ce"}])
def test_no_closed_form_for_ce_or_non_positive_lambda(d) -> None:
    t = kinds.predict_for(RunConfig.from_dict(d))
    assert not t.closed_form and t.prediction() is None and t.gamma() is None
    assert ufm_loss_reference(RunConfig.from_dict(d)) is None
    assert analysis.predictions(t.cfg)["gamma"] is None


def test_backbone_weight_decay_has_no_ufm_loss() -> None:
    cfg = RunConfig.from_dict({"model": "resnet20", "n": 3, "lam_backbone": 1e-4})
    assert kinds.predict_for(cfg).closed_form and ufm_loss_reference(cfg) is None
