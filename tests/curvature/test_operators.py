"""HessianOperator against dense float64 autograd Hessians on tiny models.

The references are built independently of the operator: ``torch.autograd.functional.hessian``
of ``models.fit_term`` over the flattened parameters, and Jᵀ H_ℓ J from an explicit Jacobian.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from dufm_core.config import RunConfig
from dufm_core.curvature import HessianOperator, gradient, param_set
from dufm_core.models import build_model, fit_term

TOL = 1e-10
CASES = [("linear", "mse"), ("relu", "mse"), ("linear", "ce"), ("relu", "ce")]
LAM_W = [0.01, 0.02, 0.005]
LAM_H = 0.03


def tiny_model(activation: str, loss: str, seed: int = 1, init: str = "random") -> torch.nn.Module:
    cfg = RunConfig(
        K=3,
        n=2,
        width=[4, 5, 4],
        depth=3,
        activation=activation,
        loss=loss,
        seed=seed,
        init=init,
    )
    cfg.validate()
    return build_model(cfg)


def _objective(model: torch.nn.Module, names: tuple[str, ...], loss: str):
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]

    def tensors(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        vals = {k: v.detach() for k, v in params.items()}
        off = 0
        for name, shape in zip(names, shapes, strict=True):
            size = math.prod(shape)
            vals[name] = theta[off : off + size].reshape(shape)
            off += size
        return vals

    def logits(theta: torch.Tensor) -> torch.Tensor:
        return functional_call(model, tensors(theta), ())

    theta0 = torch.cat([params[n].detach().reshape(-1) for n in names])
    return theta0, logits


def dense_fit(model: torch.nn.Module, names: tuple[str, ...], loss: str) -> torch.Tensor:
    theta0, logits = _objective(model, names, loss)
    return torch.autograd.functional.hessian(
        lambda th: fit_term(logits(th), model.labels, loss), theta0
    )


def dense_gn(model: torch.nn.Module, names: tuple[str, ...], loss: str) -> torch.Tensor:
    theta0, logits = _objective(model, names, loss)
    z = logits(theta0).detach()
    N, K = z.shape
    J = torch.autograd.functional.jacobian(logits, theta0).reshape(N * K, -1)
    if loss == "mse":
        Hl = torch.eye(N * K, dtype=z.dtype) / N
    else:
        p = torch.softmax(z, dim=1)
        Hl = torch.block_diag(*[(torch.diag(pi) - torch.outer(pi, pi)) / N for pi in p])
    return J.T @ Hl @ J


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("init", ["random", "optimum"])
@pytest.mark.parametrize(("activation", "loss"), CASES)
def test_fit_gn_residual_total_match_dense(activation: str, loss: str, init: str) -> None:
    """At "optimum" the ReLU model sits exactly on its kinks (coordinate frames: many
    pre-activations are 0), where both sides use autograd's σ'(0) = 0."""
    model = tiny_model(activation, loss, init=init)
    for spec in ["layer:2", "layers:1,3", "weights", "weights+features", "features"]:
        ps = param_set(model, spec)
        ref = dense_fit(model, ps.names, loss)
        fit = HessianOperator(model, spec, loss).dense()
        assert rel(fit, ref) < TOL, (spec, rel(fit, ref))
        gn = HessianOperator(model, spec, loss, part="gn").dense()
        ref_gn = dense_gn(model, ps.names, loss)
        assert rel(gn, ref_gn) < TOL, (spec, rel(gn, ref_gn))
        res = HessianOperator(model, spec, loss, part="residual").dense()
        assert rel(gn + res, ref) < TOL
        total = HessianOperator(model, spec, loss, "total", LAM_W, LAM_H).dense()
        diag = torch.cat(
            [
                torch.full(
                    (s,),
                    LAM_H if n == "features" else LAM_W[int(n.split(".")[1])],
                    dtype=torch.float64,
                )
                for n, s in zip(ps.names, ps.sizes, strict=True)
            ]
        )
        assert rel(total, ref + torch.diag(diag)) < TOL
        # the Gauss–Newton part is PSD; with CE or ReLU the residual part is not zero in general
        assert float(torch.linalg.eigvalsh(0.5 * (gn + gn.T))[0]) > -1e-12 * float(gn.abs().max())


@pytest.mark.parametrize(("activation", "loss"), CASES)
def test_cross_layer_block(activation: str, loss: str) -> None:
    model = tiny_model(activation, loss, seed=3)
    full_ps = param_set(model, "weights+features")
    ref = dense_fit(model, full_ps.names, loss)
    op = HessianOperator(model, "weights", loss)
    rows, cols = param_set(model, "layer:1"), param_set(model, "layer:3")
    blk = op.block(rows, cols)
    r = rows.index_in(full_ps)
    c = cols.index_in(full_ps)
    assert blk.shape == (rows.dim, cols.dim)
    assert rel(blk, ref[r][:, c]) < TOL
    # a block with the features, and the total part: λ only where row and column coincide
    tot = HessianOperator(model, "weights", loss, "total", LAM_W, LAM_H)
    blk2 = tot.block("layers:2,3", "features+weights")
    r2 = param_set(model, "layers:2,3").index_in(full_ps)
    c2 = param_set(model, "features+weights").index_in(full_ps)
    expected = ref[r2][:, c2].clone()
    n_w2 = param_set(model, "layer:2").dim
    for i, ri in enumerate(r2.tolist()):
        j = int((c2 == ri).nonzero()[0])  # the column of the same entry
        expected[i, j] += LAM_W[1] if i < n_w2 else LAM_W[2]
    assert rel(blk2, expected) < TOL


def test_matvec_chunks_and_symmetry() -> None:
    model = tiny_model("relu", "ce", seed=5)
    op = HessianOperator(model, "weights+features", "ce")
    small = HessianOperator(model, "weights+features", "ce", chunk_size=3)
    V = torch.randn(op.dim, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    HV = op.matmat(V)
    assert rel(small.matmat(V), HV) < 1e-13
    assert rel(op.matvec(V[:, 2]), HV[:, 2]) < 1e-13
    assert rel(op @ V, HV) < 1e-13
    D = op.dense()
    assert rel(D, D.T) < 1e-12
    assert op.matvecs >= 7 + 1 + 7 + op.dim
    assert op.shape == (op.dim, op.dim) and op.dtype == torch.float64


def test_gradient_matches_autograd() -> None:
    for activation, loss in CASES:
        model = tiny_model(activation, loss, seed=7)
        logits = model()
        f = fit_term(logits, model.labels, loss)
        ref = torch.autograd.grad(f, [model.weights[0], model.weights[1], model.weights[2]])
        g = gradient(model, "weights", loss)
        assert rel(g, torch.cat([r.reshape(-1) for r in ref])) < 1e-12
        gt = gradient(model, "layer:2", loss, part="total", lam_w=LAM_W, lam_h=LAM_H)
        expect = ref[1].reshape(-1) + LAM_W[1] * model.weights[1].detach().reshape(-1)
        assert rel(gt, expect) < 1e-12


def test_errors_are_clear() -> None:
    model = tiny_model("linear", "mse")
    with pytest.raises(ValueError, match="part must be one of"):
        HessianOperator(model, "weights", part="hessian")
    with pytest.raises(ValueError, match="needs lam"):
        HessianOperator(model, "weights", part="total")
    with pytest.raises(ValueError, match="loss must be"):
        HessianOperator(model, "weights", loss="l1")
    op = HessianOperator(model, "weights")
    with pytest.raises(ValueError, match="refusing to build a dense"):
        op.dense(max_dim=10)
    with pytest.raises(ValueError, match="matmat expects"):
        op.matmat(torch.zeros(3, 2))
