"""The analysis report (docs/design.md §5): measurement beside prediction, for any checkpoint.

For each layer l = 1..L of a checkpoint the report holds the fit-Hessian's top eigenvalues (and a
log-binned histogram of its whole spectrum), the outlier count and max/min ratio of the top K²,
(null, with ``outlier_ratio_note`` saying why, when the K²-th is zero up to rounding),
the alignment f_cc' and subspace capture of the predicted eigen-matrices μ_c^{(l+1)}μ_{c'}^{(l)ᵀ},
the gradient coefficients (natural basis and Hessian eigenbasis), Papyan's Gauss–Newton split,
the weight's singular structure and the DNC metrics; ``--full`` adds the top of the full
fit-Hessian over all weights (or weights + features). Every Hessian here is the **fit-term**
Hessian unless a key says ``total``.

How each layer's Hessian is computed is chosen by :func:`dufm_core.curvature.spectrum.
layer_spectrum`:

* linear MSE: exactly, from the Kronecker factors P = A^{(l+1)ᵀ}A^{(l+1)}, Q = H_lH_lᵀ/N
  (docs/theory.md §4.1) — the whole spectrum in O(d³);
* otherwise: the dense autograd Hessian when the layer has ≤ ``DENSE_MAX`` weights, else a block
  eigensolver (block ≥ K², the outliers are degenerate) on Hessian–matrix products.

This module analyses a model in memory. Reports of a run's checkpoints, cached in its folder, and
the series over training are :mod:`dufm_core.reports`' business; a real network's report wraps
this one (:mod:`dufm_core.network_report`). The builders here make the report's JSON (a dict);
:mod:`dufm_core.reports` hands it on as a typed :class:`dufm_core.report_types.Report`
(``Report.from_json``), so the file written and the record read are the same JSON.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from dufm_core import alignment, collapse, gradients, theory, tracking, weights
from dufm_core.config import RunConfig
from dufm_core.curvature.attribution import CLUSTER_REL_TOL, attribution
from dufm_core.curvature.bottom import (
    BOTTOM_M,
    PlusDiagonal,
    bottom_eigenvalues,
    verdict,
    with_known_values,
)
from dufm_core.curvature.density import slq_log_density
from dufm_core.curvature.eigensolvers import count_outliers, top_eigenpairs
from dufm_core.curvature.gauss_newton import gn_split
from dufm_core.curvature.operators import regulariser_diagonal
from dufm_core.curvature.params import param_set
from dufm_core.curvature.range_space import RangeSpaceOperator, range_space
from dufm_core.curvature.spectrum import DENSE_MAX, hessian_operator, layer_spectrum
from dufm_core.curvature.trace import exact_trace, full_fit_trace, hutch_pp
from dufm_core.models import DeepUFM, fit_term
from dufm_core.predictions import for_ufm
from dufm_core.report_types import REPORT_VERSION
from dufm_core.runtime import cpu_threads, threads_for

HIST_BINS = 48
GN_FULL_MAX = 1500  # past this min(N·K, d_out·d_in) the GN within/total parts: top values only
TAUS = (0.0, 0.5, 1.0)
FULL_PARAMS = ("weights", "weights+features")
SLQ_PROBES, SLQ_STEPS = 4, 40  # spectral density of the full Hessian (log10|λ| axis)
TRACE_MATVECS = 96  # Hutch++ budget where no exact trace is at hand
BOTTOM_BLOCK = 4  # block of the full bottom solve started away from the outliers (bottom_start)

Progress = Callable[[str, float], None] | None


# --------------------------------------------------------------------------- small helpers
def _f(x: Any) -> float | None:
    """A float for JSON: non-finite becomes None."""
    v = float(x)
    return v if math.isfinite(v) else None


def _list(t: Any) -> Any:
    """Tensor / array / nested lists to plain JSON lists (non-finite → None)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().double().numpy()
    if isinstance(t, np.ndarray):
        t = t.tolist()
    if isinstance(t, (list, tuple)):
        return [_list(v) for v in t]
    if isinstance(t, (float, int, np.floating, np.integer)) and not isinstance(t, bool):
        return _f(t)
    return t


