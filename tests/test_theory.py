"""Tests for dufm_core.theory: the golden numbers of docs/theory.md §8 and independent dense checks.

Golden numbers are compared at rtol 1e-9, or at the precision the document prints when it prints
fewer digits (half a unit of the last printed digit): see ``assert_printed``.

The dense checks build the optimum from random orthonormal frames in float64 on tiny models and
compare the closed forms with autograd (torch.func) gradients and Hessians. torch is used only here.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pytest
import torch

from dufm_core import theory as th


@pytest.fixture(autouse=True)
def _float64_default():
    """Dense references in float64; restored after each test (it is process-wide)."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


# --------------------------------------------------------------------------- helpers
def assert_printed(actual: float, printed: str, rtol: float = 1e-9) -> None:
    """|actual − printed| must be within rtol·|printed| or half a unit of the last printed
    digit, whichever is larger (a printed value is the truth rounded to that digit)."""
    value = float(printed)
    half_unit = 0.5 * 10.0 ** Decimal(printed).as_tuple().exponent
    tol = max(rtol * abs(value), half_unit * (1 + 1e-9))
    assert abs(actual - value) <= tol, f"{actual!r} vs printed {printed} (tol {tol:.3g})"


def assert_outliers(values, expected: list[tuple[str, int]]) -> None:
    """``values`` (descending) must be the printed groups with their multiplicities."""
    values = list(values)
    assert len(values) == sum(m for _, m in expected)
    i = 0
    for printed, mult in expected:
        for v in values[i : i + mult]:
            assert_printed(v, printed)
        i += mult


