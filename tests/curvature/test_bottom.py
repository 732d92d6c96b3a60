"""Bottom eigenvalues, the minimum / saddle verdict and outlier attribution
(dufm_core.curvature.bottom, .attribution) against dense float64 Hessians and known answers."""

from __future__ import annotations

import pytest
import torch

from dufm_core.config import RunConfig
from dufm_core.curvature import HessianOperator
from dufm_core.curvature.attribution import attribution, clusters
from dufm_core.curvature.base import DenseOperator
from dufm_core.curvature.bottom import bottom_eigenvalues, verdict
from dufm_core.curvature.operators import gradient
from dufm_core.curvature.params import param_set
from dufm_core.models import build_model


def _model(activation: str = "linear", init: str = "optimum", depth: int = 3, lam: float = 0.01,
           seed: int = 0) -> tuple[torch.nn.Module, RunConfig]:
    cfg = RunConfig(K=3, n=4, width=6, depth=depth, activation=activation, init=init,
                    init_noise=0.0, seed=seed, lam_w=lam, lam_h=lam)
    cfg.validate()
    return build_model(cfg), cfg


def _verdict(model: torch.nn.Module, cfg: RunConfig, loss: str = "mse") -> tuple[str, dict]:
    op = HessianOperator(model, "weights", loss, "total", cfg.lam_ws, cfg.lam_h)
    lam_max = float(torch.linalg.eigvalsh(op.dense())[-1])
    bot = bottom_eigenvalues(op, 3, sigma=lam_max)
    g = gradient(model, "weights", loss, "total", cfg.lam_ws, cfg.lam_h)
    theta = param_set(model, "weights").vector(model).detach()
    return verdict(bot, lam_max, float(g.norm()), float(theta.norm()))


@pytest.mark.parametrize(("activation", "loss", "init"), [
    ("linear", "mse", "random"), ("relu", "mse", "random"), ("relu", "ce", "random"),
    ("linear", "mse", "optimum")])
def test_shifted_solve_matches_dense(activation: str, loss: str, init: str) -> None:
    model, cfg = _model(activation, init)
    for part in ("fit", "total"):
        op = HessianOperator(model, "weights", loss, part, cfg.lam_ws, cfg.lam_h)
        evals = torch.linalg.eigvalsh(op.dense())
        bot = bottom_eigenvalues(op, 4)  # σ found by the function itself
        assert bot.converged
        scale = float(evals.abs().max())
        assert float((bot.values - evals[:4]).abs().max()) < 1e-7 * scale, (bot.values, evals[:4])
        assert torch.all(bot.values[1:] >= bot.values[:-1])  # ascending
        free = bottom_eigenvalues(op, 4, spectrum=evals.flip(0))
        assert free.matvecs == 0 and torch.allclose(free.values, evals[:4])


def test_verdict_minimum_at_the_collapse_point() -> None:
    model, cfg = _model()
    v, d = _verdict(model, cfg)
    assert v == "minimum", d
    assert d["negative_directions"] == 0 and d["grad_norm"] <= d["grad_tol"]


def test_verdict_undetermined_away_from_a_critical_point() -> None:
    model, cfg = _model()
    with torch.no_grad():
        model.weights[0].add_(0.05 * torch.randn(model.weights[0].shape, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(1)))
    v, d = _verdict(model, cfg)
    assert v == "undetermined" and d["grad_norm"] > d["grad_tol"], d


def test_verdict_saddle_at_the_origin_of_a_two_layer_model() -> None:
    """W = 0 with the optimum's features is a critical point of the L = 2 model (the gradient is
    multilinear with a zero factor) and, below λ_crit, a saddle: the W_1–W_2 block −YH_1ᵀ/N
    outweighs λ."""
    model, cfg = _model(depth=2, lam=1e-3)
    with torch.no_grad():
        for W in model.weights:
            W.zero_()
    v, d = _verdict(model, cfg)
    assert v == "saddle", d
    assert d["lambda_min"] < -d["curv_tol"] and d["negative_directions"] >= 1