def spectrum_histogram(values: torch.Tensor, bins: int = HIST_BINS) -> dict[str, Any]:
    """Log-binned histogram of a spectrum: counts of λ > 0 and λ < 0 in bins of log10|λ| between
    the zero floor (1e-13·max|λ|) and max|λ|, plus the number of numerical zeros."""
    v = values.detach().cpu().double()
    amax = float(v.abs().max()) if v.numel() else 0.0
    if amax == 0.0:
        return {"edges": [], "positive": [], "negative": [], "zeros": int(v.numel()), "floor": 0.0}
    floor = amax * 1e-13
    zero = v.abs() <= floor
    lo, hi = math.log10(floor), math.log10(amax) + 1e-9
    edges = np.linspace(lo, hi, bins + 1)
    pos = np.histogram(np.log10(v[(v > floor)].numpy()), bins=edges)[0]
    neg = np.histogram(np.log10((-v[(v < -floor)]).numpy()), bins=edges)[0]
    return {"edges": edges.tolist(), "positive": pos.tolist(), "negative": neg.tolist(),
            "zeros": int(zero.sum()), "floor": floor}


def outlier_ratio(top: torch.Tensor, K2: int, dim: int, exact: bool,
                  tol: float) -> tuple[float | None, str | None]:
    """(max/min of the top K² eigenvalues, None) — or (None, the reason) when that ratio would
    divide by a number that is zero up to rounding.

    The K²-th eigenvalue counts as a numerical zero when it is at most ``floor`` · λ_max with
    floor = dim · ε(float64) (the rank tolerance of ``numpy.linalg.matrix_rank``: dim · ε · the
    largest value) for an exact or dense spectrum, and at least the eigensolver's relative
    tolerance ``tol`` for an iterative one. Below that the layer's Hessian has rank < K² (e.g.
    cross-entropy with K = 2, or ReLU layers with dead units) and the ratio, ~1e16, would be noise.
    """
    top_k2 = top[:K2].double()
    if top_k2.numel() < K2:
        return None, f"the layer has {dim} weights, fewer than K² = {K2}"
    first, last = float(top_k2[0]), float(top_k2[-1])
    floor = dim * torch.finfo(torch.float64).eps if exact else max(
        dim * torch.finfo(torch.float64).eps, tol)
    if not (first > 0 and math.isfinite(first) and math.isfinite(last)):
        return None, "the largest eigenvalue is not positive and finite"
    if last <= floor * first:
        return None, (f"the K²-th eigenvalue ({last:.3g}) is zero up to rounding (≤ {floor:.2g} "
                      f"× λ_max): the Hessian has rank < K² = {K2} here")
    return first / last, None


def _erank(values: torch.Tensor) -> float:
    """Roy–Vetterli effective rank of the positive part of a spectrum."""
    return collapse.effective_rank(values.clamp_min(0.0))