def frame(rng: np.random.Generator, d: int, k: int) -> torch.Tensor:
    """Random orthonormal k-frame in R^d (d × k)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return torch.tensor(q)


def labels_onehot(K: int, n: int) -> torch.Tensor:
    return torch.kron(torch.eye(K), torch.ones(1, n))  # Y = I_K ⊗ 1_nᵀ


def build_linear_optimum(pred: th.Prediction, widths, seed: int = 0):
    """H_1 = s U_1 ⊗ 1ᵀ, W_l = σ_l U_{l+1} U_lᵀ with random frames (U_{L+1} = I_K)."""
    rng = np.random.default_rng(seed)
    K, n, L = pred.K, pred.n, pred.L
    frames = [frame(rng, d, K) for d in widths] + [torch.eye(K)]
    H1 = pred.s * frames[0] @ labels_onehot(K, n)
    Ws = [pred.sigma[l] * frames[l + 1] @ frames[l].T for l in range(L)]
    return H1, Ws, frames


def mse_fit(H1, Ws, Y):
    Z = H1
    for W in Ws:
        Z = W @ Z
    return ((Z - Y) ** 2).sum() / (2 * Y.shape[1])


def reg(H1, Ws, lam_w, lam_h):
    out = 0.5 * lam_h * (H1**2).sum()
    for W, lam in zip(Ws, lam_w, strict=True):
        out = out + 0.5 * lam * (W**2).sum()
    return out


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(theta: torch.Tensor, shapes) -> list[torch.Tensor]:
    out, i = [], 0
    for shp in shapes:
        size = math.prod(shp)
        out.append(theta[i : i + size].reshape(shp))  # row-major, as docs/theory.md requires
        i += size
    return out


def dense_hessian(fn, tensors) -> np.ndarray:
    """Dense Hessian of fn(*tensors) with respect to all of ``tensors`` (row-major vec)."""
    shapes = [t.shape for t in tensors]
    hess = torch.func.jacrev(torch.func.jacrev(lambda th: fn(*unflat(th, shapes))))(flat(tensors))
    return hess.detach().numpy()


def spectrum_from_groups(groups) -> np.ndarray:
    return np.sort(np.concatenate([np.full(m, v) for v, m in groups]))


# --------------------------------------------------------------------------- Case A (§8)
CASE_A = dict(K=3, n=40, lam_w=[0.01] * 5, lam_h=0.01)


def test_case_a_threshold_and_optimum():
    p = th.predict(**CASE_A)
    assert p.nontrivial
    assert p.threshold_lhs == pytest.approx(3**6 * 40 * 1e-12, rel=1e-12)
    assert_printed(p.threshold_lhs, "2.916e-8", rtol=1e-12)
    assert p.threshold_rhs == pytest.approx(4**4 / 5**10, rel=1e-12)
    assert_printed(p.threshold_rhs, "2.62144e-5", rtol=1e-12)
    lhs, rhs = th.threshold_paper_form(**CASE_A)
    assert_printed(lhs, "0.0103714")
    assert_printed(rhs, "0.0404191")
    assert_printed(p.lambda_crit, "0.03106648")
    assert_printed(p.gamma, "0.9422774667")
    # γ solves γ⁴(1−γ)⁶ = 2.916e-8
    assert p.gamma**4 * (1 - p.gamma) ** 6 == pytest.approx(2.916e-8, rel=1e-12)
    for x in p.weight_gram_eigs:
        assert_printed(x, "1.8130214144")
    for x in p.sigma:
        assert_printed(x, "1.3464848363")
    assert_printed(p.s, "0.2128979459")
    for x, printed in zip(
        p.mean_norms,
        ["0.2128979", "0.2866639", "0.3859885", "0.5197277", "0.6998055", "0.9422775"],
        strict=True,
    ):
        assert_printed(x, printed)
    assert p.mean_norms[-1] == p.gamma
    assert_printed(p.fit, "0.0016659454")
    assert_printed(p.reg, "0.1631719273")
    assert_printed(p.loss, "0.1648378727")
    assert_printed(p.loss, "0.16483787272447786")  # the reproduction's value, rtol 1e-9


def test_case_a_hessians_gradient_weights():
    p = th.predict(**CASE_A)
    for x in p.layer_outlier:
        assert_printed(x, "0.1632425698")
    for x in p.layer_outlier_total:
        assert_printed(x, "0.1732425698")
    assert_printed(th.small_lambda_limits(3, 40, 5)["layer_outlier"], "0.1802473")
    assert p.gn_split_ranks == (0, 6, 3)
    assert p.gradient_coefficients == [[1 / 3, 0, 0], [0, 1 / 3, 0], [0, 0, 1 / 3]]
    for x, printed in zip(
        p.gradient_beta, ["-0.66188", "-0.36507", "-0.20136", "-0.11106", "-0.06126"], strict=True
    ):
        assert_printed(x, printed)
    for x, sig in zip(p.gradient_normalised, p.sigma, strict=True):
        assert_printed(x, "-0.040395")
        assert x == pytest.approx(-3 * 0.01 * sig, rel=1e-12)  # = −Kλσ
    assert_printed(p.full_gn_outlier, "0.8162128489")
    assert p.rho == pytest.approx(0.04, rel=1e-12)
    assert_outliers(p.full_outliers, [("0.8562128489", 3), ("0.7762128489", 6)])
    assert_outliers(p.full_outliers_first_order, [("0.8562128489", 3), ("0.7762128489", 6)])
    assert_outliers(p.full_outliers_total, [("0.8662128", 3), ("0.7862128", 6)])
    assert_outliers(p.full_outliers_with_features, [("1.0294554", 3), ("0.9294554", 6)])
    assert_printed(p.h1_outlier, "0.1632426")
    # bulk of the full weight Hessian in [−0.01, 0.01]; total bulk in [0, 0.02]
    for total, (lo, hi) in [(False, (-0.01, 0.01)), (True, (0.0, 0.02))]:
        spec = th.hessian_spectrum(**CASE_A, widths=60, total=total)
        bulk = [v for v, _ in spec if v < 0.5]
        assert min(bulk) >= lo - 1e-15 and max(bulk) <= hi + 1e-15
    # with H_1 (total: +0.01)
    spec = th.hessian_spectrum(**CASE_A, widths=60, include_features=True)
    assert_printed(spec[0][0], "1.0294554")
    assert spec[0][1] == 3
    assert_printed(spec[1][0], "0.9294554")
    assert spec[1][1] == 6
    assert_printed(spec[2][0], "0.1632426")
    assert spec[2][1] == 3 * (120 - 3)
    tot = th.hessian_spectrum(**CASE_A, widths=60, include_features=True, total=True)
    assert tot[0][0] == pytest.approx(spec[0][0] + 0.01, rel=1e-12)
    assert tot[1][0] == pytest.approx(spec[1][0] + 0.01, rel=1e-12)
    # layer spectra: 9 outliers, 3591 zeros for l ≤ 4, 171 for l = 5
    assert th.layer_hessian_spectrum(**CASE_A, layer=3, width_in=60, width_out=60)[1] == (0.0, 3591)
    last = th.layer_hessian_spectrum(**CASE_A, layer=5, width_in=60)
    assert last[0][1] == 9 and last[1] == (0.0, 171)


# --------------------------------------------------------------------------- Cases B–H (§8)
def test_case_b():
    p = th.predict(4, 10, [1e-3] * 4, 1e-3)
    assert p.threshold_lhs == pytest.approx(1.024e-11, rel=1e-12)
    assert_printed(p.threshold_rhs, "4.119873e-4")
    assert_printed(p.lambda_crit, "0.03318309")
    assert_printed(p.gamma, "0.9936360967")
    assert_printed(p.sigma[0], "1.2573189814")
    assert_printed(p.weight_gram_eigs[0], "1.5808510209")
    assert_printed(p.s, "0.3975991727")
    assert_printed(p.loss, "0.0158287598")
    assert_printed(p.fit, "2.02496e-5")
    for x in p.layer_outlier:
        assert_printed(x, "0.1561362645")
    assert_printed(p.full_gn_outlier, "0.6245450580")
    assert p.rho == pytest.approx(0.003, rel=1e-12)
    assert_outliers(p.full_outliers, [("0.6275450580", 6), ("0.6215450580", 10)])


def test_case_c_classic_ufm():
    p = th.predict(4, 10, [5e-3], 5e-3)
    assert p.gamma == pytest.approx(1 - 4 * math.sqrt(10 * 2.5e-5), rel=1e-14)
    assert_printed(p.gamma, "0.9367544468")
    assert_printed(p.weight_gram_eigs[0], "2.9622776602")
    assert_printed(p.s, "0.5442681012")
    assert_printed(p.loss, "0.0612455532")
    assert_outliers(p.full_outliers, [("0.0740569415", 16)])  # no cross-layer split
    assert p.rho == 0.0
    assert p.rho_with_features == pytest.approx(0.005, rel=1e-12)
    assert_outliers(p.full_outliers_with_features, [("0.15311388", 6), ("0.14311388", 10)])


def test_case_d():
    p = th.predict(10, 5, [1e-3] * 2, 1e-3)
    assert_printed(p.gamma, "0.9828010687")
    assert_printed(p.sigma[0], "1.3001203041")
    assert_printed(p.s, "0.5814314758")
    assert_printed(p.loss, "0.0255025937")
    assert_outliers(p.layer_outlier, [("0.0571431476", 2)])
    lc = th.lambda_crit(10, 5, 2)
    assert_printed(lc, "0.02320794")
    g = th.gamma(10, 5, (1 - 1e-10) * lc, (1 - 1e-10) * lc, L=2)
    assert abs(g - 0.5) < 1e-8  # γ_crit = (L−1)/L


CASE_E = dict(K=3, n=4, lam_w=[0.01, 0.02, 0.005], lam_h=0.01)


def test_case_e_unequal_lambda():
    p = th.predict(**CASE_E)
    assert p.lambda_crit is None
    assert_printed(p.gamma, "0.9566223530")
    for x, printed in zip(p.sigma, ["1.1760956132", "0.8316251834", "1.6632503668"], strict=True):
        assert_printed(x, printed)
    assert_printed(p.s, "0.5880478066")
    assert_printed(p.loss, "0.0839328636")
    for x, printed in zip(
        p.layer_outlier, ["0.2205334819", "0.4410669638", "0.1102667410"], strict=True
    ):
        assert_printed(x, printed)
    assert_printed(p.h1_outlier, "0.2205334819")
    for x, printed in zip(
        p.weight_gram_eigs, ["1.3832008914", "0.6916004457", "2.7664017828"], strict=True
    ):
        assert_printed(x, printed)
    assert_printed(p.full_gn_outlier, "0.7718671867")
    assert p.rho == pytest.approx((0.035**2 - 0.000525) / 0.035, rel=1e-12)
    assert p.rho == pytest.approx(0.02, rel=1e-12)
    assert_outliers(p.full_outliers, [("0.79191161", 3), ("0.75191546", 6)])
    assert_outliers(p.full_outliers_first_order, [("0.791867", 3), ("0.751867", 6)])


def test_case_f_threshold_behaviour():
    K, n, L = 3, 40, 5
    lc = th.lambda_crit(K, n, L)
    lam = 0.999999 * lc
    g = th.gamma(K, n, lam, lam, L=L)
    assert_printed(g, "0.8000002")
    assert th.is_nontrivial(K, n, lam, lam, L=L)
    dphi = th.phi(g, K, n, lam, lam, L=L) - th.phi(0.0, K, n, lam, lam, L=L)
    assert_printed(dphi, "-1.6e-7")
    above = 1.000001 * lc
    assert th.gamma(K, n, above, above, L=L) == 0.0
    assert not th.is_nontrivial(K, n, above, above, L=L)
    assert th.predict(K, n, above, above, L=L).loss == 0.5


def test_case_g_relu_values():
    vals = th.relu_layer_eigenvalues(3, 4, 0.01, 0.01, 0.5, L=4)
    star = vals[0][0]
    assert_printed(star, "0.236418")
    for layer, printed in [(0, "0.003694"), (1, "0.014776"), (2, "0.059104")]:
        assert vals[layer][:3] == [star] * 3
        for x in vals[layer][3:]:
            assert_printed(x, printed)
    assert vals[3] == [star] * 9
    tau0 = th.relu_layer_eigenvalues(3, 4, 0.01, 0.01, 0.0, L=4)
    assert [sum(x > 0 for x in layer) for layer in tau0] == [3, 3, 3, 9]
    tau1 = th.relu_layer_eigenvalues(3, 4, 0.01, 0.01, 1.0, L=4)
    lin = th.predict(3, 4, 0.01, 0.01, L=4).layer_outlier
    assert tau1 == [[x] * 9 for x in lin]


def test_case_h_cross_entropy_values():
    alpha = th.ce_alpha(1.3, 3, 3)
    assert alpha == pytest.approx(1.3**4 / math.sqrt(3), rel=1e-15)
    assert_printed(alpha, "1.6489701")
    eig = th.ce_layer_eigenvalues(4, 3, 3, 1.3)
    assert [m for _, m in eig] == [1, 3, 5]
    for (v, _), printed in zip(eig, ["0.1244166", "0.0992921", "0.0490432"], strict=True):
        assert_printed(v, printed)
    a_star = th.ce_optimal_alpha(3, 10, 2, 1e-3)
    assert_printed(a_star, "6.7757296")
    assert_printed(th.ce_loss(3, 10, 2, 1e-3, a_star), "0.0254230")
    # stationarity equation α/(e^α+K−1) = λ(α√n)^{2/(L+1)}
    lhs = a_star / (math.exp(a_star) + 2)
    assert lhs == pytest.approx(1e-3 * (a_star * math.sqrt(10)) ** (2 / 3), rel=1e-12)
    eig = th.ce_optimal_layer_eigenvalues(3, 10, 2, 1e-3)
    assert [m for _, m in eig] == [1, 2, 1]
    for (v, _), printed in zip(eig, ["0.0067603", "0.0045094", "0.0022586"], strict=True):
        assert_printed(v, printed)


# --------------------------------------------------------------------------- identities
@pytest.mark.parametrize(
    "args",
    [(3, 40, [0.01] * 5, 0.01), (4, 10, [1e-3] * 4, 1e-3), (3, 4, [0.01, 0.02, 0.005], 0.01)],
)
def test_closed_form_identities(args):
    K, n, lam_w, lam_h = args
    p = th.predict(*args)
    L, g = p.L, p.gamma
    prod = n * lam_h * math.prod(lam_w)
    for lam, sig, out in zip(lam_w, p.sigma, p.layer_outlier, strict=True):
        assert out == pytest.approx(g**2 / (K * sig**2), rel=1e-12)
        equiv = lam * g ** (2 * L / (L + 1)) / (K * prod ** (1 / (L + 1)))
        assert out == pytest.approx(equiv, rel=1e-12)
        assert sig**2 == pytest.approx(lam_h / lam * n * p.s**2, rel=1e-12)  # Thm 4.4 form
    for i in range(L):
        assert p.mean_norms[i + 1] == pytest.approx(p.sigma[i] * p.mean_norms[i], rel=1e-12)
    assert p.loss == pytest.approx(K * th.phi(g, K, n, lam_w, lam_h), rel=1e-12)
    assert p.full_gn_outlier == pytest.approx(sum(p.layer_outlier), rel=1e-12)
    assert p.full_outliers[0] >= p.full_outliers[-1]
    d = p.to_dict()
    json.dumps(d)
    for key in ["gamma", "lambda_crit", "nontrivial", "loss", "layer_outlier", "full_outliers"]:
        assert key in d
    assert isinstance(d["layer_outlier"], list) and len(d["full_outliers"]) == K * K


def test_equal_lambda_split_is_exact_and_unequal_is_second_order():
    for K, n, L, lam in [(3, 40, 5, 0.01), (4, 10, 4, 1e-3), (5, 3, 3, 0.02)]:
        p = th.predict(K, n, lam, lam, L=L)
        np.testing.assert_allclose(p.full_outliers, p.full_outliers_first_order, rtol=1e-12)
        np.testing.assert_allclose(
            p.full_outliers_with_features, p.full_outliers_with_features_first_order, rtol=1e-12
        )
    # Unequal: the first-order values are Rayleigh quotients on the GN eigenvector, so they lie
    # below the exact top eigenvalues, by an amount quadratic in the spread of the λ's.
    base = np.array([0.01, 0.02, 0.005])
    gaps = []
    for eps in [0.1, 0.05, 0.025]:
        lam_w = list(0.01 + eps * (base - 0.01))
        p = th.predict(3, 4, lam_w, 0.01)
        diff = np.array(p.full_outliers) - np.array(p.full_outliers_first_order)
        assert np.all(diff > 0)
        gaps.append(diff[0])
    assert gaps[1] / gaps[0] == pytest.approx(0.25, rel=0.02)
    assert gaps[2] / gaps[1] == pytest.approx(0.25, rel=0.02)


def test_trivial_prediction_is_zero():
    p = th.predict(3, 40, 0.05, 0.05, L=5)
    assert not p.nontrivial and p.gamma == 0.0
    assert (p.loss, p.fit, p.reg) == (0.5, 0.5, 0.0)
    assert p.s == 0.0 and set(p.sigma) == {0.0} and set(p.full_outliers) == {0.0}
    assert set(p.layer_outlier) == {0.0} and p.h1_outlier == 0.0
    json.dumps(p.to_dict())
    assert th.relu_layer_eigenvalues(3, 40, 0.05, 0.05, 0.5, L=5) == [[0.0] * 9] * 5


# --------------------------------------------------------------------------- γ robustness
def test_near_critical_and_monotone():
    for K, n, L in [(3, 40, 5), (10, 5, 2), (4, 10, 4), (2, 1, 8)]:
        lc = th.lambda_crit(K, n, L)
        below = th.gamma(K, n, (1 - 1e-6) * lc, (1 - 1e-6) * lc, L=L)
        crit = (L - 1) / L
        assert crit < below < crit + 1e-5
        assert th.gamma(K, n, (1 + 1e-6) * lc, (1 + 1e-6) * lc, L=L) == 0.0
        assert th.gamma(K, n, lc * (1 + 1e-15), lc * (1 + 1e-15), L=L) in (0.0, pytest.approx(crit))
        grid = lc * np.linspace(1e-4, 1 - 1e-9, 2001)
        gs = np.array([th.gamma(K, n, x, x, L=L) for x in grid])
        assert np.all(np.diff(gs) < 0)  # strictly decreasing in λ
        assert np.abs(np.diff(gs)).max(initial=0.0) < 2e-3  # continuous on a fine grid
        assert gs[-1] == pytest.approx(crit, abs=1e-7)
        # every root satisfies its equation in log form
        for x, g in zip(grid[::200], gs[::200], strict=True):
            lhs = th.threshold_lhs(K, n, x, x, L=L)
            t = th.one_minus_gamma(K, n, x, x, L=L)
            assert t == pytest.approx(1 - g, abs=1e-15)
            res = (L - 1) * math.log1p(-t) + (L + 1) * math.log(t) - math.log(lhs)
            assert abs(res) < 1e-13


def test_tiny_lambda_keeps_precision():
    K, n, L, lam = 3, 40, 5, 1e-9
    t = th.one_minus_gamma(K, n, lam, lam, L=L)
    # t solves (1−t)^{L−1} t^{L+1} = lhs; check in relative terms
    lhs = th.threshold_lhs(K, n, lam, lam, L=L)
    assert (1 - t) ** (L - 1) * t ** (L + 1) == pytest.approx(lhs, rel=1e-13)
    assert t / lam == pytest.approx(K * n ** (1 / (L + 1)), rel=1e-6)  # small-λ law
    p = th.predict(K, n, lam, lam, L=L)
    assert p.layer_outlier[0] == pytest.approx(th.small_lambda_limits(K, n, L)["layer_outlier"],
                                               rel=1e-6)  # fmt: skip
    assert p.fit == pytest.approx(0.5 * t * t, rel=1e-14)


def test_l1_closed_form():
    for K, n, lw, lh in [(4, 10, 5e-3, 5e-3), (2, 7, 0.03, 0.001), (10, 1, 0.01, 0.05)]:
        t = K * math.sqrt(n * lw * lh)
        g = th.gamma(K, n, [lw], lh)
        assert g == pytest.approx(max(0.0, 1 - t), rel=1e-15, abs=0)
        assert th.is_nontrivial(K, n, [lw], lh) == (t < 1)
        assert th.threshold_rhs(1) == 1.0
    assert th.gamma(2, 1, [1.0], 0.25) == 0.0  # K√(nλλ) = 1 exactly: equality is trivial
    assert th.stationary_gammas(4, 10, [5e-3], 5e-3) == (pytest.approx(0.9367544468, rel=1e-9),)


def test_nontrivial_agrees_with_phi():
    rng = np.random.default_rng(1)
    for _ in range(300):
        L = int(rng.integers(1, 7))
        K, n = int(rng.integers(2, 11)), int(rng.integers(1, 50))
        scale = th.lambda_crit(K, n, L) * math.exp(rng.uniform(-1.0, 0.6))
        lam_w = list(scale * np.exp(rng.uniform(-0.5, 0.5, L)))
        lam_h = scale * math.exp(rng.uniform(-0.5, 0.5))
        nt = th.is_nontrivial(K, n, lam_w, lam_h)  # raises if the φ cross-check disagrees
        roots = th.stationary_gammas(K, n, lam_w, lam_h)
        g = th.gamma(K, n, lam_w, lam_h)
        if nt:
            assert g > (L - 1) / L and g == pytest.approx(roots[-1], rel=1e-12)
            assert th.phi(g, K, n, lam_w, lam_h) < th.phi(0, K, n, lam_w, lam_h)
        else:
            assert g == 0.0
            if roots:  # a non-zero local minimum exists, but it is worse than zero
                assert th.phi(roots[-1], K, n, lam_w, lam_h) >= th.phi(0, K, n, lam_w, lam_h)
        assert th.critical_scale(K, n, lam_w, lam_h) > 1 or not nt


def test_input_validation():
    with pytest.raises(ValueError, match="lam_w has 2 entries but L = 3"):
        th.predict(3, 4, [0.01, 0.02], 0.01, L=3)
    with pytest.raises(ValueError, match="give the depth L"):
        th.gamma(3, 4, 0.01, 0.01)
    with pytest.raises(ValueError, match="lam_w is empty"):
        th.threshold_lhs(3, 4, [], 0.01)
    with pytest.raises(ValueError, match="> 0"):
        th.predict(3, 4, [0.01, -0.02], 0.01)
    with pytest.raises(ValueError, match="K must be"):
        th.lambda_crit(0, 4, 2)
    with pytest.raises(ValueError, match="lam_w has 5 entries but L = 4"):
        th.relu_layer_eigenvalues(3, 4, [0.01] * 5, 0.01, 0.5, L=4)
    with pytest.raises(ValueError, match="width d_l must be >= K"):
        th.hessian_spectrum(3, 4, [0.01] * 2, 0.01, widths=[3, 2])


# --------------------------------------------------------------------------- dense: linear MSE
DENSE_CASES = {
    "A": (CASE_A, (4, 5, 3, 4, 6)),
    "B": (dict(K=4, n=10, lam_w=[1e-3] * 4, lam_h=1e-3), (5, 4, 6, 5)),
    "C": (dict(K=4, n=10, lam_w=[5e-3], lam_h=5e-3), (5,)),
    "E": (CASE_E, (6, 6, 6)),
}


@pytest.mark.parametrize("name", list(DENSE_CASES))
def test_dense_linear_optimum(name):
    case, widths = DENSE_CASES[name]
    p = th.predict(**case)
    K, n, L = p.K, p.n, p.L
    Y = labels_onehot(K, n)
    H1, Ws, frames = build_linear_optimum(p, widths, seed=len(name) + ord(name))
    params = [t.clone().requires_grad_(True) for t in [H1, *Ws]]

    def total(h, *ws):
        return mse_fit(h, list(ws), Y) + reg(h, list(ws), p.lam_w, p.lam_h)

    loss = total(*params)
    grads = torch.autograd.grad(loss, params)
    assert float(flat(grads).detach().norm()) <= 1e-12
    assert float(loss.detach()) == pytest.approx(p.loss, rel=1e-12)
    assert float(mse_fit(H1, Ws, Y)) == pytest.approx(p.fit, rel=1e-10)
    # balancedness: λ_{l+1} W_{l+1}ᵀW_{l+1} = λ_l W_l W_lᵀ and λ_1 W_1ᵀW_1 = λ_H H_1H_1ᵀ
    assert float((p.lam_w[0] * Ws[0].T @ Ws[0] - p.lam_h * H1 @ H1.T).abs().max()) < 1e-15
    for l in range(L - 1):
        diff = p.lam_w[l + 1] * Ws[l + 1].T @ Ws[l + 1] - p.lam_w[l] * Ws[l] @ Ws[l].T
        assert float(diff.abs().max()) < 1e-15

    # per-layer fit Hessian, fit gradient structure, weight Gram
    means = [frames[0] * p.s]
    for l in range(L):
        means.append(Ws[l] @ means[-1])  # μ^{(l+1)} = W_l μ^{(l)}, columns = classes
    for l in range(L):

        def fit_l(w, l=l):
            return mse_fit(H1, [*Ws[:l], w, *Ws[l + 1 :]], Y)

        ev = np.linalg.eigvalsh(dense_hessian(fit_l, [Ws[l]]))
        np.testing.assert_allclose(ev[-K * K :], p.layer_outlier[l], rtol=1e-9)
        assert np.abs(ev[: -K * K]).max(initial=0.0) < 1e-12
        w = Ws[l].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fit_l(w), w)
        expected = (p.gradient_beta[l] / K) * means[l + 1] @ means[l].T
        assert float((g - expected).abs().max()) < 1e-14
        # gradient coefficient matrix C_cc' in the natural basis = I/K
        b = torch.stack([torch.outer(means[l + 1][:, a], means[l][:, c]).reshape(-1)
                         for a in range(K) for c in range(K)])  # fmt: skip
        b = b / b.norm(dim=1, keepdim=True)
        C = ((b @ g.reshape(-1)) ** 2 / g.norm() ** 2).reshape(K, K).numpy()
        np.testing.assert_allclose(C, np.array(p.gradient_coefficients), atol=1e-12)
        gram = np.linalg.eigvalsh((Ws[l].T @ Ws[l]).numpy())
        np.testing.assert_allclose(gram[-K:], p.weight_gram_eigs[l], rtol=1e-12)
        assert np.abs(gram[:-K]).max(initial=0.0) < 1e-12

    # full weight Hessian: whole spectrum (fit and total) against the closed form
    for tot in (False, True):

        def fn(*ws, tot=tot):
            out = mse_fit(H1, list(ws), Y)
            return out + reg(H1 * 0, list(ws), p.lam_w, p.lam_h) if tot else out

        ev = np.linalg.eigvalsh(dense_hessian(fn, Ws))
        pred = p.full_outliers_total if tot else p.full_outliers
        np.testing.assert_allclose(ev[::-1][: K * K], pred, rtol=1e-9)
        spec = spectrum_from_groups(th.hessian_spectrum(**case, widths=widths, total=tot))
        np.testing.assert_allclose(ev, spec, rtol=0, atol=1e-12)

    # H_1 block: K·N eigenvalues λ_H γ/(1−γ)
    ev = np.linalg.eigvalsh(dense_hessian(lambda h: mse_fit(h, Ws, Y), [H1]))
    np.testing.assert_allclose(ev[-K * K * n :], p.h1_outlier, rtol=1e-9)
    assert np.abs(ev[: -K * K * n]).max(initial=0.0) < 1e-12


@pytest.mark.parametrize("name", ["A", "C", "E"])
def test_dense_full_hessian_with_features(name):
    case, widths = DENSE_CASES[name]
    p = th.predict(**case)
    K, n = p.K, p.n
    Y = labels_onehot(K, n)
    H1, Ws, _ = build_linear_optimum(p, widths, seed=7)
    ev = np.linalg.eigvalsh(dense_hessian(lambda h, *ws: mse_fit(h, list(ws), Y), [H1, *Ws]))
    np.testing.assert_allclose(ev[::-1][: K * K], p.full_outliers_with_features, rtol=1e-9)
    spec = th.hessian_spectrum(**case, widths=widths, include_features=True)
    np.testing.assert_allclose(ev, spectrum_from_groups(spec), rtol=0, atol=1e-12)


def test_gn_split_ranks_case_a():
    """G_class = Aᵀ(11ᵀ/K)A ⊗ Σ̂ and G_cross = AᵀSA ⊗ Σ̂ (docs/theory.md §4.2) at layer 3."""
    p = th.predict(**CASE_A)
    K, n = 3, 40
    H1, Ws, _ = build_linear_optimum(p, (6, 6, 6, 6, 6), seed=3)
    l = 2  # layer 3
    A = torch.eye(K)
    for W in Ws[l + 1 :][::-1]:
        A = A @ W
    Hl = H1
    for W in Ws[:l]:
        Hl = W @ Hl
    A, Sig = A.numpy(), (Hl @ Hl.T).numpy() / (K * n)
    S = np.eye(K) - 1.0 / K
    g_class = np.kron(A.T @ (np.ones((K, K)) / K) @ A, Sig)
    g_cross = np.kron(A.T @ S @ A, Sig)
    for G, rank in [(g_class, 3), (g_cross, 6)]:
        ev = np.linalg.eigvalsh(G)
        np.testing.assert_allclose(ev[-rank:], p.layer_outlier[l], rtol=1e-9)
        assert np.abs(ev[:-rank]).max(initial=0.0) < 1e-12
    assert np.abs(g_class @ g_cross).max(initial=0.0) < 1e-14  # orthogonal images
    assert p.gn_split_ranks == (0, 6, 3)


# --------------------------------------------------------------------------- dense: ReLU (Case G)
def relu_tau(x: torch.Tensor, tau: float) -> torch.Tensor:
    """ReLU with σ'(0) = τ and σ'' = 0: value relu(x), slope 1{x>0} + τ·1{x=0}."""
    at_zero = (x.detach() == 0).to(x.dtype)
    return torch.relu(x) + tau * at_zero * (x - x.detach())


