"""Orthonormal bases and principal angles (dufm_core.subspaces)."""

from __future__ import annotations

import math

import torch

from dufm_core.subspaces import orthonormal_basis, subspace_angles


def test_subspace_angles_small_and_large() -> None:
    """Sine/cosine combination is accurate at tiny and right angles."""
    e = torch.eye(3, dtype=torch.float64)
    eps = 1e-12
    A = e[:, :2]
    B = torch.stack([e[:, 0], math.cos(eps) * e[:, 1] + math.sin(eps) * e[:, 2]], 1)
    ang = subspace_angles(A, B)
    torch.testing.assert_close(
        ang, torch.tensor([0.0, eps], dtype=torch.float64), atol=1e-20, rtol=1e-6
    )
    ang = subspace_angles(e[:, :1], e[:, 1:])
    torch.testing.assert_close(ang, torch.tensor([math.pi / 2], dtype=torch.float64))


def test_orthonormal_basis_keeps_the_numerical_rank() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    Q = orthonormal_basis(torch.cat([X, X[:, :1] + X[:, 1:2]], dim=1))  # rank 3 of 4 columns
    assert Q.shape == (7, 3)
    torch.testing.assert_close(Q.T @ Q, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(Q @ (Q.T @ X), X)  # spans the same space
    assert orthonormal_basis(torch.zeros(5, 2)).shape == (5, 0)
    assert orthonormal_basis(torch.zeros(5, 0)).shape == (5, 0)