# --------------------------------------------------------------------------- predictions
def predictions(cfg: RunConfig, model: DeepUFM | None = None) -> dict[str, Any]:
    """The report's ``theory`` block: closed forms for MSE (linear, and ReLU at its best DNC
    point), or the CE DNC-point values at the measured logit scale α."""
    K, n, L = cfg.K, cfg.n, cfg.depth
    out: dict[str, Any] = {"gamma": None, "lambda_crit": None, "nontrivial": None, "loss": None,
                           "layer_outlier": [None] * L, "full_outliers": []}
    applies = for_ufm(cfg)  # cfg is the UFM's (a real network's report passes its UFM view)
    positive = applies.positive
    if applies.closed_form:
        pred = applies.prediction()
        out.update(_list(pred.to_dict()))
        out["full_outliers_with_features"] = _list(pred.full_outliers_with_features)
        if cfg.activation == "relu":
            out["relu_layer_eigenvalues"] = {
                str(tau): _list(theory.relu_layer_eigenvalues(K, n, cfg.lam_ws, cfg.lam_h, tau))
                for tau in TAUS}
            out["note"] = ("ReLU: values of the best DNC point (non-negative features, "
                           "docs/theory.md §4.6); autograd's Hessian uses σ'(0) = 0, i.e. τ = 0")
        return out
    if cfg.loss == "ce":
        out["note"] = ("cross-entropy: no global closed form; DNC-point values "
                       "(docs/theory.md §4.7) at the stationary scale α* and at the measured α")
        if positive and len(set(cfg.lam_ws)) == 1 and cfg.lam_ws[0] == cfg.lam_h:
            a_star = theory.ce_optimal_alpha(K, n, L, cfg.lam_h)
            out["ce_alpha_star"] = _f(a_star)
            if a_star > 0:
                out["ce_loss_at_alpha_star"] = _f(theory.ce_loss(K, n, L, cfg.lam_h, a_star))
        if model is not None:
            Z = model().detach().double()  # (N, K)
            M = collapse.class_means(Z.T, model.labels, K)  # K × K, column c = mean logits
            # at DNC z_c = α(e_c − 1/K): diagonal means α(1 − 1/K), off-diagonal −α/K
            off = (M.sum() - torch.diagonal(M).sum()) / (K * K - K)
            alpha = float(torch.diagonal(M).mean() - off)
            if alpha > 0:
                out["ce_alpha_measured"] = alpha
                x = theory.ce_x(alpha, n, L)
                groups = theory.ce_layer_eigenvalues(K, n, L, x)
                out["ce_layer_eigenvalues"] = [[_f(v), m] for v, m in groups]
                out["layer_outlier"] = [_f(groups[0][0])] * L
    return out


def _layer_predicted(cfg: RunConfig, th: dict[str, Any], l: int) -> tuple[float | None, list]:
    """(hessian_predicted, predicted top-K² list) for layer l."""
    K2 = cfg.K**2
    value = th["layer_outlier"][l - 1]
    if cfg.loss == "ce" and th.get("ce_layer_eigenvalues"):
        vals = [v for v, m in th["ce_layer_eigenvalues"] for _ in range(m)]
        return value, (vals + [0.0] * K2)[:K2]
    if cfg.activation == "relu" and th.get("relu_layer_eigenvalues"):
        return value, th["relu_layer_eigenvalues"]["0.0"][l - 1]
    return value, ([value] * K2 if value is not None else [])


