"""Eigenspace tracking over training (docs/design.md §8.2): the top eigenvectors of each
analysed checkpoint, kept beside its report, and the overlaps between checkpoints.

**What is kept.** For every layer l the top K² eigenvectors of the layer's fit Hessian (the
outlier space at collapse) and the top K² of the full Hessian when it was analysed, with the
m ≥ K² eigenvalues the report computed. They are written to
``analysis/step_<8 digits>.vectors.safetensors`` (tensors ``layer_<l>.values`` float64,
``layer_<l>.vectors`` float32 (dim × K²), ``full.values``, ``full.vectors``; metadata
``format``, ``step``, ``K``, ``full_params``), atomically, never pickled.

*Why float32:* the measures below depend only on the span of the vectors, which float32
rounding moves by ~1e-7 (the vectors are re-orthonormalised in float64 when read, so a space
compared with itself gives exactly 1 to rounding); the warm starts need only a start block. It
halves the file: theory.md case A (5 layers of 60 × 60, K = 3) is 5 · 9 · 3600 · 4 B ≈ 0.65 MB
per checkpoint, and as much again for the full Hessian over its 18 000 weights.

**Overlap.** For orthonormal bases U_a, U_b of two top spaces,
``overlap = ‖U_aᵀ U_b‖²_F / min(r_a, r_b)``, the mean squared cosine of their min(r_a, r_b)
principal angles: a number in [0, 1], 1 when one space contains the other, and independent of
the basis chosen inside each space (so of rotations within a degenerate eigenspace).

**Where the space is cut.** The top-K² space is well defined only when λ_{K²} > λ_{K²+1}. When
the two are equal (|λ_{K²} − λ_{K²+1}| ≤ ``GAP_RTOL`` · |λ_1|), the cut would split a degenerate
cluster and depend on the solver's basis; the space is then cut at the last gap above it (the
largest r < K² with λ_r > λ_{r+1}), e.g. the rank-3 space of a K = 2 cross-entropy layer whose
Hessian has rank < K². The dimension used is reported as ``overlap_dim``; with no gap at all
(a zero Hessian) the space is empty and the overlaps are None.

**Capture and warm starts.** :func:`capturing` opens a context in which the analysis
(:mod:`dufm_core.analysis`) asks :func:`warm_start` for the previous checkpoint's vectors of a
layer or of the full Hessian (the block solver's start block; the direct methods ignore it) and
hands what it computed to :func:`record`. A context variable carries it, so the model kinds
and the report builders between :func:`dufm_core.reports.analyze` and the solver need no new
arguments. Outside such a context both calls do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dufm_core.checkpoints import CheckpointError, read_safetensors, write_safetensors

__all__ = ["FULL", "GAP_RTOL", "Capture", "Eigenspace", "StepVectors", "capture_open",
           "capturing", "compare",
           "cos2_matrix", "layer_key", "overlap", "principal_cos2", "read_vectors", "record",
           "vectors_path", "warm_start", "write_vectors"]

VECTORS_FORMAT = 1
GAP_RTOL = 1e-8  # λ_{K²} and λ_{K²+1} closer than this · |λ_1| are one cluster
FULL = "full"
_F64 = torch.float64


def layer_key(layer: int) -> str:
    """The key of layer ``layer`` (1-based) in a :class:`StepVectors` and in the file."""
    return f"layer_{int(layer)}"


@dataclass
class Eigenspace:
    """The top of one Hessian's spectrum: ``values`` (m,) descending and ``vectors`` (dim, k)
    with orthonormal columns, k ≤ m (k = K² when kept)."""

    values: torch.Tensor
    vectors: torch.Tensor

    def top_space(self, k: int, rtol: float = GAP_RTOL) -> torch.Tensor:
        """An orthonormal basis of the top-k space cut where there is a gap (module docstring):
        k columns when λ_k > λ_{k+1} (or λ_{k+1} is not known), else the largest r < k with
        λ_r > λ_{r+1}; zero columns when there is none."""
        v = self.values.to(_F64)
        r = min(int(k), self.vectors.shape[1], v.numel())
        if v.numel() == 0 or r == 0:
            return self.vectors[:, :0]
        scale = max(abs(float(v[0])), torch.finfo(_F64).tiny)
        if v.numel() > r:
            while r > 0 and float(v[r - 1] - v[r]) <= rtol * scale:
                r -= 1
        return self.vectors[:, :r]


@dataclass
class StepVectors:
    """The eigenspaces kept for one checkpoint: ``spaces`` by key (:func:`layer_key`,
    :data:`FULL`), ``full_params`` the full Hessian's parameter set (None without one)."""

    step: int
    K: int
    spaces: dict[str, Eigenspace] = field(default_factory=dict)
    full_params: str | None = None


# --------------------------------------------------------------------------- overlaps
def overlap(A: torch.Tensor, B: torch.Tensor) -> float | None:
    """‖AᵀB‖²_F / min(r_A, r_B) for A, B with orthonormal columns: the mean squared cosine of
    the principal angles between their spans, in [0, 1]; None when either is empty."""
    r = min(A.shape[1], B.shape[1])
    if r == 0:
        return None
    M = A.to(_F64).T @ B.to(_F64)
    return min(max(float(M.square().sum()) / r, 0.0), 1.0)


