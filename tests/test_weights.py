"""Weight structure (docs/theory.md §4.4, §6.4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from dufm_core.alignment import layer_means
from dufm_core.collapse import effective_rank
from dufm_core.weights import layer_weight_report, weight_report
from tests.test_alignment import CASES, RELU_G, make_model, prediction


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_at_linear_optimum(case: str) -> None:
    model, cfg = make_model(CASES[case], init="optimum")
    pred = prediction(cfg)
    K = cfg.K
    for l in range(1, cfg.depth + 1):
        rep = layer_weight_report(model, l)
        json.dumps(rep)
        sig = pred.sigma[l - 1]
        s = np.array(rep["singular_values"])
        np.testing.assert_allclose(s[:K], sig, rtol=1e-10)
        assert np.all(s[K:] < 1e-13 * sig)
        for key in ("right_capture", "left_capture"):
            np.testing.assert_allclose(rep[key], 1.0, atol=1e-10)
        for key in ("right_angles", "left_angles"):
            assert len(rep[key]) == K and max(rep[key]) < 1e-7
        assert rep["dnc3_cos"] == pytest.approx(1.0, abs=1e-12)
        assert rep["nc3"] < 1e-20
        assert rep["threshold_rank"] == K
        assert rep["effective_rank"] == pytest.approx(K, rel=1e-10)
        assert rep["stable_rank"] == pytest.approx(K, rel=1e-10)
        gram = np.array(rep["gram_eigenvalues"])
        assert gram.shape == (K + 1,)
        np.testing.assert_allclose(gram[:K], pred.weight_gram_eigs[l - 1], rtol=1e-10)
        assert gram[K] < 1e-20


def test_weights_at_relu_dnc_point() -> None:
    model, cfg = make_model(RELU_G, init="optimum", activation="relu")
    pred = prediction(cfg)
    for l in range(1, cfg.depth + 1):
        rep = layer_weight_report(model, l)
        np.testing.assert_allclose(rep["singular_values"][: cfg.K], pred.sigma[l - 1], rtol=1e-10)
        assert rep["dnc3_cos"] == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(rep["right_capture"], 1.0, atol=1e-10)


def test_weight_report_matches_direct_computation() -> None:
    model, cfg = make_model(CASES["E"], init="random", seed=4)
    K = cfg.K
    for l in range(1, cfg.depth + 1):
        M_out, M_in = layer_means(model, l)
        W = model.weights[l - 1].detach()
        rep = weight_report(W, M_in, M_out, K)
        Wn = W.numpy()
        U, s, Vh = np.linalg.svd(Wn, full_matrices=False)
        np.testing.assert_allclose(rep["singular_values"], s, rtol=1e-12)
        Qin = scipy.linalg.orth(M_in.numpy())
        Qout = scipy.linalg.orth(M_out.numpy())
        right, left = Vh[:K].T, U[:, :K]
        cap_r = np.sum((Qin @ Qin.T @ right) ** 2, axis=0)
        cap_l = np.sum((Qout @ Qout.T @ left) ** 2, axis=0)
        np.testing.assert_allclose(rep["right_capture"], cap_r, atol=1e-12)
        np.testing.assert_allclose(rep["left_capture"], cap_l, atol=1e-12)
        np.testing.assert_allclose(
            rep["right_angles"], np.sort(scipy.linalg.subspace_angles(right, Qin)), atol=1e-10
        )
        np.testing.assert_allclose(
            rep["left_angles"], np.sort(scipy.linalg.subspace_angles(left, Qout)), atol=1e-10
        )
        mu_o = M_out.numpy() / np.linalg.norm(M_out.numpy(), axis=0)
        mu_i = M_in.numpy() / np.linalg.norm(M_in.numpy(), axis=0)
        T = mu_o @ mu_i.T
        cos = np.sum(Wn * T) / (np.linalg.norm(Wn) * np.linalg.norm(T))
        assert rep["dnc3_cos"] == pytest.approx(cos, rel=1e-12)
        gram = np.sort(np.linalg.eigvalsh(Wn.T @ Wn))[::-1]
        m = min(K + 1, gram.size)
        np.testing.assert_allclose(rep["gram_eigenvalues"][:m], gram[:m], rtol=1e-10, atol=1e-14)
        assert rep["effective_rank"] == pytest.approx(effective_rank(torch.from_numpy(s)))
        assert rep["stable_rank"] == pytest.approx(float(np.sum(s**2) / s[0] ** 2))
        assert rep["frobenius_norm"] == pytest.approx(float(np.linalg.norm(Wn)))


def test_weight_report_zero_matrix() -> None:
    W = torch.zeros(4, 5, dtype=torch.float64)
    M = torch.eye(5, 3, dtype=torch.float64)
    rep = weight_report(W, M, torch.eye(4, 3, dtype=torch.float64), 3)
    json.dumps(rep)
    assert math.isnan(rep["dnc3_cos"]) and rep["threshold_rank"] == 0