def relu_forward(H1, Ws, act):
    Z = Ws[0] @ H1
    for W in Ws[1:]:
        Z = W @ act(Z)
    return Z


def test_dense_relu_case_g():
    K, n, L, d, lam = 3, 4, 4, 7, 0.01
    p = th.predict(K, n, lam, lam, L=L)
    rng = np.random.default_rng(5)
    # U_1: signed coordinate frame (H_1 has no ReLU); U_2..U_L: coordinate frames (non-negative,
    # disjoint supports), so every pre-activation is exactly ≥ 0 and many are exactly 0.
    frames = []
    for l in range(L):
        U = torch.zeros(d, K)
        U[rng.permutation(d)[:K], torch.arange(K)] = 1.0
        if l == 0:
            U = U * torch.tensor(rng.choice([-1.0, 1.0], K))
        frames.append(U)
    frames.append(torch.eye(K))
    Y = labels_onehot(K, n)
    H1 = p.s * frames[0] @ Y
    Ws = [p.sigma[l] * frames[l + 1] @ frames[l].T for l in range(L)]
    Z = Ws[0] @ H1
    for W in Ws[1:]:
        assert float(Z.min()) >= 0.0 and int((Z == 0).sum()) > 0
        Z = W @ Z
    # A critical point of the (autograd, τ = 0) ReLU loss with the linear optimum's loss.
    params = [t.clone().requires_grad_(True) for t in [H1, *Ws]]
    fit = ((relu_forward(params[0], params[1:], torch.relu) - Y) ** 2).sum() / (2 * K * n)
    loss = fit + reg(params[0], params[1:], p.lam_w, p.lam_h)
    grads = torch.autograd.grad(loss, params)
    assert float(flat(grads).detach().norm()) < 1e-12
    assert float(loss.detach()) == pytest.approx(p.loss, rel=1e-12)

    for tau, act in [
        (0.0, torch.relu),  # autograd's native convention
        (0.0, lambda x: relu_tau(x, 0.0)),
        (0.5, lambda x: relu_tau(x, 0.5)),
        (1.0, lambda x: relu_tau(x, 1.0)),
        (1.0, lambda x: x),  # the linear model
    ]:
        pred = th.relu_layer_eigenvalues(K, n, lam, lam, tau, L=L)
        for l in range(L):

            def fit_l(w, l=l, act=act):
                ws = [*Ws[:l], w, *Ws[l + 1 :]]
                return ((relu_forward(H1, ws, act) - Y) ** 2).sum() / (2 * K * n)

            ev = np.sort(np.linalg.eigvalsh(dense_hessian(fit_l, [Ws[l]])))[::-1]
            np.testing.assert_allclose(ev[: K * K], pred[l], rtol=1e-9, atol=1e-13)
            assert np.abs(ev[K * K :]).max(initial=0.0) < 1e-13
    # τ = 1 is the linear answer
    assert th.relu_layer_eigenvalues(K, n, lam, lam, 1.0, L=L) == [[x] * 9 for x in p.layer_outlier]


