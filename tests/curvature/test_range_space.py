"""The linear UFM's Hessian on a subspace holding its range (dufm_core/curvature/range_space.py)
against the dense float64 Hessian of the full operator, and the report path that uses it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dufm_core import analysis, tracking
from dufm_core.config import RunConfig
from dufm_core.curvature.density import slq_log_density
from dufm_core.curvature.kronecker import LinearHessianOperator
from dufm_core.curvature.range_space import RangeSpaceOperator, range_space
from dufm_core.curvature.spectrum import hessian_operator
from dufm_core.models import build_model

F64 = torch.float64


def _model(loss: str = "mse", init: str = "random", width: int = 10, K: int = 3, n: int = 4,
           depth: int = 3, seed: int = 0) -> tuple[torch.nn.Module, RunConfig]:
    cfg = RunConfig(K=K, n=n, width=width, depth=depth, lam_w=0.01, lam_h=0.01, loss=loss,
                    init=init)
    cfg.validate()
    torch.manual_seed(seed)
    return build_model(cfg).double(), cfg


CASES = [("mse", "optimum"), ("mse", "random"), ("ce", "random")]


@pytest.mark.parametrize("loss,init", CASES)
@pytest.mark.parametrize("params", ["weights", "weights+features", "layers:1,3", "layer:2"])
@pytest.mark.parametrize("part", ["fit", "gn", "residual"])
def test_range_space_holds_the_range_and_products_are_the_projected_ones(
        loss: str, init: str, params: str, part: str) -> None:
    """Q is an isometry, H (I − QQᵀ) = 0 (S holds the range), C = QᵀHQ, and H's spectrum is
    C's plus null_dim exact zeros — all against the dense Hessian of the full operator."""
    model, _ = _model(loss, init)
    op = LinearHessianOperator(model, params, loss, part)
    rs = RangeSpaceOperator(op)
    assert rs.dim + rs.null_dim == op.dim and rs.dim < op.dim
    H = op.dense()
    scale = float(H.abs().max())
    Q = rs.expand(torch.eye(rs.dim, dtype=F64))
    assert float((Q.T @ Q - torch.eye(rs.dim, dtype=F64)).abs().max()) < 1e-13
    assert float((H - Q @ (Q.T @ H)).abs().max()) <= 1e-13 * scale
    C = rs.dense()
    assert float((C - Q.T @ H @ Q).abs().max()) <= 1e-13 * scale
    assert float((rs.compress(H) - Q.T @ H).abs().max()) <= 1e-13 * scale
    both = torch.cat([torch.linalg.eigvalsh(0.5 * (C + C.T)), torch.zeros(rs.null_dim, dtype=F64)])
    np.testing.assert_allclose(torch.sort(both).values.numpy(),
                               torch.linalg.eigvalsh(H).numpy(), atol=1e-12 * scale)
    assert sum(rs.block_null_dims()) == rs.null_dim


def test_coordinates_round_trip_and_sizes() -> None:
    """compress ∘ expand is the identity; a hidden layer of width d keeps a·d + (d − a)·s
    coordinates (a = s = K here), the last layer (K rows) all of its K·d."""
    model, cfg = _model(width=16)
    rs = RangeSpaceOperator(LinearHessianOperator(model, "weights"))
    x = torch.randn(rs.dim, 5, dtype=F64, generator=torch.Generator().manual_seed(2))
    assert float((rs.compress(rs.expand(x)) - x).abs().max()) < 1e-13
    K, d = cfg.K, 16
    assert rs.sizes[1] == K * d + (d - K) * K  # W_2: 16 × 16
    assert rs.sizes[-1] == K * d and rs.block_null_dims()[-1] == 0  # W_L: K × 16, all of it