# --------------------------------------------------------------------------- one layer
def analyze_layer(model: DeepUFM, cfg: RunConfig, l: int, th: dict[str, Any],
                  tol: float = 1e-10) -> dict[str, Any]:
    """Everything the report says about layer l (see the module docstring)."""
    K = cfg.K
    K2 = K * K
    d_out, d_in = model.weights[l - 1].shape
    m = min(K2 + K, d_out * d_in)
    key = tracking.layer_key(l)  # eigenspace tracking: warm start, keep the vectors
    hess = layer_spectrum(model, l, cfg.loss, m, tol, dense_max=DENSE_MAX,
                          v0=tracking.warm_start(key, d_out * d_in))
    tracking.record(key, hess.values, hess.vectors, K2)
    top = hess.values
    U_top = hess.vectors[:, : min(K2, hess.vectors.shape[1])]
    M_out, M_in = alignment.layer_means(model, l)
    basis = alignment.predicted_basis(M_out, M_in)
    align = alignment.alignment_report(basis, hvp=hess.operator, U_top=U_top)
    G = gradients.layer_gradient(model, l, cfg.loss)
    coeff = gradients.gradient_coefficients(G, basis)
    eig_coeff, inside = gradients.eigenbasis_coefficients(G.reshape(-1).double(), U_top)
    per_class = gradients.per_class_gradients(model, l, cfg.loss)
    per_class_coeff = gradients.per_class_coefficients(per_class, basis)
    grad_norm = float(G.norm())
    gn = gn_split(model, l, cfg.loss, max_size=GN_FULL_MAX).to_dict()
    wrep = weights.layer_weight_report(model, l)
    feats = model.layer_features()
    H_in = feats.post[l - 1].double()
    nc = collapse.nc1(H_in, model.labels, K)
    frame = "etf" if cfg.loss == "ce" else "orthogonal"
    predicted, predicted_top = _layer_predicted(cfg, th, l)
    ratio, ratio_note = outlier_ratio(top, K2, d_out * d_in, hess.exact_spectrum, tol)
    f = torch.as_tensor(align["alignment_f"], dtype=torch.float64)
    return {
        **_layer_bottom_trace(hess),
        "layer": l,
        "shape": [d_out, d_in],
        "hessian_method": hess.method,
        "hessian_seconds": hess.seconds,
        "hessian_converged": hess.converged,
        "hessian_residual_max": hess.residual_max,
        "hessian_top": _list(top),
        "hessian_top_total": _list(top + cfg.lam_ws[l - 1]),
        "hessian_predicted": predicted,
        "hessian_predicted_top": _list(predicted_top),
        "hessian_histogram": spectrum_histogram(hess.spectrum) if hess.exact_spectrum else None,
        "hessian_effective_rank": _erank(hess.spectrum) if hess.exact_spectrum else None,
        "outlier_count": count_outliers(top, rule="gap", m=m),
        "outlier_count_relative": count_outliers(top, rule="relative"),
        "outlier_ratio": ratio,
        "outlier_ratio_note": ratio_note,
        "alignment_f": align["alignment_f"],
        "alignment_f_mean": _f(f.mean()),
        "subspace_capture": align["subspace_capture"],
        "principal_angles": align["principal_angles"],
        "max_principal_angle": align["max_principal_angle"],
        "cosine_heatmap": align["cosine_heatmap"],
        "gradient_norm": grad_norm,
        "gradient_coefficients": _list(coeff),
        "gradient_eigenbasis": _list(eig_coeff),
        "gradient_inside_fraction": _f(inside),
        "gradient_per_class_norms": _list(per_class.reshape(K, -1).norm(dim=1)),
        "gradient_per_class_coefficients": _list(per_class_coeff),
        "gradient_beta": _f(gradients.gradient_beta(model, l, cfg.loss)),
        "gradient_beta_predicted": (th.get("gradient_beta") or [None] * cfg.depth)[l - 1],
        "gn_split": {k: gn[k] for k in ("ranks", "within", "cross", "class", "total",
                                        "orthogonality_error") if k in gn},
        "weight_singular_values": wrep["singular_values"],
        "weight_singular_predicted": (th.get("sigma") or [None] * cfg.depth)[l - 1],
        "weight_right_capture": wrep["right_capture"],
        "weight_left_capture": wrep["left_capture"],
        "effective_rank": wrep["effective_rank"],
        "stable_rank": wrep["stable_rank"],
        "threshold_rank": wrep["threshold_rank"],
        "dnc3_cos": wrep["dnc3_cos"],
        "nc1": _f(nc["nc1"]),
        "nc1_fro": _f(nc["nc1_fro"]),
        "nc2": _f(collapse.nc2(collapse.class_means(H_in, model.labels, K), frame)),
        "nc3": _f(collapse.nc3(model.weights[l - 1].detach().double(),
                               collapse.class_means(H_in, model.labels, K), frame)),
    }


def _layer_bottom_trace(hess: Any) -> dict[str, Any]:
    """``hessian_bottom`` (≥ 3 smallest, ascending) and ``hessian_trace`` of a layer's fit
    Hessian (docs/design.md §8.3): free from an exact or dense spectrum (the trace then from the
    Kronecker factors or the diagonal); otherwise a bounded shifted block solve and Hutch++."""
    exact = hess.exact_spectrum
    bot = bottom_eigenvalues(hess.operator, BOTTOM_M, spectrum=hess.spectrum if exact else None,
                             sigma=float(hess.values[0]))
    tr = exact_trace(hess.operator) if exact else hutch_pp(hess.operator, TRACE_MATVECS)
    return {"hessian_bottom": _list(bot.values), "hessian_bottom_method": bot.method,
            "hessian_bottom_converged": bot.converged, "hessian_trace": _f(tr.value),
            "hessian_trace_stderr": _f(tr.stderr), "hessian_trace_method": tr.method}