# --------------------------------------------------------------------------- dense: CE (Case H)
def ce_point(K: int, n: int, L: int, x: float, d: int, centred: bool = True, seed: int = 0):
    """DNC point with all L+1 factors having K−1 (centred ETF) or K (orthogonal) singular
    values x; logits α(e_c − 1/K) or α e_c per class, α = x^{L+1}/√n."""
    rng = np.random.default_rng(seed)
    if centred:
        S = np.eye(K) - 1.0 / K
        V = torch.tensor(np.linalg.eigh(S)[1][:, 1:])  # orthonormal basis of 1^⊥
    else:
        V = torch.eye(K)
    r = V.shape[1]
    frames = [frame(rng, d, r) for _ in range(L)]
    H1 = (x / math.sqrt(n)) * frames[0] @ V.T @ labels_onehot(K, n)
    Ws = [x * frames[l + 1] @ frames[l].T for l in range(L - 1)] + [x * V @ frames[-1].T]
    return H1, Ws


def ce_fit_t(H1, Ws, labels):
    Z = H1
    for W in Ws:
        Z = W @ Z
    return torch.nn.functional.cross_entropy(Z.T, labels)


@pytest.mark.parametrize("K,n,L,x,d", [(4, 3, 3, 1.3, 5), (2, 3, 2, 1.1, 2), (5, 2, 2, 1.6, 4)])
def test_dense_ce_layer_hessian(K, n, L, x, d):
    H1, Ws = ce_point(K, n, L, x, d, seed=K)
    labels = torch.arange(K).repeat_interleave(n)
    alpha = th.ce_alpha(x, n, L)
    Z = H1
    for W in Ws:
        Z = W @ Z
    expected_logits = alpha * (torch.eye(K) - 1.0 / K) @ labels_onehot(K, n)
    assert float((Z - expected_logits).abs().max()) < 1e-13
    assert float(ce_fit_t(H1, Ws, labels)) == pytest.approx(th.ce_fit(K, alpha), rel=1e-13)
    pred = spectrum_from_groups(th.ce_layer_eigenvalues(K, n, L, x))[::-1]
    for l in range(L):

        def fit_l(w, l=l):
            return ce_fit_t(H1, [*Ws[:l], w, *Ws[l + 1 :]], labels)

        evals, evecs = np.linalg.eigh(dense_hessian(fit_l, [Ws[l]]))
        order = np.argsort(evals)[::-1]
        evals, evecs = evals[order], evecs[:, order]
        np.testing.assert_allclose(evals[: len(pred)], pred, rtol=1e-9)
        assert np.abs(evals[len(pred) :]).max(initial=0.0) < 1e-13
        # the gradient lies along the (simple) top eigenvector
        w = Ws[l].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fit_l(w), w)
        g = g.reshape(-1).numpy()
        assert (evecs[:, 0] @ g) ** 2 / (g @ g) == pytest.approx(1.0, abs=1e-12)