def test_range_space_is_used_only_where_it_pays() -> None:
    small, _ = _model(width=10)  # S is 57 % of the space: not worth it
    assert range_space(LinearHessianOperator(small, "weights")) is None
    wide, cfg = _model(width=32)
    rs = range_space(LinearHessianOperator(wide, "weights"))
    assert rs is not None and rs.dim < 0.5 * rs.ambient_dim
    assert range_space(LinearHessianOperator(wide, "weights", part="total",
                                             lam_w=cfg.lam_ws)) is None
    relu, _ = _model()
    relu.activation = "relu"
    assert range_space(hessian_operator(relu, "weights", structured=False)) is None
    with pytest.raises(ValueError, match="part fit"):
        RangeSpaceOperator(LinearHessianOperator(wide, "weights", part="total",
                                                 lam_w=cfg.lam_ws))


def test_a_diagonal_must_be_constant_on_each_block() -> None:
    model, _ = _model(width=16)
    rs = RangeSpaceOperator(LinearHessianOperator(model, "weights"))
    d = torch.ones(rs.ambient_dim, dtype=F64)
    assert float((rs.diagonal_in_range(d) - 1.0).abs().max()) == 0.0
    d[3] = 2.0
    with pytest.raises(ValueError, match=r"not constant on block weights\.0"):
        rs.diagonal_in_range(d)


def test_density_with_the_complement_zeros_matches_the_dense_spectrum() -> None:
    """SLQ on C with null_dim: total mass 1, the mass at the floor (zeros) at least the exact
    null share, and the mass above 1e-6·λ_max equals the dense spectrum's share there."""
    model, _ = _model(init="optimum", width=24)
    op = LinearHessianOperator(model, "weights")
    rs = RangeSpaceOperator(op)
    dens = slq_log_density(rs, steps=40, probes=4, grid_points=200, null_dim=rs.null_dim)
    assert dens.nodes.shape[1] == 41 and np.allclose(dens.weights.sum(axis=1), 1.0)
    ev = torch.linalg.eigvalsh(op.dense()).numpy()
    top = float(np.abs(ev).max())
    big = float(np.mean(np.abs(ev) > 1e-6 * top))
    assert dens.mass(np.log10(1e-6 * top), np.inf) == pytest.approx(big, abs=0.02)
    assert dens.mass(-np.inf, np.log10(dens.floor)) >= rs.null_dim / op.dim - 1e-12


