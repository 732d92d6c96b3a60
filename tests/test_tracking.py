"""Eigenspace tracking (docs/design.md §8.2, dufm_core/tracking.py): the overlap measure against
principal angles and under rotations inside degenerate eigenspaces, the gap-aware top-K² cut,
the vectors file, series overlaps against a dense float64 autograd reference, recomputing only
the vectors of cached reports, and warm starts of the block solver."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core import reports, tracking
from dufm_core.config import RunConfig
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.spectrum import layer_spectrum
from dufm_core.kinds import load_checkpoint, train
from dufm_core.models import fit_term
from dufm_core.subspaces import subspace_angles
from dufm_core.tracking import Eigenspace, StepVectors

F64 = torch.float64


def _orth(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))[0]


# --------------------------------------------------------------------------- the measure
def test_overlap_is_the_mean_squared_cosine_of_the_principal_angles() -> None:
    A, B = _orth(30, 4, 0), _orth(30, 6, 1)
    angles = subspace_angles(A, B)
    expected = float(torch.cos(angles).square().mean())
    assert tracking.overlap(A, B) == pytest.approx(expected, rel=1e-12)
    assert 0.0 <= tracking.overlap(A, B) <= 1.0
    assert float(tracking.principal_cos2(A, B).mean()) == pytest.approx(expected, rel=1e-12)
    assert tracking.overlap(A, A) == pytest.approx(1.0, abs=1e-14)
    # a space inside a larger one: every angle is 0
    assert tracking.overlap(B[:, :3], B) == pytest.approx(1.0, abs=1e-14)
    # orthogonal spaces: 0
    Q = _orth(30, 8, 2)
    assert tracking.overlap(Q[:, :4], Q[:, 4:]) == pytest.approx(0.0, abs=1e-14)
    assert tracking.overlap(A, A[:, :0]) is None


def test_overlap_is_invariant_to_rotations_inside_a_degenerate_eigenspace() -> None:
    # a symmetric matrix whose top eigenvalue has multiplicity 4: any orthonormal basis of that
    # eigenspace is a valid answer of a solver, and the overlap must not depend on the choice
    Q = _orth(20, 20, 3)
    values = torch.tensor([5.0] * 4 + [1.0 / (i + 1) for i in range(16)], dtype=F64)
    U = Q[:, :4]
    R = _orth(4, 4, 4)  # a rotation inside the cluster
    other = _orth(20, 4, 5)
    assert tracking.overlap(U @ R, other) == pytest.approx(tracking.overlap(U, other), rel=1e-12)
    assert tracking.overlap(U @ R, U) == pytest.approx(1.0, abs=1e-14)
    # the cos² matrix changes under the rotation; its total does not
    C1, C2 = tracking.cos2_matrix(U, other), tracking.cos2_matrix(U @ R, other)
    assert not torch.allclose(C1, C2)
    assert float(C1.sum()) == pytest.approx(float(C2.sum()), rel=1e-12)
    space = Eigenspace(values, Q)
    assert space.top_space(4).shape[1] == 4


def test_the_top_space_is_cut_only_at_a_gap() -> None:
    Q = _orth(12, 12, 6)
    # λ_4 = λ_5: the K² = 4 cut would split the cluster {λ_3, λ_4, λ_5}; cut above it (r = 2)
    vals = torch.tensor([9.0, 8.0, 3.0, 3.0, 3.0, 1.0] + [0.0] * 6, dtype=F64)
    assert Eigenspace(vals, Q[:, :4]).top_space(4).shape[1] == 2
    # a gap at K²: all four
    vals = torch.tensor([9.0, 8.0, 3.0, 3.0, 2.0, 1.0] + [0.0] * 6, dtype=F64)
    assert Eigenspace(vals, Q[:, :4]).top_space(4).shape[1] == 4
    # rank < K² (zeros from λ_4 on): the rank-3 space
    vals = torch.tensor([9.0, 8.0, 3.0] + [0.0] * 9, dtype=F64)
    assert Eigenspace(vals, Q[:, :4]).top_space(4).shape[1] == 3
    # equal to rounding counts as equal
    vals = torch.tensor([1.0, 1.0, 1.0, 1.0 + 1e-12, 1.0] + [0.0] * 7, dtype=F64)
    assert Eigenspace(vals, Q[:, :4]).top_space(4).shape[1] == 0
    # nothing at all: no space, no overlap
    space = Eigenspace(torch.zeros(12, dtype=F64), Q[:, :4]).top_space(4)
    assert space.shape[1] == 0 and tracking.overlap(space, Q[:, :4]) is None


# --------------------------------------------------------------------------- the file
def test_vectors_file_round_trip_and_refusals(tmp_path: Path) -> None:
    U = _orth(50, 4, 7)
    sv = StepVectors(12, 2, {"layer_1": Eigenspace(torch.linspace(4, 1, 6, dtype=F64), U),
                             tracking.FULL: Eigenspace(torch.ones(6, dtype=F64), U)}, "weights")
    path = tracking.vectors_path(tmp_path, 12)
    tracking.write_vectors(path, sv)
    head = json.loads(path.read_bytes()[8: 8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert head["layer_1.vectors"]["dtype"] == "F32" and head["layer_1.values"]["dtype"] == "F64"
    assert path.stat().st_size < 2 * 50 * 4 * 4 + 2 * 6 * 8 + 1024  # float32, no padding
    back = tracking.read_vectors(path, 12)
    assert back is not None and back.full_params == "weights" and back.K == 2
    V = back.spaces["layer_1"].vectors
    assert V.dtype == F64
    torch.testing.assert_close(V.T @ V, torch.eye(4, dtype=F64), atol=1e-14, rtol=0)
    assert tracking.overlap(V, U) == pytest.approx(1.0, abs=1e-12)
    assert tracking.overlap(V, V) == pytest.approx(1.0, abs=1e-15)
    assert tracking.read_vectors(path, 13) is None  # another step's file
    path.write_bytes(b"\x00" * 20)
    assert tracking.read_vectors(path) is None  # malformed: recomputed, never a traceback
    assert tracking.read_vectors(tmp_path / "missing.safetensors") is None


def test_capture_is_off_outside_its_context() -> None:
    tracking.record("layer_1", torch.ones(3), torch.eye(3), 2)  # no capture: nothing happens
    assert tracking.warm_start("layer_1", 3) is None
    warm = StepVectors(0, 2, {"layer_1": Eigenspace(torch.ones(3, dtype=F64), torch.eye(3))})
    with tracking.capturing(warm) as cap:
        assert tracking.warm_start("layer_1", 3) is not None
        assert tracking.warm_start("layer_1", 4) is None  # another dimension: no warm start
        tracking.record("layer_1", torch.ones(3), torch.eye(3), 2)
    assert cap.found["layer_1"].vectors.shape == (3, 2)
    assert tracking.warm_start("layer_1", 3) is None


# --------------------------------------------------------------------------- series
def _dense_layer_hessian(model: torch.nn.Module, layer: int, loss: str) -> torch.Tensor:
    """The fit Hessian w.r.t. W_layer (row-major vec), from our own forward pass, in float64."""
    H1 = model.features.detach().double()
    Ws = [w.detach().double() for w in model.weights]
    act = torch.relu if model.activation == "relu" else (lambda x: x)

    def f(w: torch.Tensor) -> torch.Tensor:
        h = H1
        for i, W in enumerate(Ws):
            W = w.reshape(W.shape) if i == layer - 1 else W
            h = W @ h if i == 0 else W @ act(h)
        return fit_term(h.T, model.labels, loss)

    H = torch.autograd.functional.hessian(f, Ws[layer - 1].reshape(-1).clone())
    return 0.5 * (H + H.T)


@pytest.fixture(scope="module")
def relu_series(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    cfg = RunConfig(K=2, n=3, width=4, depth=2, steps=200, checkpoint_points=4,
                    activation="relu", loss="ce")
    run = train(cfg, runs_dir=tmp_path_factory.mktemp("trk") / "runs", progress=None).run
    return run, reports.analyze_series(run, full=True)


def test_series_overlaps_match_a_dense_float64_reference(relu_series: tuple) -> None:
    run, series = relu_series
    K2 = 4
    spaces = {}
    for step in run.checkpoints():
        model = load_checkpoint(run.checkpoint_path(step)).model.double()
        for l in (1, 2):
            evals, evecs = torch.linalg.eigh(_dense_layer_hessian(model, l, "ce"))
            space = Eigenspace(evals.flip(0), evecs.flip(1)[:, :K2])
            spaces[step, l] = space.top_space(K2)
    steps = run.checkpoints()
    for i, entry in enumerate(series["entries"]):
        for lay in entry["layers"]:
            l, step = lay["layer"], entry["step"]
            assert lay["overlap_dim"] == spaces[step, l].shape[1]
            ref = tracking.overlap(spaces[step, l], spaces[steps[-1], l])
            assert lay["overlap_final"] == pytest.approx(ref, abs=1e-6)
            if i == 0:
                assert lay["overlap_prev"] is None
            else:
                ref = tracking.overlap(spaces[step, l], spaces[steps[i - 1], l])
                assert lay["overlap_prev"] == pytest.approx(ref, abs=1e-6)
            for key in ("overlap_final", "overlap_prev"):
                assert lay[key] is None or 0.0 <= lay[key] <= 1.0
    last = series["entries"][-1]
    assert all(lay["overlap_final"] == pytest.approx(1.0, abs=1e-12) for lay in last["layers"])
    assert last["full"]["overlap_final"] == pytest.approx(1.0, abs=1e-12)
    assert series["entries"][0]["full"]["overlap_prev"] is None
    assert all(0.0 <= e["full"]["overlap_final"] <= 1.0 for e in series["entries"])
    # the overlaps of a moving training are not all 1 (the test could fail)
    assert min(lay["overlap_final"] for lay in series["entries"][0]["layers"]) < 0.999


def test_cached_reports_without_vectors_get_only_their_vectors(relu_series: tuple) -> None:
    run, series = relu_series
    reports_before = {p.name: p.read_bytes() for p in run.analysis_dir.glob("step_*.json")}
    for p in run.analysis_dir.glob("*.vectors.safetensors"):
        p.unlink()
    again = reports.analyze_series(run, full=True)
    assert {p.name: p.read_bytes() for p in run.analysis_dir.glob("step_*.json")} == reports_before
    assert len(list(run.analysis_dir.glob("*.vectors.safetensors"))) == len(run.checkpoints())
    for a, b in zip(series["entries"], again["entries"], strict=True):
        for la, lb in zip(a["layers"], b["layers"], strict=True):
            for key in ("overlap_final", "overlap_prev"):
                assert la[key] == pytest.approx(lb[key], abs=1e-6)
        assert a["full"]["overlap_final"] == pytest.approx(b["full"]["overlap_final"], abs=1e-6)
    # a series without --full keeps the full block its vectors files already hold (no solve)
    plain = reports.analyze_series(run)
    assert [e["full"] for e in plain["entries"]] == [e["full"] for e in again["entries"]]


def test_linear_mse_series_ends_at_one(tmp_path: Path) -> None:
    cfg = RunConfig(K=3, n=5, width=6, depth=2, steps=300, checkpoint_points=3)
    run = train(cfg, runs_dir=tmp_path / "runs", progress=None).run
    series = reports.analyze_series(run)
    assert [lay["overlap_final"] for lay in series["entries"][-1]["layers"]] == [
        pytest.approx(1.0, abs=1e-12)] * 2
    assert all(lay["overlap_dim"] == 9 for e in series["entries"] for lay in e["layers"])
    assert all("full" not in e for e in series["entries"])  # no full Hessian analysed
    size = tracking.vectors_path(run.analysis_dir, 300).stat().st_size
    assert size < 2 * 9 * 36 * 4 + 2 * 12 * 8 + 1024  # K² float32 vectors per layer


# --------------------------------------------------------------------------- warm starts
def test_warm_start_gives_the_same_eigenvalues_with_fewer_products() -> None:
    # a degenerate top cluster (K² = 4 equal values), then the same matrix slightly moved
    n = 300
    Q = _orth(n, n, 8)
    vals = torch.cat([torch.full((4,), 10.0, dtype=F64),
                      torch.linspace(3.0, 0.0, n - 4, dtype=F64)])
    A = Q @ torch.diag(vals) @ Q.T
    E = _orth(n, n, 9)
    B = A + 1e-3 * (E[:, :5] @ torch.diag(torch.arange(1.0, 6.0, dtype=F64)) @ E[:, :5].T)
    first = top_eigenpairs(A, 6, block=6, tol=1e-10, need=4)
    cold = top_eigenpairs(B, 6, block=6, tol=1e-10, need=4)
    warm = top_eigenpairs(B, 6, block=6, tol=1e-10, need=4, v0=first.vectors[:, :4])
    assert cold.converged[:4].all() and warm.converged[:4].all()
    torch.testing.assert_close(warm.values[:4], cold.values[:4], rtol=1e-9, atol=0)
    assert warm.matvecs < cold.matvecs


def test_warm_start_of_a_layer_solve_between_checkpoints(relu_series: tuple) -> None:
    run, _ = relu_series
    a, b = run.checkpoints()[-2:]
    ma = load_checkpoint(run.checkpoint_path(a)).model.double()
    mb = load_checkpoint(run.checkpoint_path(b)).model.double()
    prev = layer_spectrum(ma, 1, "ce", 6, 1e-10, dense_max=0)
    cold = layer_spectrum(mb, 1, "ce", 6, 1e-10, dense_max=0)
    warm = layer_spectrum(mb, 1, "ce", 6, 1e-10, dense_max=0, v0=prev.vectors[:, :4])
    assert "block-krylov" in warm.method and cold.converged and warm.converged
    dense = torch.linalg.eigvalsh(_dense_layer_hessian(mb, 1, "ce")).flip(0)[:4]
    scale = float(dense[0])
    np.testing.assert_allclose(warm.values[:4], dense, atol=1e-8 * scale)
    np.testing.assert_allclose(cold.values[:4], dense, atol=1e-8 * scale)


def test_two_bases_of_the_degenerate_outlier_space_at_the_optimum_overlap_fully() -> None:
    # at the linear MSE optimum the K² = 9 outliers of a layer are exactly equal: the exact
    # Kronecker eigenvectors and the dense float64 autograd ones are two different bases of
    # the same space
    from dufm_core.models import build_model

    cfg = RunConfig(K=3, n=4, width=5, depth=2, init="optimum")
    cfg.validate()
    model = build_model(cfg).double()
    kron = layer_spectrum(model, 1, "mse")
    evals, evecs = torch.linalg.eigh(_dense_layer_hessian(model, 1, "mse"))
    A = Eigenspace(kron.values, kron.vectors[:, :9]).top_space(9)
    B = Eigenspace(evals.flip(0), evecs.flip(1)[:, :9]).top_space(9)
    assert A.shape[1] == B.shape[1] == 9
    assert float(kron.values[0] - kron.values[8]) <= 1e-10 * float(kron.values[0])  # degenerate
    assert tracking.overlap(A, B) == pytest.approx(1.0, abs=1e-10)
    assert float(tracking.principal_cos2(A, B).min()) == pytest.approx(1.0, abs=1e-9)
