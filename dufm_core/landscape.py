"""Loss landscapes around a checkpoint (docs/design.md §8.4): the fit term and the total loss
on a line or a plane through the parameters.

A scan moves one parameter set θ (one layer ``layer:l``, all weights, or weights and features:
:mod:`dufm_core.curvature.params`) along directions d_1 (and d_2) and keeps every other
parameter at the checkpoint:

    1-D:  θ(t)    = θ_0 + t d_1,            t ∈ linspace(−R, R, P)
    2-D:  θ(a, b) = θ_0 + a d_1 + b d_2,    a, b ∈ linspace(−R, R, P)

Directions, each of unit Frobenius norm over the parameters it moves (except ``interp``):

* ``eig``: the i-th top eigenvector of the fit Hessian over θ (exact Kronecker / dense / block
  Krylov, as the report computes it). Inside a degenerate cluster (the K² outliers at collapse)
  "the i-th" is one vector of the cluster's eigenspace, not a unique one; its Rayleigh quotient
  is the cluster's value all the same.
* ``predicted``: the theory's outlier direction μ_c^{(l+1)} μ_{c'}^{(l)ᵀ} of one layer
  (docs/theory.md §4.1, :func:`dufm_core.alignment.predicted_basis`); the index is the class
  pair (c, c'), 1-based.
* ``random``: a filter-normalised Gaussian direction (Li et al. 2018): each row of a weight
  (one output unit, the "filter") is scaled to the norm of the same row of the weight, each
  column of H_1 (one sample) to the norm of that sample's features; then the whole direction is
  scaled to unit norm. Index i is the i-th draw of ``seed``.
* ``pca``: the principal directions of the trajectory, i.e. of the differences θ_s − θ_S of
  the checkpoints s < S to the chosen one S (no mean removed, as Li et al.); the path's
  coordinates in the plane are returned beside the grid.
* ``interp``: d = θ_S − θ_first, not normalised; the scan starts at the first checkpoint
  (t = 0) and reaches the chosen one at t = 1 (t ∈ linspace(0, R, P), R = 1 by default).

**Batched evaluation.** Each row of the grid (all P points of a 1-D scan, or one a-value of a
2-D one) is one ``torch.func.vmap`` over the parameter perturbations of one
``functional_call`` of the model: a batched forward pass instead of P passes; a small model
takes several rows per pass (up to :data:`PASS_BYTES`). The regulariser of the moved
parameters is a quadratic in the coordinates and comes from one small Gram matrix
(benchmarks/bench_landscape.py). Everything is computed in float64.

``eigenvalues`` are the Rayleigh quotients dᵀ∇²F d / dᵀd of the directions in the fit Hessian
at the chosen checkpoint; ``quadratic`` is fit(0) + λt²/2 along a 1-D ``eig`` direction (the
second-order model without the gradient term; ``slopes`` holds the directional derivatives
∇F·d that it leaves out, ``slopes_total`` those of the total loss, 0 at a critical point).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from dufm_core import alignment, resources
from dufm_core.config import ConfigError, RunConfig
from dufm_core.config_values import check_choice, check_float, check_int
from dufm_core.curvature.eigensolvers import top_eigenpairs
from dufm_core.curvature.operators import gradient
from dufm_core.curvature.params import ParamSet, param_set
from dufm_core.curvature.spectrum import DENSE_MAX, hessian_operator, layer_spectrum
from dufm_core.models import DeepUFM, fit_term

__all__ = ["DIRECTIONS", "LANDSCAPE_VERSION", "LandscapeArgs", "cached_landscape", "compute",
           "eig_directions", "filter_normalised", "grid_losses", "landscape_memory",
           "loop_losses", "pca_directions", "predicted_direction", "random_direction",
           "run_landscape"]

LANDSCAPE_VERSION = 1
DIRECTIONS = ("eig", "predicted", "random", "pca", "interp")
POINTS = (3, 201)  # allowed --points
RADIUS = (1e-8, 1e4)  # allowed --radius
MAX_EIG_INDEX = 64
MAX_RANDOM_INDEX = 1000
PASS_BYTES = 64 * 2**20  # one vmapped pass takes whole rows up to about this much memory
Progress = Callable[[str, float], None] | None
_F64 = torch.float64


# --------------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class LandscapeArgs:
    """What a scan is asked for; ``checked`` returns a copy with every value validated (one
    :class:`ConfigError` line naming the field and its range otherwise)."""

    step: int | None = None
    layer: int | None = None
    full: bool = False
    full_params: str = "weights"
    directions: str = "eig"
    index: tuple[int, ...] = (1,)
    radius: float | None = None
    points: int = 41
    seed: int = 0

    @property
    def params(self) -> str:
        """The parameter-set spec the scan moves."""
        return self.full_params if self.full else f"layer:{self.layer}"

    @property
    def two_d(self) -> bool:
        """Whether the scan is a plane (two directions)."""
        pair = 2 if self.directions == "predicted" else 1
        return len(self.index) == 2 * pair

    def checked(self, cfg: RunConfig) -> LandscapeArgs:
        """Validated against ``cfg`` (the run's config): layer in 1..L, index ranges, etc."""
        directions = check_choice("directions", self.directions, DIRECTIONS)
        full_params = check_choice("full_params", self.full_params, ("weights", "weights+features"))
        if self.full and self.layer is not None:
            raise ConfigError("layer", "give either --layer or --full, not both")
        layer = None if self.full else check_int("layer", cfg.depth if self.layer is None
                                                 else self.layer, 1, cfg.depth)
        if directions == "predicted" and self.full:
            raise ConfigError("directions", "predicted directions belong to one layer: give "
                                            "--layer l instead of --full")
        index = tuple(self.index)
        if directions == "predicted":
            if len(index) not in (2, 4):
                raise ConfigError("index", f"predicted takes a class pair c,c' (or two pairs "
                                           f"c,c',e,e' for a plane), classes in 1..{cfg.K} "
                                           f"(got {','.join(map(str, index))})")
            index = tuple(check_int("index", i, 1, cfg.K) for i in index)
        else:
            if len(index) not in (1, 2):
                raise ConfigError("index", "one index i (a line) or two i,j (a plane) "
                                           f"(got {len(index)} numbers)")
            if directions == "interp" and len(index) != 1:
                raise ConfigError("index", "interp is one direction (a line): give --index 1")
            hi = {"eig": MAX_EIG_INDEX, "random": MAX_RANDOM_INDEX, "pca": MAX_EIG_INDEX,
                  "interp": 1}[directions]
            index = tuple(check_int("index", i, 1, hi) for i in index)
        if len(index) == 2 * (2 if directions == "predicted" else 1) and \
                index[: len(index) // 2] == index[len(index) // 2:]:
            raise ConfigError("index", "the two directions of a plane must differ")
        radius = None if self.radius is None else check_float("radius", self.radius, *RADIUS)
        points = check_int("points", self.points, *POINTS)
        seed = check_int("seed", self.seed, 0, 2**31 - 1)
        step = None if self.step is None else check_int("step", self.step, 0, 10**12)
        return LandscapeArgs(step, layer, bool(self.full), full_params, directions, index,
                             radius, points, seed)

    def key(self) -> str:
        """A short name for the cache file of these arguments (the step included)."""
        text = json.dumps({**asdict(self), "version": LANDSCAPE_VERSION}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


def parse_index(text: str) -> tuple[int, ...]:
    """``"3"`` → (3,), ``"1,2"`` → (1, 2); a ConfigError naming ``index`` otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or len(parts) > 4 or not all(p.lstrip("-").isdigit() and len(p) < 10
                                              for p in parts):
        raise ConfigError("index", f"must be i or i,j (integers; for predicted a class pair "
                                   f"c,c') (got {str(text)[:40]!r})")
    return tuple(int(p) for p in parts)


# --------------------------------------------------------------------------- directions
def _unit(v: torch.Tensor) -> torch.Tensor:
    """v / ‖v‖ with the sign fixed (largest-modulus entry positive), so a vector is
    reproducible whatever sign a solver returned."""
    v = v.to(_F64)
    if float(v[v.abs().argmax()]) < 0:
        v = -v
    return v / v.norm()


def eig_directions(model: nn.Module, pset: ParamSet, loss: str,
                   indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``indices``-th (1-based) top eigenvectors of the fit Hessian over ``pset``: (dim,
    k) unit vectors and their eigenvalues. One layer: :func:`layer_spectrum` (the report's
    method); a larger set: dense ``eigh`` up to DENSE_MAX parameters, block Krylov above."""
    m = max(indices)
    if m > pset.dim:
        raise ConfigError("index", f"must be in 1..{pset.dim} here (got {m})")
    if len(pset.names) == 1 and pset.names[0].startswith("weights."):
        spec = layer_spectrum(model, int(pset.names[0].split(".")[1]) + 1, loss, m=m)
        values, vectors = spec.values, spec.vectors
    else:
        op = hessian_operator(model, pset, loss=loss, part="fit")
        if pset.dim <= DENSE_MAX:
            H = op.dense(max_dim=DENSE_MAX).double()
            evals, evecs = torch.linalg.eigh(0.5 * (H + H.T))
            values, vectors = evals.flip(0)[:m], evecs.flip(1)[:, :m]
        else:
            K2 = int(model.K) ** 2
            res = top_eigenpairs(op, m, block=max(m, K2 + int(model.K)), tol=1e-10)
            values, vectors = res.values.double(), res.vectors.double()
    cols = [_unit(vectors[:, i - 1]) for i in indices]
    return torch.stack(cols, dim=1), values[[i - 1 for i in indices]].double()


def predicted_direction(model: DeepUFM, layer: int, c: int, c2: int) -> torch.Tensor:
    """vec_r of μ_c^{(l+1)} μ_{c'}^{(l)ᵀ} / ‖·‖ for classes c, c' (1-based) of layer ``layer``."""
    M_out, M_in = alignment.layer_means(model, layer)
    b = alignment.predicted_basis(M_out, M_in)[c - 1, c2 - 1]
    if float(b.norm()) == 0.0:
        raise ConfigError("index", f"class mean {c} or {c2} is zero at this checkpoint: no "
                                   "predicted direction")
    return b.reshape(-1) / b.norm()


def filter_normalised(draw: torch.Tensor, value: torch.Tensor, by_column: bool) -> torch.Tensor:
    """``draw`` with each row (each column when ``by_column``) scaled to the norm of the same
    row (column) of ``value`` (Li et al. 2018); a zero row of ``draw`` stays zero."""
    dim = 0 if by_column else 1
    d_norm = draw.norm(dim=dim, keepdim=True)
    scale = value.norm(dim=dim, keepdim=True) / torch.where(d_norm > 0, d_norm,
                                                            torch.ones_like(d_norm))
    return draw * scale


def random_direction(model: nn.Module, pset: ParamSet, seed: int, index: int) -> torch.Tensor:
    """The ``index``-th filter-normalised Gaussian direction of ``seed`` over ``pset``, unit
    norm. Drawn on the CPU in float64, one generator per (seed, index): reproducible anywhere."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    parts = []
    for name, value in zip(pset.names, pset.tensors(model), strict=True):
        draw = torch.randn(value.shape, generator=gen, dtype=_F64)
        parts.append(filter_normalised(draw, value.double().cpu(), name == "features").reshape(-1))
    v = torch.cat(parts)
    if float(v.norm()) == 0.0:
        raise ConfigError("directions", "random: every moved parameter is zero here, so a "
                                        "filter-normalised direction is zero")
    return (v / v.norm()).to(pset.tensors(model)[0].device)


def pca_directions(diffs: torch.Tensor, indices: Sequence[int]
                   ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Principal directions of the trajectory differences ``diffs`` (S × dim, rows θ_s − θ_S):
    (dim, k) unit directions, the path coordinates (S, k) and each direction's share of the
    squared distance (s_i² / Σ s²)."""
    if diffs.shape[0] < max(indices):
        raise ConfigError("index", f"pca needs more checkpoints before this one than the index "
                                   f"(have {diffs.shape[0]}, index {max(indices)})")
    _, s, Vh = torch.linalg.svd(diffs.double(), full_matrices=False)
    dirs = torch.stack([_unit(Vh[i - 1]) for i in indices], dim=1)
    total = float(s.square().sum())
    share = [float(s[i - 1] ** 2) / total if total > 0 else 0.0 for i in indices]
    return dirs, diffs.double() @ dirs, share


# --------------------------------------------------------------------------- evaluation
def _batched(model: nn.Module, pset: ParamSet, loss: str) -> Callable[..., torch.Tensor]:
    """vmap of (moved tensors) ↦ fit term: one batched forward pass for a whole batch of
    parameter points."""
    base = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    labels = model.labels

    def one(*tensors: torch.Tensor) -> torch.Tensor:
        params = {**base, **dict(zip(pset.names, tensors, strict=True))}
        return fit_term(functional_call(model, (params, buffers), ()), labels, loss)

    return vmap(one)


def _reg_gram(pset: ParamSet, vectors: torch.Tensor, lam_w: Sequence[float],
              lam_h: float) -> torch.Tensor:
    """G with Σ_blocks (λ/2)‖θ_0 + Σ_k c_k d_k‖² = cᵀ G c for c = (1, c_1, ...) and
    ``vectors`` = [θ_0, d_1, ...] as columns: the moved parameters' regulariser on the whole
    grid from one small Gram matrix (it is a quadratic in the coordinates)."""
    G = torch.zeros(vectors.shape[1], vectors.shape[1], dtype=_F64)
    for name, lo, hi in zip(pset.names, pset.offsets[:-1], pset.offsets[1:], strict=True):
        lam = float(lam_h) if name == "features" else float(lam_w[int(name.split(".")[1])])
        block = vectors[lo:hi].double()
        G += 0.5 * lam * (block.T @ block)
    return G


def _fixed_reg(model: nn.Module, pset: ParamSet, lam_w: Sequence[float], lam_h: float) -> float:
    """The regulariser of the parameters a scan does not move (a constant of the scan)."""
    total = 0.0
    for name, p in model.named_parameters():
        if name in pset.names:
            continue
        lam = lam_h if name == "features" else lam_w[int(name.split(".")[1])]
        total += 0.5 * float(lam) * float(p.detach().double().square().sum())
    return total


def rows_per_pass(cfg_or_model: Any, dim: int, points: int) -> int:
    """How many rows of P points one vmapped pass takes: 1 when a row's points and activations
    fill :data:`PASS_BYTES`, more for small models (their passes are mostly overhead)."""
    return max(1, PASS_BYTES // max(1, _point_bytes(cfg_or_model, dim) * points))


def _point_bytes(cfg_or_model: Any, dim: int) -> int:
    """Bytes of one parameter point in a pass: the moved parameters twice and ≈ 3 activations
    of every layer over the N samples (float64)."""
    dims = list(cfg_or_model.dims)
    return 8 * (2 * dim + 3 * int(cfg_or_model.N) * sum(dims))


def grid_losses(model: nn.Module, pset: ParamSet, theta0: torch.Tensor, dirs: torch.Tensor,
                a: torch.Tensor, b: torch.Tensor | None, loss: str, lam_w: Sequence[float],
                lam_h: float, progress: Progress = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, total) at θ_0 + a_i d_1 (+ b_j d_2): shape (P,) for a line, (P, P) for a plane
    (entry [i, j] at (a_i, b_j)). Each vmapped pass takes whole rows: one row, or several when
    a row is small (:func:`rows_per_pass`)."""
    fn = _batched(model, pset, loss)
    fixed = _fixed_reg(model, pset, lam_w, lam_h)
    G = _reg_gram(pset, torch.cat([theta0[:, None], dirs], dim=1), lam_w, lam_h)
    if b is None:
        coords = a[:, None]
    else:  # the plane's points, row by row: (a_i, b_j) at i·P + j
        coords = torch.stack([a.repeat_interleave(len(b)), b.repeat(len(a))], dim=1)
    coords = coords.to(dtype=theta0.dtype, device=theta0.device)
    step = len(a) if b is None else rows_per_pass(model, pset.dim, len(b)) * len(b)
    fits = []
    for lo_pt in range(0, len(coords), step):
        c = coords[lo_pt:lo_pt + step]
        # θ_0 + Σ_k c_k d_k, one contiguous (B, *shape) block per tensor: batched products
        # of strided views are several times slower on the CPU
        fits.append(fn(*[torch.addmm(theta0[None, lo:hi], c, dirs[lo:hi].T).reshape(-1, *shape)
                         for lo, hi, shape in zip(pset.offsets[:-1], pset.offsets[1:],
                                                  pset.shapes, strict=True)]))
        if progress is not None and b is not None:
            done = min(len(coords), lo_pt + step) // len(b)
            progress(f"row {done} of {len(a)}", done / len(a))
    fit = torch.cat(fits)
    full = torch.cat([torch.ones(len(coords), 1, dtype=_F64), coords.double().cpu()], dim=1)
    total = fit + ((full @ G) * full).sum(1).to(fit.device) + fixed
    if b is None:
        return fit, total
    return fit.reshape(len(a), len(b)), total.reshape(len(a), len(b))


def loop_losses(model: nn.Module, pset: ParamSet, theta0: torch.Tensor, dirs: torch.Tensor,
                a: torch.Tensor, b: torch.Tensor | None, loss: str, lam_w: Sequence[float],
                lam_h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The same values as :func:`grid_losses` by a plain loop of forward passes (one model
    copy per point): the reference for the tests and the benchmark."""
    work = _copy(model)
    params = dict(work.named_parameters())
    pts = [(float(x), None) for x in a] if b is None else \
        [(float(x), float(y)) for x in a for y in b]
    fits, totals = [], []
    with torch.no_grad():
        for x, y in pts:
            theta = theta0 + x * dirs[:, 0] + (0.0 if y is None else y * dirs[:, 1])
            for name, t in zip(pset.names, pset.unflatten(theta), strict=True):
                params[name].copy_(t)
            fit = fit_term(work(), work.labels, loss)
            fits.append(float(fit))
            totals.append(float(fit + work.reg_term(list(lam_w), lam_h)))
    shape = (len(a),) if b is None else (len(a), len(b))
    return (torch.tensor(fits, dtype=_F64).reshape(shape),
            torch.tensor(totals, dtype=_F64).reshape(shape))


def _copy(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (the scan never changes the caller's model)."""
    import copy

    return copy.deepcopy(model).double()


# --------------------------------------------------------------------------- memory
def landscape_memory(cfg: RunConfig, dim: int, points: int, n_dirs: int,
                     n_traj: int) -> resources.MemoryEstimate:
    """Peak memory of a scan: the model in float64, the directions, the ``n_traj`` earlier
    checkpoints (pca, interp), and one vmapped pass: a row of P parameter points (several
    rows for a small model, up to :data:`PASS_BYTES`) with their batched activations."""
    model = _moved_dim(cfg, _ALL)
    one_pass = _point_bytes(cfg, dim) * points * rows_per_pass(cfg, dim, points)
    return resources.MemoryEstimate("this landscape", (
        resources.Part("model", 8 * model, "width × depth"),
        resources.Part("directions", 8 * (n_dirs + 4) * dim, "width × depth"),
        resources.Part("trajectory", 8 * n_traj * (model + dim), "checkpoint_points"),
        resources.Part("one pass of points", one_pass, "points × width × n"),
    ))


# --------------------------------------------------------------------------- the scan
def compute(model: DeepUFM, cfg: RunConfig, args: LandscapeArgs,
            trajectory: Sequence[tuple[int, nn.Module]] = (),
            progress: Progress = None) -> dict[str, Any]:
    """The landscape of ``model`` (the checkpoint of ``args.step``) for checked ``args``.
    ``trajectory`` holds (step, model) of the earlier checkpoints, oldest first (``pca``: all
    of them; ``interp``: the first)."""
    t0 = time.perf_counter()
    model = _copy(model)
    pset = param_set(model, args.params)
    theta = pset.vector(model)
    resources.check(landscape_memory(cfg, pset.dim, args.points, 2, len(trajectory)))
    loss = cfg.loss
    kind = args.directions
    origin = "checkpoint"
    extra: dict[str, Any] = {}
    eigvals: torch.Tensor | None = None
    records: list[dict[str, Any]] = []
    if progress:
        progress("directions", 0.05)
    if kind == "eig":
        dirs, eigvals = eig_directions(model, pset, loss, args.index)
        records = [{"kind": "eig", "index": i} for i in args.index]
    elif kind == "predicted":
        pairs = [args.index[k:k + 2] for k in range(0, len(args.index), 2)]
        dirs = torch.stack([predicted_direction(model, args.layer or 1, c, e) for c, e in pairs],
                           dim=1)
        records = [{"kind": "predicted", "classes": list(p)} for p in pairs]
    elif kind == "random":
        dirs = torch.stack([random_direction(model, pset, args.seed, i) for i in args.index], 1)
        records = [{"kind": "random", "index": i, "seed": args.seed} for i in args.index]
    elif kind == "pca":
        if not trajectory:
            raise ConfigError("directions", "pca needs earlier checkpoints: this is the first")
        diffs = torch.stack([pset.vector(_copy(m)) - theta for _, m in trajectory])
        dirs, coords, share = pca_directions(diffs, args.index)
        path = {"steps": [s for s, _ in trajectory] + [args.step],
                "a": [*coords[:, 0].tolist(), 0.0]}
        if dirs.shape[1] == 2:
            path["b"] = [*coords[:, 1].tolist(), 0.0]
        in_plane = coords.square().sum(1) / diffs.square().sum(1).clamp(min=1e-300)
        path["in_plane"] = [*in_plane.tolist(), 1.0]
        extra["path"] = path
        records = [{"kind": "pca", "index": i, "share": s} for i, s in zip(args.index, share,
                                                                           strict=True)]
    else:  # interp
        if not trajectory:
            raise ConfigError("directions", "interp needs an earlier checkpoint: this is the first")
        first_step, first = trajectory[0]
        start = pset.vector(_copy(first))
        dirs = (theta - start)[:, None]
        theta0, origin = start, f"first checkpoint (step {first_step})"
        records = [{"kind": "interp", "from_step": first_step}]
    norms = dirs.norm(dim=0)
    if kind != "interp":
        theta0 = theta
    for rec, nrm in zip(records, norms.tolist(), strict=True):
        rec["norm"] = nrm
    if progress:
        progress("curvature along the directions", 0.15)
    op = hessian_operator(model, pset, loss=loss, part="fit")
    Hd = op @ dirs
    rayleigh = (dirs * Hd).sum(0) / norms.square().clamp(min=1e-300)
    slopes = gradient(model, pset, loss, "fit") @ dirs
    slopes_total = gradient(model, pset, loss, "total", cfg.lam_ws, cfg.lam_h) @ dirs
    R = args.radius if args.radius is not None else _default_radius(kind, extra)
    P = args.points
    a = torch.linspace(0.0 if kind == "interp" else -R, R, P, dtype=_F64)
    b = torch.linspace(-R, R, P, dtype=_F64) if dirs.shape[1] == 2 else None
    fit, total = grid_losses(model, pset, theta0, dirs, a, b, loss, cfg.lam_ws, cfg.lam_h,
                             progress=(None if progress is None else
                                       lambda m, f: progress(m, 0.2 + 0.8 * f)))
    with torch.no_grad():
        fit0 = float(fit_term(model(), model.labels, loss))
        reg0 = float(model.reg_term(cfg.lam_ws, cfg.lam_h))
    out: dict[str, Any] = {
        "version": LANDSCAPE_VERSION, "step": args.step, "params": args.params,
        "dim": pset.dim, "origin": origin, "directions": records,
        "fit0": fit0, "total0": fit0 + reg0,
        "eigenvalues": rayleigh.tolist(), "slopes": slopes.tolist(),
        "slopes_total": slopes_total.tolist(),
        "fit": fit.tolist(), "total": total.tolist(), "radius": R, "points": P,
        "method": f"vmap over {P} parameter points per forward pass (torch.func), float64",
    }
    if b is None:
        out["t"] = a.tolist()
        quad = None
        if kind == "eig":
            quad = (fit0 + 0.5 * float(eigvals[0]) * a.square()).tolist()
        out["quadratic"] = quad
    else:
        out["a"], out["b"] = a.tolist(), b.tolist()
        out["quadratic"] = None
    if kind == "eig":
        out["hessian_eigenvalues"] = eigvals.tolist()
    out.update(extra)
    out["seconds"] = time.perf_counter() - t0
    return out


def _default_radius(kind: str, extra: dict[str, Any]) -> float:
    """1, or for pca 1.2 × the path's largest coordinate (so the whole path is on the plane)."""
    if kind == "pca":
        path = extra["path"]
        far = max(abs(x) for key in ("a", "b") for x in path.get(key, []))
        return max(1.2 * far, RADIUS[0])
    return 1.0


# --------------------------------------------------------------------------- a run
def _resolve(run_dir: str | Path, args: LandscapeArgs) -> tuple[Any, RunConfig, LandscapeArgs,
                                                                Path, list[int]]:
    """(run, config, checked args with the step filled in, cache path, checkpoint steps)."""
    from dufm_core import kinds
    from dufm_core.store import open_run

    run = open_run(run_dir)
    cfg = run.config()
    if kinds.get(cfg.model).real_network:
        raise ConfigError("model", f"landscapes are for UFM runs only (this run is {cfg.model})")
    args = args.checked(cfg)
    steps = run.checkpoints()
    if not steps:
        raise FileNotFoundError(f"{run.path}: no checkpoint yet")
    step = steps[-1] if args.step is None else args.step
    if step not in steps:
        shown = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
        raise ConfigError("step", f"no checkpoint at step {step} (have {shown})")
    args = LandscapeArgs(**{**asdict(args), "step": step})
    return run, cfg, args, run.analysis_dir / f"landscape_{args.key()}.json", steps


def cached_landscape(run_dir: str | Path, args: LandscapeArgs) -> dict[str, Any] | None:
    """The stored scan of ``args`` in the run's analysis/ folder, or None (nothing computed)."""
    from dufm_core.store import read_json

    _, _, args, cache, _ = _resolve(run_dir, args)
    if not cache.is_file():
        return None
    try:
        data = read_json(cache)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("args") == _args_json(args) else None


def run_landscape(run_dir: str | Path, args: LandscapeArgs, out: str | Path | None = None,
                  progress: Progress = None) -> tuple[Path, dict[str, Any]]:
    """Scan a run's checkpoint and write the JSON (atomically): ``out``, or by default
    ``analysis/landscape_<key>.json`` in the run, where a previous scan with the same
    arguments is reused. Returns (path, the JSON). One-line errors: ConfigError (bad value,
    above the memory cap), FileNotFoundError, CheckpointError."""
    from dufm_core import kinds
    from dufm_core.store import atomic_write_json

    run, cfg, args, cache, steps = _resolve(run_dir, args)
    data = cached_landscape(run_dir, args)
    if data is None:
        earlier = [s for s in steps if s < args.step]
        if args.directions == "interp":
            earlier = earlier[:1]
        elif args.directions != "pca":
            earlier = []
        # refused before any checkpoint is loaded: the trajectory's models count in full
        resources.check(landscape_memory(cfg, _moved_dim(cfg, args), args.points, 2,
                                         len(earlier)))
        load = lambda s: kinds.load_checkpoint(run.checkpoint_path(s)).model  # noqa: E731
        trajectory = [(s, load(s)) for s in earlier]
        data = compute(load(args.step), cfg, args, trajectory, progress)
        data["args"] = _args_json(args)
        data["run_id"] = run.id
        run.analysis_dir.mkdir(exist_ok=True)
        atomic_write_json(cache, data)
    if out is not None:
        atomic_write_json(out, data)
        return Path(out), data
    return cache, data


_ALL = LandscapeArgs(full=True, full_params="weights+features")


def _moved_dim(cfg: RunConfig, args: LandscapeArgs) -> int:
    """How many parameters a scan of ``args`` moves, from the config alone."""
    d = cfg.dims
    sizes = [d[i + 1] * d[i] for i in range(cfg.depth)]
    if not args.full:
        return sizes[(args.layer or cfg.depth) - 1]
    return sum(sizes) + (d[0] * cfg.N if args.full_params == "weights+features" else 0)


def _args_json(args: LandscapeArgs) -> dict[str, Any]:
    """The arguments as they are stored in the JSON (lists, not tuples)."""
    d = asdict(args)
    d["index"] = list(d["index"])
    return d