@pytest.mark.parametrize("loss,init", [("mse", "optimum"), ("mse", "random"), ("ce", "random")])
def test_report_on_the_range_space_equals_the_full_solve(loss: str, init: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """analyze_full on the range space (width 24, where it pays) against the same report with the
    range space switched off: top values, bottom, trace, verdict and attribution agree."""
    model, cfg = _model(loss, init, width=24, K=2, n=6)
    th = analysis.predictions(cfg, model)
    fast = analysis.analyze_full(model, cfg, th, "weights")
    assert "in its range space" in fast["method"]
    monkeypatch.setattr(analysis, "range_space", lambda op: None)
    slow = analysis.analyze_full(model, cfg, th, "weights")
    assert "range space" not in slow["method"]
    scale = float(slow["top"][0])
    K2 = cfg.K ** 2
    np.testing.assert_allclose(fast["top"][:K2], slow["top"][:K2], atol=1e-10 * scale)
    np.testing.assert_allclose(fast["bottom"], slow["bottom"], atol=1e-7 * scale)
    assert fast["verdict"] == slow["verdict"]
    exact = float(torch.trace(LinearHessianOperator(model, "weights", loss).dense()))
    if loss == "mse":  # exact from the layer factors on both paths
        assert fast["trace"] == pytest.approx(exact, rel=1e-12) == slow["trace"]
    else:  # Hutch++ on C (tr C = tr H): within 4 standard errors of the dense trace
        assert abs(fast["trace"] - exact) <= 4 * fast["trace_stderr"]
    for a, b in zip(fast["attribution"], slow["attribution"], strict=False):
        if a["multiplicity"] == b["multiplicity"] and a["complete"]:
            np.testing.assert_allclose(a["layers"], b["layers"], atol=1e-6)
            np.testing.assert_allclose(a["predicted"], b["predicted"], atol=1e-6)
    assert any(a["complete"] for a in fast["attribution"])
    grid_fast = np.asarray(fast["density"]["density"])
    assert np.all(np.isfinite(grid_fast)) and grid_fast.max() > 0


def test_top_falls_back_to_the_full_operator_when_zeros_belong_in_the_top() -> None:
    """When C has fewer than m non-negative eigenvalues the full top m contains exact zeros
    from outside the range space: the solve is then done on H itself, and matches dense."""
    model, _ = _model(init="random", width=24, K=2, n=1, depth=2)
    op = LinearHessianOperator(model, "weights", part="gn")  # rank ≤ K·N = 4
    ev = torch.linalg.eigvalsh(op.dense()).flip(0)
    m = int((ev > 1e-10 * ev[0]).sum()) + 2
    res, rs = analysis._full_top(op, m, K2=4, tol=1e-10, block=m)
    np.testing.assert_allclose(res.values.numpy(), ev[:m].numpy(), atol=1e-9 * float(ev[0]))
    if rs is not None:  # C's own zeros came out ≥ 0: then the values are those zeros
        assert rs.null_dim > 0


def test_tracking_warm_start_goes_through_the_coordinates() -> None:
    """A second report of the same model warm-started from the first's recorded (full-space)
    vectors: same values, no more products, vectors of the full dimension recorded."""
    model, cfg = _model(init="optimum", width=24, K=2, n=6)
    th = analysis.predictions(cfg, model)
    with tracking.capturing() as cap:
        cold = analysis.analyze_full(model, cfg, th, "weights")
    space = cap.found[tracking.FULL]
    assert space.vectors.shape[0] == sum(p.numel() for p in model.weights)
    with tracking.capturing(tracking.StepVectors(0, cfg.K, {tracking.FULL: space})):
        warm = analysis.analyze_full(model, cfg, th, "weights")
    np.testing.assert_allclose(warm["top"][:4], cold["top"][:4], rtol=1e-10)
    assert warm["matvecs"] <= cold["matvecs"]


@pytest.mark.parametrize("init", ["optimum", "random"])
def test_total_spectrum_is_the_range_part_plus_the_regulariser_on_the_complement(
        init: str) -> None:
    """What the report's bottom merges: spec(fit + diag λ) = spec(C + diag λ on S) ∪ {λ_f with
    the multiplicity of block f's complement}, against the dense total Hessian; unequal λ_W so
    a wrong block assignment would show."""
    from dufm_core.curvature.bottom import Bottom, with_known_values
    from dufm_core.curvature.operators import regulariser_diagonal

    cfg = RunConfig(K=2, n=3, width=12, depth=3, lam_w=[0.01, 0.03, 0.002], lam_h=0.01,
                    init=init)
    cfg.validate()
    torch.manual_seed(1)
    model = build_model(cfg).double()
    op = LinearHessianOperator(model, "weights")
    rs = RangeSpaceOperator(op)
    reg = regulariser_diagonal(op.pset, cfg.lam_ws, cfg.lam_h)
    C = rs.dense() + torch.diag(rs.diagonal_in_range(reg))
    lams = [float(reg[o]) for o in op.pset.offsets[:-1]]
    known = torch.cat([torch.full((k,), lam, dtype=F64)
                       for lam, k in zip(lams, rs.block_null_dims(), strict=True)])
    both = torch.sort(torch.cat([torch.linalg.eigvalsh(0.5 * (C + C.T)), known])).values
    dense = torch.linalg.eigvalsh(op.dense() + torch.diag(reg))
    np.testing.assert_allclose(both.numpy(), dense.numpy(), atol=1e-12)
    # the merge keeps the m smallest of both lists, ascending, and says where they came from
    solved = Bottom(torch.tensor([0.5, 0.7, 0.9], dtype=F64), "solve", True, 12, 1e-9)
    merged = with_known_values(solved, torch.tensor([0.002, 0.002, 0.6], dtype=F64), "λ_f")
    assert merged.values.tolist() == [0.002, 0.002, 0.5] and merged.method == "solve; λ_f"
    assert merged.converged and merged.matvecs == 12