def bottom_start(dim: int, top: torch.Tensor | None, block: int = BOTTOM_BLOCK,
                 seed: int = 0) -> torch.Tensor | None:
    """Start block of the full bottom solve: ``block`` Gaussian vectors with the converged top
    eigenvectors ``top`` (dim, k) projected out (twice), or None where the problem is too small
    for that to leave room (dim < 4·(k + block)).

    Why: a random block's error is dominated by its components along the outliers, the
    eigenvalues farthest from the bottom; without them the shifted solve meets its tolerance in
    fewer block steps (case A, width 256: 12 products instead of 32). Nothing is lost: the
    Krylov space still reaches those directions through the products wherever the total Hessian
    mixes them in, and where it does not (λ·I regulariser) they are eigenvectors at the *top*.
    """
    k = 0 if top is None else int(top.shape[1])
    if dim < 4 * (k + block):
        return None
    X = torch.randn(dim, block, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    if top is not None and k:
        Y = top.to(torch.float64)
        for _ in range(2):
            X = X - Y @ (Y.T @ X)
    return X


def _full_bottom_verdict(model: DeepUFM, cfg: RunConfig, params: str, fit_top: float,
                         layer_traces: list[float] | None, op: Any,
                         top_vectors: torch.Tensor | None = None) -> dict[str, Any]:
    """The §8.3 keys of ``full_hessian``: ``bottom`` of the total Hessian, ``trace`` of the fit
    Hessian, ``verdict`` with ``verdict_detail`` (dufm_core.curvature.bottom). ``top_vectors``:
    the fit Hessian's converged top eigenvectors, kept out of the bottom solve's start block.
    ``op`` is the fit Hessian or its :class:`RangeSpaceOperator` (vectors in its coordinates):
    then the total Hessian is C + diag(λ) on the range space and the regulariser's λ_f on the
    complement's share of each block (exact, no solve)."""
    t0 = time.perf_counter()
    pset = param_set(model, params)
    reg = regulariser_diagonal(pset, cfg.lam_ws, cfg.lam_h)
    rs = op if isinstance(op, RangeSpaceOperator) else None
    total = PlusDiagonal(op, rs.diagonal_in_range(reg) if rs is not None else reg)
    # Weyl: λ_max(fit + diag(λ)) ≤ λ_max(fit) + max λ, a valid shift and the tolerances' scale
    lam_max = fit_top + max([*cfg.lam_ws, cfg.lam_h if "features" in params else 0.0])
    v0 = bottom_start(op.dim, top_vectors)
    bot = bottom_eigenvalues(total, BOTTOM_M, sigma=lam_max, v0=v0,
                             block=BOTTOM_BLOCK if v0 is not None else None)
    if rs is not None:  # the fit Hessian is 0 on the complement: the total is λ_f there
        lams = reg[torch.tensor(pset.offsets[:-1])]
        known = torch.cat([lams[i].repeat(min(k, BOTTOM_M))
                           for i, k in enumerate(rs.block_null_dims())])
        bot = with_known_values(bot, known, "λ_f on the complement of the range space")
    # ∇ of the total loss over the set: one plain backward pass (fresh leaves, model untouched)
    leaves = {n: t.clone().requires_grad_(True) for n, t in zip(pset.names, pset.tensors(model),
                                                                strict=True)}
    with torch.enable_grad():
        out = torch.func.functional_call(model, leaves, ())
        loss = fit_term(out, model.labels, cfg.loss) + sum(
            0.5 * (cfg.lam_h if n == "features" else cfg.lam_ws[int(n.split(".")[1])])
            * t.square().sum() for n, t in leaves.items())
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(leaves.values()))])
    theta = torch.cat([t.detach().reshape(-1) for t in leaves.values()]).double()
    v, detail = verdict(bot, lam_max, float(g.norm()), float(theta.norm()))
    detail.update(bottom_method=bot.method, bottom_matvecs=bot.matvecs,
                  bottom_residual_max=bot.residual_max)
    tr_value = full_fit_trace(model, params, cfg.loss, layer_traces)
    if tr_value is not None:
        tr = {"trace": tr_value, "trace_stderr": 0.0,
              "trace_method": "exact: sum of the diagonal blocks' traces"}
    else:
        est = hutch_pp(op, TRACE_MATVECS)
        tr = {"trace": est.value, "trace_stderr": est.stderr, "trace_method": est.method}
    return {"bottom": _list(bot.values), **tr, "verdict": v, "verdict_detail": _list(detail),
            "bottom_seconds": time.perf_counter() - t0}


