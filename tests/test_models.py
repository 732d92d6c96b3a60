"""DeepUFM: the forward contract, per-layer features, and the closed-form optimum."""

from __future__ import annotations

import pytest
import torch

from dufm_core import theory
from dufm_core.config import RunConfig
from dufm_core.models import DeepUFM, build_model, fit_term, optimum_factors


def _total_loss(model: DeepUFM, cfg: RunConfig) -> torch.Tensor:
    return fit_term(model(), model.labels, cfg.loss) + model.reg_term(cfg.lam_ws, cfg.lam_h)


def test_forward_contract_shapes() -> None:
    cfg = RunConfig(K=4, n=3, width=[7, 6, 5], depth=3, activation="relu")
    cfg.validate()
    model = build_model(cfg)
    idx = torch.tensor([0, 5, 11])
    out = model(idx)
    assert out.shape == (3, 4)
    assert model.features.shape == (7, 12)
    assert [tuple(w.shape) for w in model.weights] == [(6, 7), (5, 6), (4, 5)]
    # forward on a subset equals the rows of the full forward
    assert torch.allclose(out, model()[idx])
    feats = model.layer_features()
    assert [h.shape[0] for h in feats.pre] == [7, 6, 5, 4]
    assert torch.equal(feats.post[1], torch.relu(feats.pre[1]))
    assert torch.equal(feats.post[0], feats.pre[0])  # no activation on H_1
    assert torch.allclose(feats.pre[-1].T, model())
    assert torch.equal(model.labels, torch.arange(4).repeat_interleave(3))


def test_relu_model_matches_manual_forward() -> None:
    cfg = RunConfig(K=3, n=2, width=4, depth=3, activation="relu", seed=3)
    cfg.validate()
    m = build_model(cfg)
    W1, W2, W3 = (w.detach() for w in m.weights)
    H = m.features.detach()
    manual = W3 @ torch.relu(W2 @ torch.relu(W1 @ H))
    assert torch.allclose(m().T, manual)


def test_seeded_init_is_reproducible_and_scaled() -> None:
    cfg = RunConfig(K=3, n=200, width=400, depth=2, seed=5)
    cfg.validate()
    a, b = build_model(cfg), build_model(cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    # N(0, 1/d): entries of W_1 (fan-in 400) have variance ~1/400
    assert float(a.weights[0].detach().var()) == pytest.approx(1 / 400, rel=0.05)


@pytest.mark.parametrize(
    ("K", "n", "width", "depth", "lam_w", "lam_h"),
    [
        (3, 40, 6, 5, 0.01, 0.01),  # case A (small d: values do not depend on d)
        (4, 10, 16, 4, 1e-3, 1e-3),  # case B
        (4, 10, 5, 1, 5e-3, 5e-3),  # case C (L = 1)
        (3, 4, 6, 3, [0.01, 0.02, 0.005], 0.01),  # case E (unequal λ)
        (3, 4, [5, 7, 4], 3, 0.01, 0.02),  # per-layer widths
    ],
)
def test_constructed_optimum_is_stationary_with_closed_form_loss(
    K, n, width, depth, lam_w, lam_h
) -> None:
    cfg = RunConfig(K=K, n=n, width=width, depth=depth, lam_w=lam_w, lam_h=lam_h, init="optimum")
    cfg.validate()
    model = build_model(cfg)
    loss = _total_loss(model, cfg)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    gnorm = float(torch.sqrt(sum(g.square().sum() for g in grads)))
    assert gnorm <= 1e-12
    pred = theory.predict(K, n, cfg.lam_ws, cfg.lam_h)
    assert float(loss.detach()) == pytest.approx(pred.loss, rel=1e-12)
    fit = fit_term(model(), model.labels, "mse")
    assert float(fit) == pytest.approx(pred.fit, rel=1e-10)
    # output is γ Y and singular values are σ_l
    assert torch.allclose(model().T, pred.gamma * model.targets(), atol=1e-13)
    for W, sig in zip(model.weights, pred.sigma, strict=True):
        s = torch.linalg.svdvals(W.detach())
        assert torch.allclose(s[:K], torch.full((K,), sig, dtype=s.dtype), rtol=1e-12)
        assert all(float(x) < 1e-12 for x in s[K:])


def test_relu_optimum_is_stationary_and_linear() -> None:
    cfg = RunConfig(
        K=3, n=4, width=7, depth=4, activation="relu", init="optimum", lam_w=0.01, lam_h=0.01
    )
    cfg.validate()
    model = build_model(cfg)
    feats = model.layer_features()
    for h in feats.pre[1:-1]:
        assert float(h.min()) >= 0.0  # every ReLU acts as the identity, zeros exact
    loss = _total_loss(model, cfg)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert float(torch.sqrt(sum(g.square().sum() for g in grads))) <= 1e-12
    assert float(loss) == pytest.approx(theory.predict(3, 4, [0.01] * 4, 0.01).loss, rel=1e-12)


def test_ce_optimum_is_stationary_dnc_point() -> None:
    cfg = RunConfig(K=3, n=10, width=6, depth=2, loss="ce", init="optimum", lam_w=1e-3, lam_h=1e-3)
    cfg.validate()
    model = build_model(cfg)
    loss = _total_loss(model, cfg)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert float(torch.sqrt(sum(g.square().sum() for g in grads))) <= 1e-10
    alpha = theory.ce_optimal_alpha(3, 10, 2, 1e-3)
    expect = alpha * (torch.eye(3, dtype=torch.float64) - 1 / 3)
    assert torch.allclose(model().T[:, ::10], expect, atol=1e-12)
    assert float(loss) == pytest.approx(theory.ce_loss(3, 10, 2, 1e-3, alpha), rel=1e-10)


def test_optimum_with_noise_and_above_critical() -> None:
    cfg = RunConfig(K=3, n=4, width=5, depth=2, init="optimum", init_noise=1e-3)
    cfg.validate()
    clean = RunConfig(K=3, n=4, width=5, depth=2, init="optimum")
    clean.validate()
    a, b = build_model(cfg), build_model(clean)
    diff = float((a.features - b.features).abs().max())
    assert 1e-5 < diff < 1e-2
    big = RunConfig(K=3, n=40, width=5, depth=5, lam_w=0.05, lam_h=0.05, init="optimum")
    assert big.validate()  # warns: above λ_crit
    H1, Ws = optimum_factors(big, torch.Generator().manual_seed(0))
    assert float(H1.abs().max()) == 0.0 and all(float(w.abs().max()) == 0.0 for w in Ws)
