"""Stochastic Lanczos quadrature against dense spectra."""

from __future__ import annotations

import numpy as np
import torch

from dufm_core.config import RunConfig
from dufm_core.curvature import HessianOperator, lanczos_quadrature, slq_density, slq_log_density
from dufm_core.models import build_model
from tests.curvature.test_eigensolvers import spectral_matrix


def test_density_integrates_to_one_and_matches_the_histogram() -> None:
    n = 400
    rng = np.random.default_rng(1)
    vals = np.concatenate([[5.0] * 9, rng.normal(1.0, 0.3, 150), rng.uniform(-1, 0.2, n - 159)])
    A, _, _ = spectral_matrix(vals.tolist(), seed=7)
    dens = slq_density(A, steps=40, probes=24, seed=0)
    assert abs(dens.integral() - 1.0) < 1e-6
    assert abs(dens.weights.sum(axis=1) - 1.0).max() < 1e-12
    edges = np.array([-1.5, -0.5, 0.0, 0.5, 1.0, 1.5, 2.5, 4.5, 5.5])
    true_hist = np.histogram(vals, bins=edges)[0] / n
    est = dens.histogram(edges)
    assert np.abs(est - true_hist).sum() < 0.08, (est, true_hist)
    assert abs(dens.mass(4.5, 5.5) - 9 / n) < 0.01  # the outlier cluster's share
    # the smoothed density is concentrated where the eigenvalues are: none in the empty gap
    gap = (dens.grid > 2.6) & (dens.grid < 4.4)
    assert dens.density[gap].max() < 1e-3 * dens.density.max()


def test_seeded_and_log_axis() -> None:
    A, _, _ = spectral_matrix([1e-3] * 50 + [1.0] * 10 + [1e-6] * 40, seed=8)
    a = slq_log_density(A, steps=30, probes=6, seed=3)
    b = slq_log_density(A, steps=30, probes=6, seed=3)
    assert np.array_equal(a.density, b.density)
    assert abs(a.integral() - 1.0) < 1e-6
    assert abs(a.mass(-0.2, 0.2) - 0.10) < 0.05  # λ = 1: 10 of 100
    assert abs(a.mass(-3.2, -2.8) - 0.50) < 0.1  # λ = 1e-3: 50 of 100
    c = slq_log_density(A, steps=30, probes=6, seed=4)
    assert not np.array_equal(a.density, c.density)


def test_invariant_subspace_stops_early_on_a_hessian() -> None:
    """Case A optimum, layer 2 (d = 6): rank 9 of 36, all outliers equal. Lanczos from any probe
    meets an invariant subspace after two steps (values {λ*, 0}); the quadrature is then exact:
    mass 9/36 at λ* and 27/36 at 0, in expectation over probes."""
    cfg = RunConfig(K=3, n=40, width=6, depth=5, init="optimum")
    cfg.validate()
    op = HessianOperator(build_model(cfg), "layer:2")
    nodes, weights = lanczos_quadrature(op, steps=20, probes=40, seed=0)
    assert (weights > 0).sum(axis=1).max() <= 2
    top = torch.tensor(nodes.max(axis=1))
    assert float(top.std()) < 1e-12 * float(top.mean())
    dens = slq_density(op, steps=20, probes=40, seed=0)
    assert abs(dens.mass(0.1, 0.2) - 9 / 36) < 0.05