def predicted_bases(model: DeepUFM, names: tuple[str, ...],
                    rtol: float = 1e-10) -> list[torch.Tensor | None]:
    """Per parameter block (``weights.{l-1}`` is W_l; the features get None) an orthonormal
    basis of the span of the layer's predicted outlier directions vec_r(μ_c^{(l+1)}
    μ_{c'}^{(l)ᵀ}) (at most K² columns; directions below ``rtol`` of the largest singular value
    are dropped, e.g. with collapsed, rank-deficient means): ``alignment.predicted_span``."""
    out: list[torch.Tensor | None] = []
    for name in names:
        if not name.startswith("weights."):
            out.append(None)
            continue
        out.append(alignment.predicted_span(
            *alignment.layer_means(model, int(name.split(".")[1]) + 1), rtol))
    return out


# --------------------------------------------------------------------------- full Hessian
def _full_top(op: Any, m: int, K2: int, tol: float,
              block: int) -> tuple[Any, RangeSpaceOperator | None]:
    """The top ``m`` eigenpairs of the full fit Hessian (the K² outliers to ``tol``; the K
    further values are bulk Ritz estimates, flagged), warm-started from the last checkpoint's
    eigenspace, and the range-space operator they were solved on (None: on ``op`` itself).

    For the linear UFM the solve runs on C = Qᵀ H Q (:mod:`dufm_core.curvature.range_space`),
    whose nonzero spectrum is H's: the same values to rounding at a fraction of the basis work.
    H also has exact zeros outside the range space, so when C's m-th value is negative the top
    m of H would include zeros: then the solve is repeated on H itself (vectors of H)."""
    rs = range_space(op)
    v0 = tracking.warm_start(tracking.FULL, op.dim)
    if rs is not None and rs.dim >= block:
        res = top_eigenpairs(rs, m, block=block, tol=tol,
                             need=min(K2, m), v0=rs.compress(v0) if v0 is not None else None)
        if float(res.values[-1]) >= 0.0 or rs.null_dim == 0:
            return res, rs
    res = top_eigenpairs(op, m, block=block, tol=tol, need=min(K2, m), v0=v0)
    return res, None


