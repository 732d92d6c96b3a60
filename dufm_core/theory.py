"""Closed-form predictions for deep unconstrained feature models (docs/theory.md §3–§4).

Everything here is pure numpy/scipy arithmetic: no torch, no Streamlit. It is the reference that
the engine's measurements (and the golden tests of docs/theory.md §8) are compared with.

Model (docs/theory.md §1.3). K classes, n samples each (N = Kn), weights W_1..W_L (no bias), free
features H_1, per-layer weight decay λ_{W_l} and feature decay λ_H::

    L = (1/(2N)) ‖W_L ⋯ W_1 H_1 − Y‖²_F + Σ_l (λ_{W_l}/2) ‖W_l‖²_F + (λ_H/2) ‖H_1‖²_F

At the global optimum (when it is non-zero) every one of the L+1 factors has K equal singular
values, the output is Z* = γY, and everything else follows from the scalar shrinkage γ. Write
t := 1 − γ. We solve for t, not γ, so that quantities such as λ/(1−γ) keep full relative precision
when λ is tiny and γ is within 1e-8 of 1.

Conventions
-----------
* "Hessian" is the **fit-term** Hessian unless a name says ``total`` (fit + regularisation).
* Layers are numbered 1..L; per-layer tuples have index 0 = layer 1.
* The parameter set of a full Hessian is stated in each name: *weights* (W_1..W_L) or
  *with_features* (W_1..W_L and H_1).

Full Hessian over several layers (docs/theory.md §4.5), exact reduction
--------------------------------------------------------------------
At the optimum put W_l = σ_l U_{l+1} U_lᵀ (orthonormal K-frames U_l, U_{L+1} = I_K) and
H_1 = s U_1 ⊗ 1_nᵀ. Decompose a weight perturbation Δ_l into its *frame block*
X_l = U_{l+1}ᵀ Δ_l U_l ∈ R^{K×K} and the rest. Expanding the fit to second order,

    Q(X) = (1/K) [ ‖Σ_l (γ/σ_l) X_l‖² − 2(1−γ)γ Σ_{l>m} tr(X_l X_m)/(σ_l σ_m) ].

With γ²/(Kσ_l²) = λ_l γ/(1−γ) and (1−γ)γ/(Kσ_lσ_m) = √(λ_l λ_m), the form splits over the entry
pairs {(a,b),(b,a)}: symmetric combinations (K(K+1)/2 of them, diagonal entries included) and
antisymmetric ones (K(K−1)/2). Each sees an L×L matrix, with v_l = √λ_l:

    A_sym  = ((2γ−1)/(1−γ)) v vᵀ + diag(λ)      (multiplicity K(K+1)/2)
    A_anti = (1/(1−γ)) v vᵀ − diag(λ)           (multiplicity K(K−1)/2)

Their largest eigenvalues are the K² full-Hessian outliers, **exactly**, for any λ's: K(K−1)/2
at λ_max(A_anti) and K(K+1)/2 at λ_max(A_sym). The Rayleigh quotients on v are the first-order
values of docs/theory.md §4.5, GN + ρ and GN − ρ with GN = (γ/(1−γ))Σλ and ρ = Σ_{l≠m}λ_lλ_m/Σ_lλ_l;
for equal λ, v is an exact eigenvector and they are exact (ρ = (L−1)λ); otherwise the exact values
lie above them by a second-order amount. The other L−1 eigenvalues of A_sym lie in
[min λ, max λ] and those of A_anti in [−max λ, −min λ] (interlacing), so they stay below the
outliers whenever γ ≥ 1/2, which always holds at a non-trivial optimum with L ≥ 2 (γ > (L−1)/L).
(Only for L = 1 with H_1 included can γ < 1/2 occur; then the "outliers" returned here are still
exact eigenvalues, the tops of the two blocks, but need not be separated from the rest.) Including
H_1 adds a factor "0" with λ_H (the class-mean part of H_1, in coordinates scaled by √n); the
within-class part of H_1 decouples and gives K(N−K) eigenvalues λ_H γ/(1−γ). The off-frame parts
of neighbouring layers couple in 2×2 blocks with eigenvalues ±√(λ_l λ_{l−1}). This gives the whole
spectrum in closed form (:func:`hessian_spectrum`); the tests check it against dense autograd
Hessians, including the unequal-λ Case E.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "Prediction",
    "ce_alpha",
    "ce_fit",
    "ce_layer_eigenvalues",
    "ce_loss",
    "ce_optimal_alpha",
    "ce_optimal_layer_eigenvalues",
    "ce_orthogonal_layer_eigenvalues",
    "ce_probabilities",
    "ce_x",
    "critical_scale",
    "full_hessian_outliers",
    "full_hessian_outliers_first_order",
    "full_outlier_matrices",
    "gamma",
    "hessian_spectrum",
    "is_nontrivial",
    "lambda_crit",
    "layer_hessian_spectrum",
    "one_minus_gamma",
    "phi",
    "predict",
    "relu_layer_eigenvalues",
    "small_lambda_limits",
    "stationary_gammas",
    "threshold_lhs",
    "threshold_paper_form",
    "threshold_rhs",
]

_EPS = float(np.finfo(float).eps)
_BRENT = {"xtol": 1e-300, "rtol": 4 * _EPS, "maxiter": 4000}


def brentq(
    f: Callable[[float], float], lo: float, hi: float, xtol: float = 1e-300,
    rtol: float = 4 * _EPS, maxiter: int = 4000,
) -> float:
    """Root of ``f`` in a sign-changing bracket [lo, hi], to full double precision.

    Safeguarded bisection: geometric midpoints while the bracket spans more than a factor 4
    (positive brackets that start at 1e-300 converge in ~10 steps), then arithmetic midpoints
    until |hi − lo| ≤ max(xtol, rtol·max(|lo|, |hi|)). Written here (not scipy's brentq) so that
    importing the theory — which every training run does to validate its config — does not cost
    the 0.5 s import of scipy.optimize; bisection is exact in its bracket and fast enough for
    these scalar equations (≤ ~1100 cheap evaluations in the worst case).
    """
    f_lo, f_hi = f(lo), f(hi)
    if f_lo == 0.0:
        return lo
    if f_hi == 0.0:
        return hi
    if (f_lo > 0) == (f_hi > 0):
        raise ValueError(f"no sign change in [{lo!r}, {hi!r}]")
    for _ in range(maxiter):
        if abs(hi - lo) <= max(xtol, rtol * max(abs(lo), abs(hi))):
            break
        mid = math.sqrt(lo * hi) if lo > 0 and hi > 4 * lo else 0.5 * (lo + hi)
        f_mid = f(mid)
        if f_mid == 0.0:
            return mid
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi, f_hi = mid, f_mid
    return lo if abs(f_lo) <= abs(f_hi) else hi


# --------------------------------------------------------------------------- input handling
def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def _lams(
    lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> tuple[tuple[float, ...], float]:
    """Normalise (λ_W, λ_H): λ_W is one float (needs ``L``) or a length-L sequence.

    All coefficients must be finite and > 0: the closed forms divide by them.
    """
    if isinstance(lam_w, (int, float, np.floating, np.integer)) and not isinstance(lam_w, bool):
        if L is None:
            raise ValueError("lam_w is a single number: give the depth L as well")
        L = _check_int("L", L, 1)
        lams = (float(lam_w),) * L
    else:
        lams = tuple(float(v) for v in lam_w)
        if len(lams) == 0:
            raise ValueError("lam_w is empty: give one λ_W per layer (L >= 1)")
        if L is not None and len(lams) != _check_int("L", L, 1):
            raise ValueError(
                f"lam_w has {len(lams)} entries but L = {L}: give exactly one λ_W per layer "
                "(W_1..W_L), or a single number"
            )
    lam_h = float(lam_h)
    for name, v in [*((f"lam_w[{i}]", x) for i, x in enumerate(lams)), ("lam_h", lam_h)]:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0 for the closed forms (got {v!r})")
    return lams, lam_h


# --------------------------------------------------------------------------- threshold (§3.1)
def _log_threshold_lhs(K: int, n: int, lams: Sequence[float], lam_h: float) -> float:
    L = len(lams)
    return (L + 1) * math.log(K) + math.log(n) + math.log(lam_h) + sum(math.log(x) for x in lams)


def _log_threshold_rhs(L: int) -> float:
    # (L−1)^{L−1} / L^{2L}, with 0^0 = 1 for L = 1.
    return (L - 1) * math.log(L - 1) - 2 * L * math.log(L) if L > 1 else 0.0


def threshold_lhs(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> float:
    """Left side of the threshold (docs/theory.md §3.1): K^{L+1} · n · λ_H · Π_l λ_{W_l}.

    The optimum is non-zero iff this is below :func:`threshold_rhs`. It is also the right side
    γ^{L−1}(1−γ)^{L+1} of the γ equation (§3.2).
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    return _threshold_lhs(K, n, lams, lam_h)


def _threshold_lhs(K: int, n: int, lams: Sequence[float], lam_h: float) -> float:
    direct = float(K) ** (len(lams) + 1) * n * lam_h * math.prod(lams)
    if direct > 0.0 and math.isfinite(direct):
        return direct
    log_lhs = _log_threshold_lhs(K, n, lams, lam_h)  # under/overflow: log form
    return math.exp(log_lhs) if log_lhs < 709.0 else math.inf


def threshold_rhs(L: int) -> float:
    """Right side of the threshold (docs/theory.md §3.1): (L−1)^{L−1} / L^{2L}.

    It is the value of γ^{L−1}(1−γ)^{L+1} at γ = (L−1)/L, the shrinkage at which the non-zero
    stationary point and the zero point have equal loss. For L = 1 it is 1 (0⁰ = 1), i.e. the
    classic-UFM condition K √(n λ_W λ_H) < 1.
    """
    L = _check_int("L", L, 1)
    if L <= 300:  # exact integers, correctly rounded division
        return (L - 1) ** (L - 1) / L ** (2 * L)
    return math.exp(_log_threshold_rhs(L))


def threshold_paper_form(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> tuple[float, float]:
    """The threshold in the paper's form (v1 Eq. (2) as transcribed in docs/theory.md §3.1).

    Returns (lhs, rhs) = ((K n λ_H Πλ_{W_l})^{1/L}, (L−1)^{(L−1)/L} / (K L²)); lhs < rhs is the same
    condition as :func:`threshold_lhs` < :func:`threshold_rhs` (raise both sides to the power L).
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    log_lhs = (math.log(K) + math.log(n) + math.log(lam_h) + sum(map(math.log, lams))) / L
    log_rhs = ((L - 1) / L) * (math.log(L - 1) if L > 1 else 0.0) - math.log(K) - 2 * math.log(L)
    return math.exp(log_lhs), math.exp(log_rhs)


def lambda_crit(K: int, n: int, L: int) -> float:
    """Critical common λ (λ_{W_l} = λ_H = λ) above which the optimum is zero (docs/theory.md §3.1),
    λ_crit = [(L−1)^{L−1} / (L^{2L} K^{L+1} n)]^{1/(L+1)}."""
    K, n, L = _check_int("K", K, 1), _check_int("n", n, 1), _check_int("L", L, 1)
    log_val = (_log_threshold_rhs(L) - (L + 1) * math.log(K) - math.log(n)) / (L + 1)
    return math.exp(log_val)


def critical_scale(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> float:
    """Factor c such that multiplying *every* λ (all λ_{W_l} and λ_H) by c puts the model exactly
    at the threshold: c = (rhs/lhs)^{1/(L+1)}. c > 1 means non-trivial. For equal λ,
    c·λ = λ_crit."""
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    return math.exp((_log_threshold_rhs(L) - _log_threshold_lhs(K, n, lams, lam_h)) / (L + 1))


# --------------------------------------------------------------------------- γ (§3.2)
def _solve_t(log_lhs: float, L: int) -> float:
    """t = 1 − γ at the non-trivial optimum, or 1.0 (γ = 0) when the optimum is zero.

    Root of (L−1) log(1−t) + (L+1) log t = log lhs on [lhs^{1/(L+1)}, 1/L]. On t ≤ 1/L
    (γ ≥ (L−1)/L) the left side is strictly increasing in t (its maximum is at γ = (L−1)/(2L)), so
    the bracket holds exactly one root. At the critical point the root sits at t = 1/L with slope
    L² in log form: simple and well conditioned (there is no double root there; the double root
    of the γ equation is at γ = (L−1)/(2L), above the threshold). For L = 1: t = √lhs.
    """
    log_rhs = _log_threshold_rhs(L)
    if not log_lhs < log_rhs:
        return 1.0
    if L == 1:
        return math.exp(0.5 * log_lhs)

    def f(t: float) -> float:
        return (L - 1) * math.log1p(-t) + (L + 1) * math.log(t) - log_lhs

    lo = math.exp(log_lhs / (L + 1))  # (1−γ)^{L+1} ≥ lhs, so t ≥ lhs^{1/(L+1)}; f(lo) ≤ 0
    if lo < 1e-300:  # λ so small that t underflows: the smallest normal float keeps γ/t finite
        return max(lo, sys.float_info.min)
    hi = 1.0 / L  # f(hi) = log rhs − log lhs > 0
    f_lo, f_hi = f(lo), f(hi)
    if f_hi <= 0.0:  # within rounding of the threshold
        return hi
    if f_lo >= 0.0:
        return lo
    return float(brentq(f, lo, hi, **_BRENT))


def one_minus_gamma(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> float:
    """1 − γ, computed directly (full relative precision even when γ ≈ 1); 1.0 when trivial."""
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    return _solve_t(_log_threshold_lhs(K, n, lams, lam_h), len(lams))


def gamma(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> float:
    """Optimal shrinkage γ (Z* = γY) of docs/theory.md §3.2; 0.0 when the optimum is zero.

    γ is the largest root in ((L−1)/(2L), 1) of γ^{L−1}(1−γ)^{L+1} = K^{L+1} n λ_H Π λ_{W_l}; it
    is the global optimum iff lhs < rhs, and then γ > (L−1)/L. L = 1: γ = 1 − K√(n λ_W λ_H).
    Solved in log form for t = 1 − γ by Brent's method on a bracket where the equation is monotone.
    """
    return 1.0 - one_minus_gamma(K, n, lam_w, lam_h, L)


def stationary_gammas(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> tuple[float, ...]:
    """All non-zero stationary shrinkages, ascending (docs/theory.md §3.2), whether or not optimal.

    For L ≥ 2 the equation γ^{L−1}(1−γ)^{L+1} = lhs has two roots in (0, 1) while lhs is below
    its maximum at γ = (L−1)/(2L): the smaller is a local maximum of φ, the larger a local minimum
    (the global one only if lhs < rhs). Returns () if there is none. For L = 1: (1 − √lhs,) if
    lhs < 1. Useful to plot φ and to show the jump of γ at λ_crit.
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    log_lhs = _log_threshold_lhs(K, n, lams, lam_h)
    if L == 1:
        return (1.0 - math.exp(0.5 * log_lhs),) if log_lhs < 0.0 else ()
    g_peak = (L - 1) / (2 * L)

    def f(g: float) -> float:
        return (L - 1) * math.log(g) + (L + 1) * math.log1p(-g) - log_lhs

    if f(g_peak) <= 0.0:
        return ()
    lo_g, lo_t = math.exp(log_lhs / (L - 1)), math.exp(log_lhs / (L + 1))
    # tiny λ: a bracket end that underflows is the root itself to double precision
    # (γ ≈ lhs^{1/(L−1)} for the small root, t ≈ lhs^{1/(L+1)} for the large one)
    small = float(brentq(f, lo_g, g_peak, **_BRENT)) if lo_g > 1e-300 else lo_g
    t = (float(brentq(lambda t: f(1.0 - t), lo_t, 1.0 - g_peak, **_BRENT)) if lo_t > 1e-15
         else lo_t)
    return (small, 1.0 - t)


def phi(
    g: float,
    K: int,
    n: int,
    lam_w: float | Sequence[float],
    lam_h: float,
    L: int | None = None,
) -> float:
    """Per-direction objective of docs/theory.md §3.2, minimised over everything but the
    shrinkage γ:

        φ(γ) = (1/(2K))(1−γ)² + ((L+1)/2) (n λ_H Π λ_{W_l})^{1/(L+1)} γ^{2/(L+1)}.

    K·φ(γ) is the smallest loss with output Z = γY (AM–GM balances the L+1 factors), so the loss
    is K·φ(γ*) and the optimum is non-trivial iff φ(γ*) < φ(0) = 1/(2K).
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    g = float(g)
    if g < 0.0:
        raise ValueError(f"phi needs γ >= 0 (got {g})")
    c = math.exp((math.log(n) + math.log(lam_h) + sum(map(math.log, lams))) / (L + 1))
    return (1.0 - g) ** 2 / (2 * K) + 0.5 * (L + 1) * c * g ** (2.0 / (L + 1))


def is_nontrivial(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> bool:
    """Whether the global optimum is non-zero: K^{L+1} n λ_H Π λ_{W_l} < (L−1)^{L−1}/L^{2L}
    (strict; at equality both the zero and the non-zero point are optimal, and we report zero).

    Cross-check: the same answer must come from φ(γ) < φ(0) at the larger stationary root
    (§3.2). The two are compared whenever the threshold is not within 1e-9 (relative) of
    equality, where rounding could legitimately separate them; a disagreement raises
    RuntimeError, since it would mean a bug in these formulas.
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    log_lhs = _log_threshold_lhs(K, n, lams, lam_h)
    log_rhs = _log_threshold_rhs(L)
    answer = log_lhs < log_rhs
    if abs(log_lhs - log_rhs) > 1e-9:
        roots = stationary_gammas(K, n, lams, lam_h)
        by_phi = bool(roots) and phi(roots[-1], K, n, lams, lam_h) < phi(0.0, K, n, lams, lam_h)
        if by_phi != answer:
            raise RuntimeError(
                f"threshold ({answer}) and φ-comparison ({by_phi}) disagree for "
                f"K={K}, n={n}, λ_W={lams}, λ_H={lam_h}"
            )
    return answer


# --------------------------------------------------------------------------- full Hessian (§4.5)
def full_outlier_matrices(
    g: float, lams: Sequence[float], *, total: bool = False, t: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The two small matrices whose spectra give the multi-layer Hessian on the frame blocks.

    ``lams`` lists the coefficients of the factors in the Hessian: (λ_{W_1}..λ_{W_L}) for the
    weights, or (λ_H, λ_{W_1}..λ_{W_L}) when H_1 is included. With v = √λ and t = 1 − γ
    (see the module docstring for the derivation):

        A_sym  = ((2γ−1)/t) v vᵀ + diag(λ)   acting on K(K+1)/2 symmetric entry pairs,
        A_anti = (1/t) v vᵀ − diag(λ)        acting on K(K−1)/2 antisymmetric entry pairs.

    ``total=True`` adds the regulariser diag(λ) to both (then A_anti = v vᵀ/t, rank one).
    Returns (A_sym, A_anti), fit-only by default.
    """
    t = 1.0 - g if t is None else t
    lam = np.asarray(lams, dtype=float)
    v = np.sqrt(lam)
    outer = np.outer(v, v)
    diag = np.diag(lam)
    a_sym = ((g - t) / t) * outer + diag
    a_anti = outer / t - diag
    if total:
        a_sym = a_sym + diag
        a_anti = a_anti + diag
    return a_sym, a_anti


def _top_eig(a: np.ndarray) -> float:
    return float(np.linalg.eigvalsh(a)[-1])


def _outliers_exact(K: int, g: float, t: float, lams: Sequence[float], total: bool) -> tuple:
    if g == 0.0:
        return (0.0,) * (K * K)
    a_sym, a_anti = full_outlier_matrices(g, lams, total=total, t=t)
    top_anti, top_sym = _top_eig(a_anti), _top_eig(a_sym)
    vals = [top_anti] * (K * (K - 1) // 2) + [top_sym] * (K * (K + 1) // 2)
    return tuple(sorted(vals, reverse=True))


def _rho(lams: Sequence[float]) -> float:
    s1 = math.fsum(lams)
    s2 = math.fsum(x * x for x in lams)
    return (s1 * s1 - s2) / s1


def _outliers_first_order(K: int, g: float, t: float, lams: Sequence[float]) -> tuple:
    if g == 0.0:
        return (0.0,) * (K * K)
    gn = (g / t) * math.fsum(lams)
    rho = _rho(lams)
    return (gn + rho,) * (K * (K - 1) // 2) + (gn - rho,) * (K * (K + 1) // 2)


def full_hessian_outliers(
    K: int,
    n: int,
    lam_w: float | Sequence[float],
    lam_h: float,
    L: int | None = None,
    *,
    include_features: bool = False,
    total: bool = False,
) -> tuple[float, ...]:
    """The K² outliers of the full Hessian over all weights (and H_1 if ``include_features``),
    descending, **exact** for any per-layer λ (docs/theory.md §4.5, derivation in the module
    docstring).

    K(K−1)/2 copies of λ_max(A_anti) and K(K+1)/2 copies of λ_max(A_sym). For equal λ these are
    (γ/(1−γ))Σλ ± ρ exactly; otherwise they differ from :func:`full_hessian_outliers_first_order`
    at second order (Case E: 0.79191161/0.75191546 vs 0.791867/0.751867). Zeros when trivial.
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    t = _solve_t(_log_threshold_lhs(K, n, lams, lam_h), len(lams))
    coeffs = (lam_h, *lams) if include_features else lams
    return _outliers_exact(K, 1.0 - t, t, coeffs, total)


def full_hessian_outliers_first_order(
    K: int,
    n: int,
    lam_w: float | Sequence[float],
    lam_h: float,
    L: int | None = None,
    *,
    include_features: bool = False,
) -> tuple[float, ...]:
    """First-order (fit) full-Hessian outliers of docs/theory.md §4.5, descending:
    K(K−1)/2 at (γ/(1−γ))Σλ + ρ and K(K+1)/2 at (γ/(1−γ))Σλ − ρ, ρ = Σ_{l≠m}λ_lλ_m / Σ_l λ_l
    (sums over the weights, plus λ_H if ``include_features``). Exact only for equal λ."""
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    t = _solve_t(_log_threshold_lhs(K, n, lams, lam_h), len(lams))
    coeffs = (lam_h, *lams) if include_features else lams
    return _outliers_first_order(K, 1.0 - t, t, coeffs)


def _merge(groups: list[tuple[float, int]], total_dim: int) -> list[tuple[float, int]]:
    """Sort (value, multiplicity) groups descending and merge values equal to ~1e-12."""
    groups = sorted(((float(v), int(m)) for v, m in groups if m > 0), key=lambda x: -x[0])
    scale = max([abs(v) for v, _ in groups] + [1e-300])
    out: list[tuple[float, int]] = []
    for v, m in groups:
        if out and abs(out[-1][0] - v) <= 1e-12 * scale:
            out[-1] = (out[-1][0], out[-1][1] + m)
        else:
            out.append((v, m))
    assert sum(m for _, m in out) == total_dim
    return out


def _widths(widths: int | Sequence[int] | None, K: int, L: int) -> tuple[int, ...]:
    if widths is None:
        return (K,) * L
    if isinstance(widths, (int, np.integer)):
        widths = (int(widths),) * L
    widths = tuple(int(w) for w in widths)
    if len(widths) != L:
        raise ValueError(f"widths has {len(widths)} entries but L = {L}: give d_1..d_L")
    if min(widths) < K:
        raise ValueError(f"every width d_l must be >= K = {K} (got {widths})")
    return widths


def hessian_spectrum(
    K: int,
    n: int,
    lam_w: float | Sequence[float],
    lam_h: float,
    widths: int | Sequence[int] | None = None,
    L: int | None = None,
    *,
    include_features: bool = False,
    total: bool = False,
) -> list[tuple[float, int]]:
    """Complete spectrum of the full Hessian at the optimum, as (value, multiplicity), descending.

    Parameters are W_1..W_L (W_l of shape d_{l+1}×d_l, ``widths`` = (d_1..d_L), d_{L+1} = K;
    default d_l = K) and, with ``include_features``, H_1 (d_1×N). Blocks (module docstring):

    * frame blocks: eig(A_anti) × K(K−1)/2 and eig(A_sym) × K(K+1)/2 (L or L+1 values each);
    * off-frame neighbours: the input-side part of W_l (K×(d_l−K)) couples with the output-side
      part of W_{l−1} (or the off-frame class means of H_1 for l = 1) in 2×2 blocks with
      eigenvalues ±√(λ_l λ_{l−1}), each K(d_l−K)-fold (total: 0 and λ_l + λ_{l−1});
    * within-class H_1 directions: K(N−K) at λ_H γ/(1−γ); everything else 0 (total: its λ).

    Trivial optimum (zero point): all zero, except for L = 1 with features, where the residual
    couples W and H_1: ±1/(K√n), each K·d_1-fold.
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    d = _widths(widths, K, L)
    N = K * n
    dims_out = (*d[1:], K)
    n_w = sum(dims_out[i] * d[i] for i in range(L))
    dim = n_w + (d[0] * N if include_features else 0)
    t = _solve_t(_log_threshold_lhs(K, n, lams, lam_h), L)
    g = 1.0 - t
    groups: list[tuple[float, int]] = []
    if g == 0.0:
        # Zero point: the fit Hessian is zero except through the residual −Y at L = 1.
        shift = list(lams) if total else [0.0] * L
        if include_features and L == 1:
            a = 1.0 / (K * math.sqrt(n))
            if total:
                mid, rad = 0.5 * (lams[0] + lam_h), math.hypot(0.5 * (lams[0] - lam_h), a)
                groups += [(mid + rad, K * d[0]), (mid - rad, K * d[0])]
            else:
                groups += [(a, K * d[0]), (-a, K * d[0])]
            groups.append((lam_h if total else 0.0, d[0] * N - K * d[0]))
        else:
            groups += [(shift[i], dims_out[i] * d[i]) for i in range(L)]
            if include_features:
                groups.append((lam_h if total else 0.0, d[0] * N))
        return _merge(groups, dim)

    coeffs = (lam_h, *lams) if include_features else lams
    a_sym, a_anti = full_outlier_matrices(g, coeffs, total=total, t=t)
    groups += [(v, K * (K + 1) // 2) for v in np.linalg.eigvalsh(a_sym)]
    groups += [(v, K * (K - 1) // 2) for v in np.linalg.eigvalsh(a_anti)]

    def pair(la: float, lb: float, mult: int) -> None:
        if total:
            groups.extend([(la + lb, mult), (0.0, mult)])
        else:
            r = math.sqrt(la * lb)
            groups.extend([(r, mult), (-r, mult)])

    # Input-side off-frame part of W_l (l ≥ 2) with output-side off-frame part of W_{l−1}.
    for i in range(1, L):
        pair(lams[i], lams[i - 1], K * (d[i] - K))
    # Input-side off-frame part of W_1: couples with off-frame class means of H_1, if present.
    if include_features:
        pair(lams[0], lam_h, K * (d[0] - K))
    else:
        groups.append((lams[0] if total else 0.0, K * (d[0] - K)))
    # Both sides off-frame (hidden layers only): no curvature from the fit.
    for i in range(L - 1):
        groups.append((lams[i] if total else 0.0, (d[i + 1] - K) * (d[i] - K)))
    if include_features:
        within = lam_h * g / t
        groups.append((within + (lam_h if total else 0.0), K * (N - K)))
        groups.append((lam_h if total else 0.0, (d[0] - K) * (N - K)))
    return _merge(groups, dim)


def layer_hessian_spectrum(
    K: int,
    n: int,
    lam_w: float | Sequence[float],
    lam_h: float,
    layer: int,
    width_in: int | None = None,
    width_out: int | None = None,
    L: int | None = None,
    *,
    total: bool = False,
) -> list[tuple[float, int]]:
    """Spectrum of the layer-``layer`` Hessian (W_l alone, 1-based) at the optimum (§4.1):
    K² at λ_{W_l} γ/(1−γ) and the rest 0 (``total``: +λ_{W_l} on everything). W_l has shape
    width_out × width_in (defaults K×K; width_out must be K for the last layer)."""
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    layer = _check_int("layer", layer, 1)
    if layer > L:
        raise ValueError(f"layer must be in 1..L = 1..{L} (got {layer})")
    d_in = K if width_in is None else int(width_in)
    d_out = K if (width_out is None or layer == L) else int(width_out)
    if min(d_in, d_out) < K:
        raise ValueError(f"widths must be >= K = {K}")
    t = _solve_t(_log_threshold_lhs(K, n, lams, lam_h), L)
    lam = lams[layer - 1]
    shift = lam if total else 0.0
    top = lam * (1.0 - t) / t
    return _merge([(top + shift, K * K), (shift, d_in * d_out - K * K)], d_in * d_out)


def small_lambda_limits(K: int, n: int, L: int) -> dict[str, float]:
    """Equal-λ limits as λ → 0 (docs/theory.md §4.1, §4.5): layer outlier → 1/(K n^{1/(L+1)}),
    full weight-Hessian outliers → L/(K n^{1/(L+1)}), and (1−γ)/λ → K n^{1/(L+1)}."""
    K, n, L = _check_int("K", K, 1), _check_int("n", n, 1), _check_int("L", L, 1)
    base = 1.0 / (K * n ** (1.0 / (L + 1)))
    return {
        "layer_outlier": base,
        "full_outlier": L * base,
        "one_minus_gamma_over_lambda": 1 / base,
    }


# --------------------------------------------------------------------------- prediction (§3–§4)
@dataclass(frozen=True)
class Prediction:
    """Closed-form description of the linear MSE deep UFM at its global optimum.

    Per-layer tuples have index 0 = layer 1. Hessian values are fit-only unless named ``total``.
    At the zero optimum (``nontrivial`` False, γ = 0) the loss and fit are 1/2 and every other
    numeric field is 0 by convention (see :func:`hessian_spectrum` for the spectrum there).
    """

    K: int
    n: int
    L: int
    lam_w: tuple[float, ...]
    lam_h: float
    lambda_crit: float | None  # equal-λ critical value when λ_{W_l} = λ_H for all l, else None
    threshold_lhs: float  # K^{L+1} n λ_H Π λ_{W_l}
    threshold_rhs: float  # (L−1)^{L−1} / L^{2L}
    critical_scale: float  # common factor on all λ that reaches the threshold (> 1: non-trivial)
    nontrivial: bool
    gamma: float
    one_minus_gamma: float  # 1 − γ at full relative precision
    sigma: tuple[float, ...]  # σ_l: K-fold singular value of W_l
    s: float  # ‖μ_c^{(1)}‖
    mean_norms: tuple[float, ...]  # ‖μ^{(l)}‖, l = 1..L+1 (last = γ)
    loss: float
    fit: float
    reg: float
    layer_outlier: tuple[float, ...]  # fit Hessian of W_l: K² at λ_{W_l} γ/(1−γ)
    layer_outlier_total: tuple[float, ...]  # total Hessian of W_l: λ_{W_l}/(1−γ)
    h1_outlier: float  # fit Hessian of H_1: K·N at λ_H γ/(1−γ)
    gradient_beta: tuple[float, ...]  # β^{(l+1)} = −γ(1−γ)/‖μ^{(l+1)}‖², l = 1..L
    gradient_normalised: tuple[float, ...]  # −γ(1−γ)/σ_l: coefficient on (1/K)Σ_c μ̂μ̂ᵀ
    gradient_coefficients: list[list[float]]  # C = I_K/K (natural basis)
    weight_gram_eigs: tuple[float, ...]  # σ_l²: K-fold eigenvalue of W_lᵀW_l
    gn_split_ranks: tuple[int, int, int]  # ranks of (G_within, G_cross, G_class) = (0, K(K−1), K)
    full_gn_outlier: float  # weights: Σ_l λ_{W_l} γ/(1−γ) (K²-fold)
    rho: float  # Σ_{l≠m} λ_lλ_m / Σ_l λ_l over the weights
    full_outliers: tuple[float, ...]  # weights, fit, K² values descending, exact
    full_outliers_first_order: tuple[float, ...]  # GN ± ρ (exact iff all λ_{W_l} equal)
    full_outliers_total: tuple[float, ...]  # weights, total Hessian, exact
    full_gn_outlier_with_features: float  # (γ/(1−γ))(Σλ_{W_l} + λ_H)
    rho_with_features: float  # ρ over (λ_H, λ_{W_1}..λ_{W_L})
    full_outliers_with_features: tuple[float, ...]  # weights + H_1, fit, exact
    full_outliers_with_features_first_order: tuple[float, ...]

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists; every field by its own name)."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, list):
                value = [list(row) for row in value]
            out[f.name] = value
        return out


def predict(
    K: int, n: int, lam_w: float | Sequence[float], lam_h: float, L: int | None = None
) -> Prediction:
    """Everything closed-form about the linear MSE deep UFM at its global optimum (§3–§4).

    ``lam_w`` is a single λ_W (then ``L`` is required) or one λ_{W_l} per layer (then ``L`` is
    optional and, if given, must match). Formulas (t = 1 − γ):

    * σ_l² = γt/(Kλ_{W_l}); s² = γt/(Knλ_H); ‖μ^{(l+1)}‖ = σ_l ‖μ^{(l)}‖;
    * loss = t²/2 + (L+1)γt/2 (fit t²/2; each of the L+1 factors γt/2);
    * layer outlier λ_{W_l}γ/t (K²-fold), total λ_{W_l}/t; H_1 block λ_Hγ/t;
    * gradient (β^{(l+1)}/K) Σ_c μ_c^{(l+1)} μ_c^{(l)ᵀ}, β^{(l+1)} = −γt/‖μ^{(l+1)}‖²;
    * full Hessian: see :func:`full_hessian_outliers` (exact) and the first-order GN ± ρ.
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    log_lhs = _log_threshold_lhs(K, n, lams, lam_h)
    lhs, rhs = _threshold_lhs(K, n, lams, lam_h), threshold_rhs(L)
    equal = all(x == lam_h for x in lams)
    lam_c = lambda_crit(K, n, L) if equal else None
    nontrivial = is_nontrivial(K, n, lams, lam_h)
    t = _solve_t(log_lhs, L)
    g = 1.0 - t
    scale = critical_scale(K, n, lams, lam_h)
    zeros_l = (0.0,) * L
    zeros_k2 = (0.0,) * (K * K)
    common = {
        "K": K, "n": n, "L": L, "lam_w": lams, "lam_h": lam_h, "lambda_crit": lam_c,
        "threshold_lhs": lhs, "threshold_rhs": rhs, "critical_scale": scale,
        "gn_split_ranks": (0, K * (K - 1), K),
        "rho": _rho(lams), "rho_with_features": _rho((lam_h, *lams)),
    }  # fmt: skip
    if not nontrivial:
        return Prediction(
            **common, nontrivial=False, gamma=0.0, one_minus_gamma=1.0, sigma=zeros_l, s=0.0,
            mean_norms=(0.0,) * (L + 1), loss=0.5, fit=0.5, reg=0.0, layer_outlier=zeros_l,
            layer_outlier_total=zeros_l, h1_outlier=0.0, gradient_beta=zeros_l,
            gradient_normalised=zeros_l, gradient_coefficients=[[0.0] * K for _ in range(K)],
            weight_gram_eigs=zeros_l, full_gn_outlier=0.0, full_outliers=zeros_k2,
            full_outliers_first_order=zeros_k2, full_outliers_total=zeros_k2,
            full_gn_outlier_with_features=0.0, full_outliers_with_features=zeros_k2,
            full_outliers_with_features_first_order=zeros_k2,
        )  # fmt: skip
    gt = g * t
    sig2 = tuple(gt / (K * x) for x in lams)
    sigma = tuple(math.sqrt(x) for x in sig2)
    s = math.sqrt(gt / (K * n * lam_h))
    norms = [s]
    for sl in sigma:
        norms.append(norms[-1] * sl)
    norms[-1] = g  # exact identity s Π σ_l = γ; avoids accumulated rounding
    ratio = g / t
    layer_out = tuple(x * ratio for x in lams)
    fit = 0.5 * t * t
    reg = 0.5 * (L + 1) * gt
    return Prediction(
        **common,
        nontrivial=True,
        gamma=g,
        one_minus_gamma=t,
        sigma=sigma,
        s=s,
        mean_norms=tuple(norms),
        loss=fit + reg,
        fit=fit,
        reg=reg,
        layer_outlier=layer_out,
        layer_outlier_total=tuple(x / t for x in lams),
        h1_outlier=lam_h * ratio,
        gradient_beta=tuple(-gt / norms[i + 1] ** 2 for i in range(L)),
        gradient_normalised=tuple(-gt / x for x in sigma),
        gradient_coefficients=[[1.0 / K if a == b else 0.0 for b in range(K)] for a in range(K)],
        weight_gram_eigs=sig2,
        full_gn_outlier=ratio * math.fsum(lams),
        full_outliers=_outliers_exact(K, g, t, lams, total=False),
        full_outliers_first_order=_outliers_first_order(K, g, t, lams),
        full_outliers_total=_outliers_exact(K, g, t, lams, total=True),
        full_gn_outlier_with_features=ratio * math.fsum((lam_h, *lams)),
        full_outliers_with_features=_outliers_exact(K, g, t, (lam_h, *lams), total=False),
        full_outliers_with_features_first_order=_outliers_first_order(K, g, t, (lam_h, *lams)),
    )


# --------------------------------------------------------------------------- ReLU (§4.6)
def relu_layer_eigenvalues(
    K: int,
    n: int,
    lam_w: float | Sequence[float],
    lam_h: float,
    tau: float,
    L: int | None = None,
) -> list[list[float]]:
    """Predicted K² layer fit-Hessian outliers at the ReLU DNC point, per layer, descending
    (docs/theory.md §4.6). Convention σ'(0) = ``tau`` (0: autograd, 1/2: smoothed limit, 1: linear).

    The ReLU global optimum among DNC points is the linear optimum with non-negative
    (disjoint-support) hidden means. Layer l has K "diagonal" eigenvalues λ*_l = λ_{W_l}γ/(1−γ)
    and K(K−1) "off-diagonal" ones λ*_l τ^{2(L−l)}, where L−l ReLUs lie between W_l and the
    output; for l = L all K² equal λ*_L. Zeros when the optimum is trivial.
    """
    K, n = _check_int("K", K, 1), _check_int("n", n, 1)
    lams, lam_h = _lams(lam_w, lam_h, L)
    L = len(lams)
    tau = float(tau)
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite (got {tau})")
    t = _solve_t(_log_threshold_lhs(K, n, lams, lam_h), L)
    ratio = (1.0 - t) / t
    out = []
    for i, lam in enumerate(lams):
        star = lam * ratio
        off = star * tau ** (2 * (L - 1 - i))  # 0.0 ** 0 == 1.0 for the last layer
        out.append(sorted([star] * K + [off] * (K * (K - 1)), reverse=True))
    return out


# --------------------------------------------------------------------------- cross-entropy (§4.7)
def ce_alpha(x: float, n: int, L: int) -> float:
    """Logit scale α = x^{L+1}/√n of the CE DNC-ETF point whose L+1 factors (H_1 and W_1..W_L)
    all have K−1 singular values x (H_1 = M_1 ⊗ 1_nᵀ, so M_1's are x/√n)."""
    n, L = _check_int("n", n, 1), _check_int("L", L, 1)
    return float(x) ** (L + 1) / math.sqrt(n)


def ce_x(alpha: float, n: int, L: int) -> float:
    """Inverse of :func:`ce_alpha`: the common singular value x = (α√n)^{1/(L+1)}."""
    n, L = _check_int("n", n, 1), _check_int("L", L, 1)
    return (float(alpha) * math.sqrt(n)) ** (1.0 / (L + 1))


def ce_probabilities(K: int, alpha: float) -> tuple[float, float]:
    """Softmax of logits α e_c (equivalently α(e_c − 1/K)): (p, q) = (e^α, 1)/(e^α + K − 1),
    evaluated stably for large α."""
    K = _check_int("K", K, 2)
    e = math.exp(-float(alpha)) if alpha > 0 else None
    if e is not None:
        p = 1.0 / (1.0 + (K - 1) * e)
        q = e / (1.0 + (K - 1) * e)
    else:
        ea = math.exp(float(alpha))
        p, q = ea / (ea + K - 1), 1.0 / (ea + K - 1)
    return p, q


def ce_fit(K: int, alpha: float) -> float:
    """Mean cross-entropy at logits α(e_c − 1/K): −log p = log(1 + (K−1)e^{−α})."""
    K = _check_int("K", K, 2)
    alpha = float(alpha)
    if alpha >= 0:
        return math.log1p((K - 1) * math.exp(-alpha))
    return -alpha + math.log(math.exp(alpha) + K - 1)


def ce_loss(K: int, n: int, L: int, lam: float, alpha: float) -> float:
    """CE deep linear UFM loss at the DNC-ETF point of scale α, common λ (docs/theory.md §4.7):

        log(1 + (K−1)e^{−α}) + (λ/2)(L+1)(K−1) x²,   x = (α√n)^{1/(L+1)},

    since each of the L+1 factors has K−1 singular values x (‖H_1‖² = ‖W_l‖² = (K−1)x²)."""
    K, n, L = _check_int("K", K, 2), _check_int("n", n, 1), _check_int("L", L, 1)
    x = ce_x(alpha, n, L)
    return ce_fit(K, alpha) + 0.5 * float(lam) * (L + 1) * (K - 1) * x * x


def ce_optimal_alpha(K: int, n: int, L: int, lam: float) -> float:
    """Stationary scale α* of the CE loss along the DNC-ETF family (docs/theory.md §4.7):

        α/(e^α + K − 1) = λ (α√n)^{2/(L+1)}.

    In log form h(α) = log α − log(e^α+K−1) − log λ − (2/(L+1)) log(α√n) = 0. For L ≥ 2, h rises
    to a maximum (where α p(α) = (L−1)/(L+1)) and then falls, so there are two roots: the smaller
    is a local maximum of the loss along α, the larger a local minimum; we return the larger.
    For L = 1, h is decreasing and has one root. Returns 0.0 when no root exists (λ too large:
    the only minimiser along the family is α = 0). The returned α* is a local minimum along the
    family and a critical point of the full loss; it is not claimed to be the global minimum
    (DNC is not globally optimal for CE in general, docs/theory.md §1.5).
    """
    K, n, L = _check_int("K", K, 2), _check_int("n", n, 1), _check_int("L", L, 1)
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0 (got {lam!r})")
    c = 2.0 / (L + 1)
    log_lam_n = math.log(lam) + 0.5 * c * math.log(n)

    def h(a: float) -> float:
        log_den = a + math.log1p((K - 1) * math.exp(-a))
        return (1.0 - c) * math.log(a) - log_den - log_lam_n

    if L == 1:
        # h(α) = −log(e^α + K − 1) − log(λ√n); h(0+) = −log K − log(λ√n).
        if -math.log(K) - log_lam_n <= 0.0:
            return 0.0
        lo = 0.0
    else:
        target = (L - 1) / (L + 1)
        lo = float(brentq(lambda a: a * ce_probabilities(K, a)[0] - target, 1e-300, K, **_BRENT))
        if h(lo) <= 0.0:
            return 0.0
    hi = max(2.0 * lo, 1.0)
    while h(hi) > 0.0:
        hi *= 2.0
    if L == 1 and lo == 0.0:
        lo = min(1e-300, hi)
        if h(lo) <= 0.0:  # pragma: no cover - excluded above
            return 0.0
    return float(brentq(h, lo, hi, **_BRENT))


def ce_layer_eigenvalues(K: int, n: int, L: int, x: float) -> list[tuple[float, int]]:
    """Non-zero eigenvalues (value, multiplicity), descending, of every layer's CE fit Hessian at
    the DNC-ETF point with common singular value x (docs/theory.md §4.7; the same for all layers).

    In frame coordinates X ∈ R^{(K−1)×(K−1)} the Hessian is c_0 [q I + r(1−r) Σ_c b_c b_cᵀ], with
    c_0 = α²/(K x²), b_c = vec(v_c v_cᵀ) (v_c the ETF vectors, ‖v_c‖² = 1 − 1/K), and
    (p, q) the softmax probabilities, r = p − q. The Gram matrix of the b_c is
    ((K−2)/K) I + J/K², so:

    * 1 at c_0 [q + r(1−r)(1−1/K)] (the gradient direction Σ_c μ_c^{(l+1)}μ_c^{(l)ᵀ});
    * K−1 at c_0 [q + r(1−r)(1−2/K)];
    * K²−3K+1 at c_0 q (the mini-bulk); total rank (K−1)².

    For K = 2 the space is one-dimensional: a single eigenvalue c_0 [q + r(1−r)/2].
    """
    K, n, L = _check_int("K", K, 2), _check_int("n", n, 1), _check_int("L", L, 1)
    x = float(x)
    if not x > 0:
        raise ValueError(f"x must be > 0 (got {x})")
    alpha = ce_alpha(x, n, L)
    p, q = ce_probabilities(K, alpha)
    r = p - q
    c0 = alpha * alpha / (K * x * x)
    top = c0 * (q + r * (1 - r) * (1 - 1 / K))
    if K == 2:
        return [(top, 1)]
    groups = [(top, 1), (c0 * (q + r * (1 - r) * (1 - 2 / K)), K - 1), (c0 * q, K * K - 3 * K + 1)]
    return sorted(groups, key=lambda vm: -vm[0])


def ce_optimal_layer_eigenvalues(K: int, n: int, L: int, lam: float) -> list[tuple[float, int]]:
    """:func:`ce_layer_eigenvalues` at the stationary scale α* of :func:`ce_optimal_alpha`
    ([] if there is no non-zero stationary scale)."""
    alpha = ce_optimal_alpha(K, n, L, lam)
    if alpha == 0.0:
        return []
    return ce_layer_eigenvalues(K, n, L, ce_x(alpha, n, L))


def ce_orthogonal_layer_eigenvalues(K: int, n: int, L: int, x: float) -> list[tuple[float, int]]:
    """CE layer fit-Hessian eigenvalues at a *non-centred* orthogonal-frame point
    (docs/theory.md §4.7, "why the counts differ"): all L+1 factors have K singular values x,
    logits α e_c, α as in :func:`ce_alpha`. The Hessian is block diagonal over classes, c·P_c
    with c = α²/(K x²) and P_c = diag(p_c) − p_c p_cᵀ, whose eigenvalues are K p q (once),
    q (K−2 times) and 0. Hence K at c K p q and K(K−2) at c q (rank K(K−1)); returned
    descending, zeros omitted."""
    K, n, L = _check_int("K", K, 2), _check_int("n", n, 1), _check_int("L", L, 1)
    x = float(x)
    if not x > 0:
        raise ValueError(f"x must be > 0 (got {x})")
    alpha = ce_alpha(x, n, L)
    p, q = ce_probabilities(K, alpha)
    c = alpha * alpha / (K * x * x)
    groups = [(c * K * p * q, K), (c * q, K * (K - 2))]
    return sorted([vm for vm in groups if vm[1] > 0], key=lambda vm: -vm[0])