def test_dense_ce_optimal_scale():
    """At α* the DNC-ETF point is a critical point of the whole CE loss (Case H, second part)."""
    K, n, L, lam = 3, 10, 2, 1e-3
    alpha = th.ce_optimal_alpha(K, n, L, lam)
    x = th.ce_x(alpha, n, L)
    H1, Ws = ce_point(K, n, L, x, d=3, seed=11)
    labels = torch.arange(K).repeat_interleave(n)
    params = [t.clone().requires_grad_(True) for t in [H1, *Ws]]
    loss = ce_fit_t(params[0], params[1:], labels) + reg(params[0], params[1:], [lam] * L, lam)
    grads = torch.autograd.grad(loss, params)
    assert float(flat(grads).detach().norm()) < 1e-12
    assert float(loss.detach()) == pytest.approx(th.ce_loss(K, n, L, lam, alpha), rel=1e-12)
    pred = spectrum_from_groups(th.ce_optimal_layer_eigenvalues(K, n, L, lam))[::-1]
    for l in range(L):

        def fit_l(w, l=l):
            return ce_fit_t(H1, [*Ws[:l], w, *Ws[l + 1 :]], labels)

        ev = np.sort(np.linalg.eigvalsh(dense_hessian(fit_l, [Ws[l]])))[::-1]
        np.testing.assert_allclose(ev[: len(pred)], pred, rtol=1e-9)
        assert np.abs(ev[len(pred) :]).max(initial=0.0) < 1e-13
    # the loss along the family is minimal at α* (larger root), maximal at the smaller one
    f = [th.ce_loss(K, n, L, lam, alpha * s) for s in (0.99, 1.0, 1.01)]
    assert f[1] < f[0] and f[1] < f[2]
    assert th.ce_optimal_alpha(K, n, L, 10.0) == 0.0  # λ too large: no non-zero stationary scale