def test_verdict_undetermined_when_the_solve_failed() -> None:
    A = DenseOperator(torch.diag(torch.tensor([-1.0, 1.0, 2.0], dtype=torch.float64)))
    bot = bottom_eigenvalues(A, 2)
    bad = type(bot)(bot.values, bot.method, False, bot.matvecs, bot.residual_max)
    assert verdict(bot, 2.0, 0.0, 1.0)[0] == "saddle"
    assert verdict(bad, 2.0, 0.0, 1.0)[0] == "undetermined"


# --------------------------------------------------------------------------- attribution
def _block_diagonal() -> tuple[torch.Tensor, list[int]]:
    """Blocks of sizes 3 and 2; the value 5 is twice in block 0 and once in block 1."""
    A = torch.zeros(5, 5, dtype=torch.float64)
    A[:3, :3] = torch.diag(torch.tensor([5.0, 5.0, 1.0], dtype=torch.float64))
    A[3:, 3:] = torch.diag(torch.tensor([5.0, 2.0], dtype=torch.float64))
    return A, [3, 2]


def test_attribution_on_a_block_diagonal_operator() -> None:
    A, sizes = _block_diagonal()
    g = torch.Generator().manual_seed(0)
    # a random orthogonal change inside each block keeps the blocks and the answer
    R = torch.block_diag(*(torch.linalg.qr(torch.randn(k, k, dtype=torch.float64,
                                                       generator=g))[0] for k in sizes))
    vals, vecs = torch.linalg.eigh(R @ A @ R.T)
    vals, vecs = vals.flip(0), vecs.flip(1)
    recs = attribution(vals, vecs, sizes, dim=5)
    assert [r["multiplicity"] for r in recs] == [3, 1, 1]
    assert recs[0]["value"] == pytest.approx(5.0)
    assert recs[0]["layers"] == pytest.approx([2 / 3, 1 / 3], abs=1e-12)
    assert recs[1]["layers"] == pytest.approx([0.0, 1.0], abs=1e-12)  # the 2 lives in block 1
    assert recs[2]["layers"] == pytest.approx([1.0, 0.0], abs=1e-12)
    for r in recs:
        assert sum(r["layers"]) == pytest.approx(1.0, abs=1e-12) and r["complete"]


def test_attribution_does_not_depend_on_the_basis_of_a_cluster() -> None:
    A, sizes = _block_diagonal()
    vals, vecs = torch.linalg.eigh(A)
    vals, vecs = vals.flip(0), vecs.flip(1)
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(5)))[0]
    turned = vecs.clone()
    turned[:, :3] = vecs[:, :3] @ rot  # another orthonormal basis of the 5-eigenspace
    a, b = attribution(vals, vecs, sizes), attribution(vals, turned, sizes)
    assert a[0]["layers"] == pytest.approx(b[0]["layers"], abs=1e-12)
    # a single vector of the rotated basis would have given another split
    assert float((turned[:3, 0] ** 2).sum()) != pytest.approx(a[0]["layers"][0], abs=1e-3)


def test_attribution_of_the_full_hessian_at_the_optimum_is_one_over_L() -> None:
    """Common λ: the full Gauss–Newton outlier eigenvectors stack the layer ones with equal
    weights (docs/theory.md §4.5), so each of the L blocks holds 1/L of every outlier cluster."""
    model, _ = _model()
    op = HessianOperator(model, "weights", "mse")
    vals, vecs = torch.linalg.eigh(op.dense())
    vals, vecs = vals.flip(0), vecs.flip(1)
    recs = attribution(vals[:9], vecs[:, :9], op.pset.sizes, dim=op.dim)
    assert [r["multiplicity"] for r in recs] == [3, 6]  # antisymmetric / symmetric pairs
    for r in recs:
        assert r["layers"] == pytest.approx([1 / 3] * 3, abs=1e-8)
    # the cluster may go on past the values handed over
    assert attribution(vals[:2], vecs[:, :2], op.pset.sizes, dim=op.dim)[0]["complete"] is False


@pytest.mark.parametrize(("activation", "init"), [("linear", "optimum"), ("linear", "random"),
                                                  ("relu", "random")])
