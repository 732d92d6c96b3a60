"""Exactness of the fast paths of issue #16 (products and the report path), not their speed.

* SLQ keeps its Lanczos basis in an uninitialised buffer (no zero-fill of probes × steps × dim
  numbers): every row it reads must have been written first, on runs that go all the way and on
  runs whose probes stop early at an invariant subspace. ``torch.empty`` is made to hand out
  NaN-filled memory, so one read of an unwritten row would poison the nodes.
* The whole-network operator's float32 products (an explicit choice, e.g. for a GPU) agree with
  the float64 ones to the accuracy docs/real_networks.md §7 states; float64 stays the default.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dufm_core.config import RunConfig
from dufm_core.curvature import HessianOperator
from dufm_core.curvature.density import lanczos_quadrature
from dufm_core.curvature.network import NetworkHessianOperator
from dufm_core.models import build_model
from dufm_core.networks import RealNetwork, init_network

F64 = torch.float64


def _nan_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    real_empty = torch.empty

    def poisoned(*args: object, **kwargs: object) -> torch.Tensor:
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", poisoned)


@pytest.mark.parametrize("width,steps", [(6, 20), (4, 12)])
def test_slq_never_reads_an_unwritten_basis_row(monkeypatch: pytest.MonkeyPatch, width: int,
                                                 steps: int) -> None:
    cfg = RunConfig(K=3, n=40, width=width, depth=5, init="optimum")
    cfg.validate()
    op = HessianOperator(build_model(cfg), "layer:2" if width == 6 else "weights")
    ref_nodes, ref_weights = lanczos_quadrature(op, steps=steps, probes=5, seed=3)
    _nan_empty(monkeypatch)
    assert torch.isnan(torch.empty(3, dtype=F64)).all()  # the poison is in place
    nodes, weights = lanczos_quadrature(op, steps=steps, probes=5, seed=3)
    assert np.isfinite(nodes).all() and np.isfinite(weights).all()
    np.testing.assert_array_equal(weights > 0, ref_weights > 0)
    np.testing.assert_allclose(nodes, ref_nodes, rtol=0, atol=1e-12 * np.abs(ref_nodes).max())
    if width == 6:  # rank 9 of 36: every probe stops after two steps, the rest never written
        assert (weights > 0).sum(axis=1).max() <= 2


def test_network_float32_products_agree_with_float64_to_the_stated_accuracy() -> None:
    torch.manual_seed(0)
    model = RealNetwork(1, [4, 5, 3], "relu", base_width=1, dtype=F64)
    init_network(model, 1.0, torch.Generator().manual_seed(0))
    x = torch.randn(12, 1, 8, 8, dtype=F64)
    y = torch.arange(3).repeat_interleave(4)
    op64 = NetworkHessianOperator(model, x, y, "mse", "all", batch_size=5, chunk=3)
    op32 = NetworkHessianOperator(model, x, y, "mse", "all", batch_size=5, chunk=3,
                                  dtype=torch.float32)
    assert op64.dtype == F64 and op32.dtype == torch.float32
    V = torch.randn(op64.dim, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    a, b = op64.matmat(V), op32.matmat(V.float())
    assert b.dtype == torch.float32
    rel = float((b.double() - a).abs().max() / a.abs().max())
    assert 0.0 < rel < 1e-5  # float32 rounding: measurably inexact, well inside 1e-5


@pytest.mark.parametrize("activation,init", [("relu", "optimum"), ("linear", "random")])
def test_full_bottom_started_away_from_the_outliers_matches_dense(activation: str,
                                                                  init: str) -> None:
    """The report's full bottom (block 4, start block free of the converged outliers) equals the
    three smallest eigenvalues of the dense total Hessian, with fewer products than the default
    start; the verdict is the default path's."""
    from dufm_core import analysis
    from dufm_core.curvature.bottom import PlusDiagonal, bottom_eigenvalues
    from dufm_core.curvature.operators import regulariser_diagonal
    from dufm_core.curvature.params import param_set
    from dufm_core.curvature.spectrum import hessian_operator

    cfg = RunConfig(K=3, n=10, width=8, depth=3, lam_w=0.01, lam_h=0.01, init=init,
                    activation=activation)
    cfg.validate()
    torch.manual_seed(0)
    model = build_model(cfg).double()
    full = analysis.analyze_full(model, cfg, analysis.predictions(cfg, model), "weights")
    op = hessian_operator(model, "weights", loss="mse", part="fit")
    total = PlusDiagonal(op, regulariser_diagonal(param_set(model, "weights"), cfg.lam_ws,
                                                  cfg.lam_h))
    dense = torch.linalg.eigvalsh(total.matmat(torch.eye(op.dim, dtype=F64)))[:3]
    scale = float(full["top"][0])
    np.testing.assert_allclose(full["bottom"], dense.numpy(), atol=1e-7 * scale)
    cold = bottom_eigenvalues(total, 3, sigma=float(full["top"][0]) + 0.01)
    assert full["verdict_detail"]["bottom_matvecs"] < cold.matvecs
    np.testing.assert_allclose(full["bottom"], cold.values.numpy(), atol=1e-7 * scale)


def test_bottom_start_is_orthogonal_to_the_outliers_or_absent() -> None:
    from dufm_core.analysis import bottom_start

    Y = torch.linalg.qr(torch.randn(500, 9, dtype=F64))[0]
    X = bottom_start(500, Y)
    assert X is not None and X.shape == (500, 4)
    assert float((Y.T @ X).abs().max()) < 1e-12 * float(X.abs().max())
    assert bottom_start(40, Y) is None  # too small to leave the outliers out: default start
    assert bottom_start(500, None) is not None


def test_network_layout_and_split_passes_change_products_only_by_rounding() -> None:
    """CPU float64: channels-last weights/images and passes of ≤ PASS_ROWS directions × samples
    give the row-major, one-pass products to 1e-12 relative (issue #16's exactness bar)."""
    from dufm_core.curvature import network

    torch.manual_seed(0)
    model = RealNetwork(1, [4, 5, 3], "relu", base_width=1, dtype=F64)
    init_network(model, 1.0, torch.Generator().manual_seed(0))
    x = torch.randn(40, 1, 8, 8, dtype=F64)
    y = torch.arange(3).repeat_interleave(14)[:40]
    op = NetworkHessianOperator(model, x, y, "ce", "all", batch_size=40, chunk=6)
    assert op.chunk == network.CPU_CHUNK  # 6 asked, at most CPU_CHUNK per vmapped pass
    assert op.cpu_f64 and op.x.is_contiguous(memory_format=torch.channels_last)
    assert any(t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
               and not t.is_contiguous() for t in op.theta.values())
    assert op._rows(6) == min(40, network.PASS_ROWS // 6)
    plain = NetworkHessianOperator(model, x, y, "ce", "all", batch_size=40, chunk=6)
    plain.cpu_f64 = False
    plain.theta = {k: t.contiguous() for k, t in plain.theta.items()}
    plain.frozen = {k: t.contiguous() for k, t in plain.frozen.items()}
    plain.x = plain.x.contiguous()
    V = torch.randn(op.dim, 6, dtype=F64, generator=torch.Generator().manual_seed(2))
    old_rows = network.PASS_ROWS
    try:
        network.PASS_ROWS = 12  # force split passes (2 samples a pass for 6 directions)
        assert op._rows(6) == 2
        a = op.matmat(V)
    finally:
        network.PASS_ROWS = old_rows
    b = plain.matmat(V)
    assert float((a - b).abs().max()) <= 1e-12 * float(b.abs().max())