def analyze_full(model: DeepUFM, cfg: RunConfig, th: dict[str, Any], params: str = "weights",
                 tol: float = 1e-10, layer_traces: list[float] | None = None) -> dict[str, Any]:
    """Top K² + K eigenvalues of the full fit-Hessian over ``params`` beside the prediction,
    and the §8.3 keys (bottom, trace, verdict, attribution). ``layer_traces``: the layers'
    fit-Hessian traces when known, for an exact full trace beyond the linear-MSE model."""
    if params not in FULL_PARAMS:
        raise ValueError(f"full_params must be one of {' | '.join(FULL_PARAMS)} (got {params!r})")
    K2 = cfg.K**2
    op = hessian_operator(model, params, loss=cfg.loss, part="fit")
    m = min(K2 + cfg.K, op.dim)
    t0 = time.perf_counter()
    res, rs = _full_top(op, m, K2, tol, block=max(m, K2 + cfg.K))
    solve_op = rs if rs is not None else op
    if tracking.capture_open():  # eigenspace tracking keeps H's vectors (the top K²)
        top = res.vectors[:, :K2]
        tracking.record(tracking.FULL, res.values, rs.expand(top) if rs else top, K2)
    predicted = predicted_bases(model, op.pset.names)
    if rs is not None:  # attribution in the range space's coordinates (module range_space)
        predicted = [None if P is None else rs.compress_block(i, P)
                     for i, P in enumerate(predicted)]
    key = "full_outliers" if params == "weights" else "full_outliers_with_features"
    dens = slq_log_density(solve_op, steps=SLQ_STEPS, probes=SLQ_PROBES, grid_points=200,
                           null_dim=rs.null_dim if rs is not None else 0)
    conv = [bool(c) for c in res.converged]
    usable = conv.index(False) if False in conv else len(conv)
    extra = {**_full_bottom_verdict(model, cfg, params, float(res.values[0]), layer_traces,
                                    solve_op, res.vectors[:, :usable]),
             "attribution": attribution(res.values, res.vectors,
                                        rs.sizes if rs is not None else op.pset.sizes,
                                        CLUSTER_REL_TOL, dim=op.dim, usable=usable,
                                        predicted=predicted),
             "attribution_blocks": list(op.pset.names),
             "attribution_rel_tol": CLUSTER_REL_TOL}
    return {
        **extra,
        "params": params, "dim": op.dim,
        "top": _list(res.values), "predicted": th.get(key) or [],
        "method": f"{res.method} on {type(op).__name__} products" + (
            f" in its range space (dim {rs.dim} of {rs.dim + rs.null_dim})" if rs else ""),
        "seconds": time.perf_counter() - t0, "matvecs": res.matvecs,
        "residual_norms": _list(res.residual_norms),
        "converged": bool(res.converged[: min(K2, m)].all()),
        "converged_each": [bool(c) for c in res.converged],
        "outlier_count": count_outliers(res.values, rule="gap", m=m),
        "density": {"axis": "log10|λ|", "grid": _list(dens.grid), "density": _list(dens.density),
                    "method": f"stochastic Lanczos quadrature, {SLQ_PROBES} probes × "
                              f"{SLQ_STEPS} steps", "floor": dens.floor},
    }


# --------------------------------------------------------------------------- whole report
def analyze_model(model: DeepUFM, cfg: RunConfig, step: int, run_id: str = "",
                  full: bool = False, full_params: str = "weights", tol: float = 1e-10,
                  progress: Progress = None) -> dict[str, Any]:
    """The report of docs/design.md §5 for a model (no caching)."""
    with cpu_threads(threads_for(max(cfg.dims), next(model.parameters()).device)):
        return _analyze_model(model, cfg, step, run_id, full, full_params, tol, progress)


def _analyze_model(model: DeepUFM, cfg: RunConfig, step: int, run_id: str, full: bool,
                   full_params: str, tol: float, progress: Progress) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = model.double() if next(model.parameters()).dtype != torch.float64 else model
    th = predictions(cfg, model)
    with torch.no_grad():
        logits = model()
        fit = float(fit_term(logits, model.labels, cfg.loss))
        reg = float(model.reg_term(cfg.lam_ws, cfg.lam_h))
    layers = []
    for l in range(1, cfg.depth + 1):
        if progress:
            progress(f"layer {l} of {cfg.depth}", (l - 1) / (cfg.depth + (1 if full else 0)))
        layers.append(analyze_layer(model, cfg, l, th, tol))
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "run": run_id, "step": int(step), "config": cfg.to_dict(), "theory": th,
        "loss": {"total": fit + reg, "fit": fit, "reg": reg},
        "gamma_measured": _f(torch.diagonal(collapse.class_means(
            logits.T.double(), model.labels, cfg.K)).mean()),
        "hessian": "fit-term Hessian (total = fit + λ on the diagonal where a key says total)",
        "layers": layers,
    }
    if full:
        if progress:
            progress("full Hessian", cfg.depth / (cfg.depth + 1))
        report["full_hessian"] = analyze_full(
            model, cfg, th, full_params, tol, [r["hessian_trace"] for r in layers]
            if all(r["hessian_trace_stderr"] == 0.0 for r in layers) else None)
    report["seconds"] = time.perf_counter() - t0
    if progress:
        progress("done", 1.0)
    return report