def test_dense_ce_orthogonal_noncentred():
    """§4.7 'why the counts differ': K at c K p q and K(K−2) at c q (derived, checked here)."""
    K, n, L, x = 4, 3, 2, 1.2
    H1, Ws = ce_point(K, n, L, x, d=5, centred=False, seed=2)
    labels = torch.arange(K).repeat_interleave(n)
    pred = spectrum_from_groups(th.ce_orthogonal_layer_eigenvalues(K, n, L, x))[::-1]
    assert len(pred) == K * (K - 1)
    for l in range(L):

        def fit_l(w, l=l):
            return ce_fit_t(H1, [*Ws[:l], w, *Ws[l + 1 :]], labels)

        ev = np.sort(np.linalg.eigvalsh(dense_hessian(fit_l, [Ws[l]])))[::-1]
        np.testing.assert_allclose(ev[: len(pred)], pred, rtol=1e-9)
        assert np.abs(ev[len(pred) :]).max(initial=0.0) < 1e-13


def test_dense_trivial_point_spectrum():
    """Above the threshold the optimum is W = 0, H_1 = 0; for L = 1 with H_1 the residual −Y
    still couples W and H_1 (±1/(K√n)), and the total Hessian there is positive definite."""
    K, n, d, lam_w, lam_h = 3, 2, 4, 0.5, 0.2
    assert not th.is_nontrivial(K, n, [lam_w], lam_h)
    Y = labels_onehot(K, n)
    H1, W = torch.zeros(d, K * n), torch.zeros(K, d)
    for tot in (False, True):

        def fn(h, w, tot=tot):
            out = mse_fit(h, [w], Y)
            return out + reg(h, [w], [lam_w], lam_h) if tot else out

        ev = np.linalg.eigvalsh(dense_hessian(fn, [H1, W]))
        spec = th.hessian_spectrum(K, n, [lam_w], lam_h, widths=d, include_features=True, total=tot)
        np.testing.assert_allclose(ev, spectrum_from_groups(spec), rtol=0, atol=1e-14)
        assert ev.min() > 0 if tot else ev.min() < 0


@pytest.mark.parametrize("K,n,L,lam", [(3, 10, 1, 1e-2), (4, 5, 1, 1e-3), (5, 3, 3, 1e-3)])
def test_ce_optimal_alpha_other_depths(K, n, L, lam):
    alpha = th.ce_optimal_alpha(K, n, L, lam)
    assert alpha > 0
    lhs = alpha / (math.exp(alpha) + K - 1)
    assert lhs == pytest.approx(lam * (alpha * math.sqrt(n)) ** (2 / (L + 1)), rel=1e-12)
    f = [th.ce_loss(K, n, L, lam, alpha * s) for s in (0.999, 1.0, 1.001)]
    assert f[1] < f[0] and f[1] < f[2]