def test_predicted_part_of_each_block_share(activation: str, init: str) -> None:
    """Within a block, the cluster's share inside the predicted directions μ_c^{(l+1)}μ_c'^{(l)ᵀ}:
    at the linear optimum the outliers are made of them (predicted = share in every block, to
    rounding); elsewhere it is at most the share, and equals a dense projector computation."""
    from dufm_core.analysis import predicted_bases

    model, _ = _model(activation=activation, init=init)
    op = HessianOperator(model, "weights", "mse")
    vals, vecs = torch.linalg.eigh(op.dense())
    vals, vecs = vals.flip(0), vecs.flip(1)
    bases = predicted_bases(model, op.pset.names)
    assert len(bases) == 3 and all(Q is not None and Q.shape[1] <= 9 for Q in bases)
    for Q in bases:  # orthonormal columns
        assert torch.allclose(Q.T @ Q, torch.eye(Q.shape[1], dtype=Q.dtype), atol=1e-10)
    recs = attribution(vals[:9], vecs[:, :9], op.pset.sizes, dim=op.dim, predicted=bases)
    bounds = [0, *torch.tensor(op.pset.sizes).cumsum(0).tolist()]
    for r in recs:
        assert all(p <= s + 1e-12 for p, s in zip(r["predicted"], r["layers"], strict=True))
        if init == "optimum":
            assert r["predicted"] == pytest.approx(r["layers"], abs=1e-8)
    # a dense reference: trace of (cluster projector) · (block's predicted projector) / k
    a, b = 0, recs[0]["multiplicity"]
    P = vecs[:, a:b] @ vecs[:, a:b].T
    for i, Q in enumerate(bases):
        R = torch.zeros(op.dim, op.dim, dtype=torch.float64)
        lo, hi = bounds[i], bounds[i + 1]
        R[lo:hi, lo:hi] = Q @ Q.T
        assert recs[0]["predicted"][i] == pytest.approx(float(torch.trace(P @ R)) / (b - a),
                                                        abs=1e-12)
    if init == "random":  # away from collapse the outliers leave the predicted directions
        assert sum(recs[0]["predicted"]) < 0.99 * sum(recs[0]["layers"])


def test_clusters_by_relative_gap() -> None:
    v = torch.tensor([3.0, 3.0 * (1 + 1e-9), 2.0, 1e-3, 1e-3 * (1 + 1e-4)])
    assert clusters(v, rel_tol=1e-6) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert clusters(v, rel_tol=1e-3) == [(0, 2), (2, 3), (3, 5)]
    with pytest.raises(ValueError, match="rows"):
        attribution(v, torch.eye(4, dtype=torch.float64), [2, 1])


def test_stalled_lower_rank_point_near_lambda_crit(tmp_path) -> None:
    """The run of issue #14 (K=3, n=4, d=6, L=3, λ=0.0655 > λ_crit, lr 0.2) stalls at a rank-2
    critical point whose total loss exceeds the origin's 0.5: the verdict is "minimum" (second
    order), and over the weights the total Hessian's null space is exactly the 18-dimensional
    tangent space of the hidden-layer rotations, so it is a spurious local minimum modulo
    symmetry (docs/theory.md §6.6)."""
    from dufm_core.kinds import load_checkpoint, train
    from dufm_core.models import fit_term

    cfg = RunConfig(K=3, n=4, width=6, depth=3, lam_w=0.0655, lam_h=0.0655, lr=0.2, steps=4000,
                    checkpoint_points=2, log_points=5)
    cfg.validate()
    run = train(cfg, runs_dir=tmp_path, progress=None).run
    model = load_checkpoint(run.checkpoint_path(run.checkpoints()[-1])).model.double()
    v, d = _verdict(model, cfg)
    assert v == "minimum", d
    with torch.no_grad():
        loss = float(fit_term(model(), model.labels, "mse") + model.reg_term(cfg.lam_ws, cfg.lam_h))
    assert 0.5 < loss < 0.51
    op = HessianOperator(model, "weights", "mse", "total", cfg.lam_ws, cfg.lam_h)
    ev = torch.linalg.eigvalsh(op.dense())
    tol = 1e-6 * float(ev[-1])
    assert int((ev.abs() <= tol).sum()) == 18 and int((ev < -tol).sum()) == 0
    assert float(ev[ev > tol][0]) == pytest.approx(0.0655, rel=1e-6)  # next: λ itself