def principal_cos2(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """cos² of the principal angles between span(A) and span(B) (descending, min(r_A, r_B) of
    them): the squared singular values of AᵀB; their mean is :func:`overlap`."""
    if min(A.shape[1], B.shape[1]) == 0:
        return torch.zeros(0, dtype=_F64)
    return torch.linalg.svdvals(A.to(_F64).T @ B.to(_F64)).square().clamp(0.0, 1.0)


def cos2_matrix(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(U_aᵀU_b)² entry by entry (r_A × r_B): how much each eigenvector of one checkpoint lies
    along each of the other. Unlike :func:`principal_cos2` it depends on the bases inside
    degenerate clusters; its row and column sums, and its total, do not."""
    return (A.to(_F64).T @ B.to(_F64)).square()


def compare(a: StepVectors, b: StepVectors, key: str) -> dict[str, Any] | None:
    """The top-K² spaces of ``key`` at two checkpoints side by side: ``cos2`` the matrix
    (U_aᵀU_b)² (:func:`cos2_matrix`), ``principal`` the cos² of the principal angles,
    ``overlap`` their mean and ``dims`` (r_a, r_b); None when either lacks ``key`` or the two
    are of different dimensions (another parameter set)."""
    sa, sb = a.spaces.get(key), b.spaces.get(key)
    if sa is None or sb is None or sa.vectors.shape[0] != sb.vectors.shape[0]:
        return None
    if key == FULL and a.full_params != b.full_params:
        return None
    A, B = sa.top_space(a.K ** 2), sb.top_space(b.K ** 2)
    return {"cos2": cos2_matrix(A, B).tolist(), "principal": principal_cos2(A, B).tolist(),
            "overlap": overlap(A, B), "dims": (A.shape[1], B.shape[1])}


# --------------------------------------------------------------------------- capture
@dataclass
class Capture:
    """What one analysis may start from (``warm``: start blocks by key) and what it computed
    (``found``: eigenspaces by key, K² vectors each)."""

    warm: dict[str, torch.Tensor] = field(default_factory=dict)
    found: dict[str, Eigenspace] = field(default_factory=dict)


_CAPTURE: ContextVar[Capture | None] = ContextVar("dufm_tracking_capture", default=None)


@contextlib.contextmanager
def capturing(warm: StepVectors | None = None) -> Iterator[Capture]:
    """A context in which the analysis records its top eigenvectors and starts its block
    solves from ``warm``'s (the previous checkpoint's)."""
    cap = Capture({k: s.vectors for k, s in warm.spaces.items()} if warm is not None else {})
    token = _CAPTURE.set(cap)
    try:
        yield cap
    finally:
        _CAPTURE.reset(token)


def capture_open() -> bool:
    """True inside :func:`capturing` (an analysis may then skip work only tracking needs)."""
    return _CAPTURE.get() is not None


def warm_start(key: str, dim: int) -> torch.Tensor | None:
    """The start block for the solve of ``key`` (dim rows), or None outside :func:`capturing`,
    without vectors for ``key``, or when their dimension differs (another parameter set)."""
    cap = _CAPTURE.get()
    v = None if cap is None else cap.warm.get(key)
    return v if v is not None and v.shape[0] == dim else None


def record(key: str, values: torch.Tensor, vectors: torch.Tensor, keep: int) -> None:
    """Keep the eigenvalues and the top ``keep`` eigenvectors of ``key`` in the open capture
    (nothing outside :func:`capturing`)."""
    cap = _CAPTURE.get()
    if cap is not None:
        cap.found[key] = Eigenspace(values.detach().to("cpu", _F64).clone(),
                                    vectors[:, :keep].detach().to("cpu", _F64).clone())


# --------------------------------------------------------------------------- the file
def vectors_path(analysis_dir: Path, step: int) -> Path:
    """``analysis/step_<8 digits>.vectors.safetensors``, beside the report of ``step``."""
    return Path(analysis_dir) / f"step_{int(step):08d}.vectors.safetensors"


def write_vectors(path: Path, sv: StepVectors) -> None:
    """Write ``sv`` (values float64, vectors float32) atomically as safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    for key, space in sv.spaces.items():
        tensors[f"{key}.values"] = space.values.to(_F64).contiguous()
        tensors[f"{key}.vectors"] = space.vectors.to(torch.float32).contiguous()
    meta = {"format": str(VECTORS_FORMAT), "step": str(sv.step), "K": str(sv.K),
            "full_params": sv.full_params or ""}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(path, tensors, meta)


def read_vectors(path: Path, step: int | None = None) -> StepVectors | None:
    """The vectors file at ``path`` with its vectors re-orthonormalised in float64, or None
    when it is missing, malformed, of another format or (given ``step``) of another step: the
    caller then recomputes them."""
    if not path.is_file():
        return None
    try:
        meta, tensors = read_safetensors(path)
        sv = _parse(meta, tensors)
    except (OSError, CheckpointError, ValueError, KeyError, TypeError):
        return None
    return sv if step is None or sv.step == step else None


def _parse(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> StepVectors:
    if meta.get("format") != str(VECTORS_FORMAT):
        raise ValueError("vectors file: another format")
    sv = StepVectors(int(meta["step"]), int(meta["K"]), full_params=meta.get("full_params") or None)
    for name in tensors:
        if not name.endswith(".values"):
            continue
        key = name.removesuffix(".values")
        values, vectors = tensors[name].to(_F64), tensors[f"{key}.vectors"].to(_F64)
        if values.ndim != 1 or vectors.ndim != 2 or vectors.shape[1] > max(values.numel(), 1):
            raise ValueError(f"vectors file: {key} has malformed shapes")
        if not (bool(torch.isfinite(values).all()) and bool(torch.isfinite(vectors).all())):
            raise ValueError(f"vectors file: {key} is not finite")
        if vectors.shape[1]:
            vectors = torch.linalg.qr(vectors)[0]  # float32 rounding: orthonormal again
        sv.spaces[key] = Eigenspace(values, vectors)
    return sv
