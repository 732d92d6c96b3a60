"""NC4, CDNV and the weight ESD against direct numpy computations and planted structure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from dufm_core import collapse, weights


def _features(seed: int = 0, d: int = 7, K: int = 4, n: int = 9):
    g = np.random.default_rng(seed)
    mu = g.normal(size=(d, K)) * 3
    y = np.repeat(np.arange(K), n)
    H = mu[:, y] + g.normal(size=(d, K * n))
    return H, y, K


def test_cdnv_matches_numpy() -> None:
    H, y, K = _features()
    means = np.stack([H[:, y == c].mean(1) for c in range(K)], 1)
    var = [np.mean(np.sum((H[:, y == c] - means[:, [c]]) ** 2, 0)) for c in range(K)]
    ref = np.mean([(var[a] + var[b]) / (2 * np.sum((means[:, a] - means[:, b]) ** 2))
                   for a, b in itertools.combinations(range(K), 2)])
    got = collapse.cdnv(torch.from_numpy(H), torch.from_numpy(y), K)
    assert abs(got - ref) < 1e-12 * ref


def test_cdnv_zero_at_collapse_and_nan_when_means_coincide() -> None:
    M = torch.eye(3, dtype=torch.float64)
    y = torch.arange(3).repeat_interleave(4)
    assert collapse.cdnv(M[:, y], y, 3) == 0.0
    assert math.isnan(collapse.cdnv(torch.ones(2, 12, dtype=torch.float64), y, 3))


def test_nc4_matches_numpy() -> None:
    H, y, K = _features(1)
    g = np.random.default_rng(5)
    pred = np.where(g.random(y.size) < 0.3, g.integers(0, K, y.size), y)
    means = np.stack([H[:, y == c].mean(1) for c in range(K)], 1)
    nearest = np.argmin(((H[:, :, None] - means[:, None, :]) ** 2).sum(0), 1)
    ref = float(np.mean(nearest == pred))
    Ht = torch.from_numpy(H)
    got = collapse.nc4(Ht, torch.from_numpy(pred), collapse.class_means(Ht, torch.from_numpy(y), K))
    assert got == ref and 0.3 < ref < 1.0


def test_weight_esd_counts_planted_spikes() -> None:
    g = torch.Generator().manual_seed(0)
    d_out, d_in, K = 120, 200, 5
    noise = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) * 0.1
    U, _ = torch.linalg.qr(torch.randn(d_out, K, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d_in, K, generator=g, dtype=torch.float64))
    spiked = noise + 10.0 * U @ V.T
    esd = weights.weight_esd(spiked, K)
    assert esd["spikes"] == K
    assert abs(esd["noise_scale"] - 0.1) < 0.01  # the bulk's σ, not the spikes'
    # pure noise: the edge sits just above the largest singular value (MP, finite size)
    pure = weights.weight_esd(noise, K)
    s = pure["singular_values"]
    assert len(s) == d_out and pure["spikes"] <= K
    assert 0.9 * s[K] < pure["bulk_edge"] < 1.2 * s[0]


def test_weight_esd_without_bulk() -> None:
    esd = weights.weight_esd(torch.randn(10, 4, dtype=torch.float64), 10)
    assert esd["bulk_edge"] is None and esd["spikes"] is None and len(esd["singular_values"]) == 4
