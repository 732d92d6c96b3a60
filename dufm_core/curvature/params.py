"""Parameter-set selection and row-major flattening for curvature computations.

A Hessian is always "the Hessian with respect to *some* parameters" (docs/theory.md §0, "Which
Hessian"): one layer W_l, several layers, all weights W_1..W_L, or weights plus the free features
H_1. :class:`ParamSet` names that choice once, in a fixed order, and fixes how the selected
tensors are laid out in one flat vector θ ∈ R^dim:

    θ = [vec_r(T_1), vec_r(T_2), ...],   vec_r(T) = T.reshape(-1)   (row-major)

Row-major vec is what docs/theory.md insists on: entry (a, b) of W_l (shape d_{l+1} × d_l) goes to
index a·d_l + b. Under this convention the linear-MSE layer Hessian is P ⊗ Q with P acting on the
output index (see :mod:`dufm_core.curvature.kronecker`); column-major vec would swap the factors.

Spec strings accepted by :func:`param_set` (layers are numbered 1..L as in docs/theory.md §1):

* ``"layer:L"``          one weight W_L (1-based)
* ``"layers:1,3"``       several weights, in the order given (no repeats)
* ``"weights"``          W_1..W_L
* ``"weights+features"`` W_1..W_L, then H_1
* ``"features+weights"`` H_1, then W_1..W_L
* ``"features"``         H_1 only
* ``"all"``              every parameter of the model, in ``named_parameters()`` order
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ParamSet", "flatten", "param_set", "unflatten"]

SPEC_FORMS = (
    '"layer:L" (1-based weight index), "layers:1,3", "weights", "weights+features", '
    '"features+weights", "features", "all"'
)


@dataclass(frozen=True)
class ParamSet:
    """An ordered selection of model parameters and its flat layout.

    ``names`` are keys of ``model.named_parameters()`` ("features" is H_1, "weights.0" is W_1,
    ..., "weights.{L-1}" is W_L); ``shapes``/``sizes`` follow the same order and ``dim`` is the
    total number of scalars. ``spec`` records how the set was asked for (for reports).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    spec: str = ""

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of scalars of each selected tensor."""
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def dim(self) -> int:
        """Total number of selected scalars (length of the flat vector θ)."""
        return int(sum(self.sizes))

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start index of each tensor in the flat vector (len(names) + 1 entries, last = dim)."""
        out = [0]
        for s in self.sizes:
            out.append(out[-1] + s)
        return tuple(out)

    def slice_of(self, name: str) -> slice:
        """The slice of the flat vector that holds parameter ``name``."""
        try:
            i = self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not in this parameter set {self.names}") from None
        off = self.offsets
        return slice(off[i], off[i + 1])

    def tensors(self, model: nn.Module) -> list[torch.Tensor]:
        """The selected parameters of ``model`` (detached), in order."""
        params = dict(model.named_parameters())
        return [params[n].detach() for n in self.names]

    def vector(self, model: nn.Module) -> torch.Tensor:
        """Current value of θ: the selected parameters flattened row-major."""
        return flatten(self.tensors(model))

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Flatten tensors with this set's shapes (checked) into one vector."""
        if len(tensors) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} tensors, got {len(tensors)}")
        for t, s in zip(tensors, self.shapes, strict=True):
            if tuple(t.shape) != s:
                raise ValueError(f"tensor of shape {tuple(t.shape)} where {s} was expected")
        return flatten(tensors)

    def unflatten(self, vec: torch.Tensor) -> list[torch.Tensor]:
        """Inverse of :meth:`flatten`; see :func:`unflatten` for the (dim, m) block form."""
        return unflatten(vec, self.shapes)

    def index_in(self, other: ParamSet) -> torch.Tensor:
        """Positions of this set's flat entries inside ``other``'s flat vector (LongTensor).

        Used to cut a block (rows of one set, columns of another) out of an operator over a
        larger set. Every name of ``self`` must be in ``other`` with the same shape.
        """
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            sl = other.slice_of(name)
            if other.shapes[other.names.index(name)] != shape:
                raise ValueError(f"{name!r} has different shapes in the two sets")
            parts.append(torch.arange(sl.start, sl.stop))
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def union(self, other: ParamSet) -> ParamSet:
        """This set followed by the names of ``other`` that are not in it."""
        names = list(self.names)
        shapes = list(self.shapes)
        for n, s in zip(other.names, other.shapes, strict=True):
            if n not in names:
                names.append(n)
                shapes.append(s)
        return ParamSet(tuple(names), tuple(shapes), spec=f"{self.spec}|{other.spec}")


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``T.reshape(-1)`` (row-major vec) of every tensor into one (dim,) vector."""
    if not tensors:
        raise ValueError("flatten needs at least one tensor")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(
    vec: torch.Tensor, shapes: ParamSet | Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """Split a flat vector back into tensors of the given shapes (views, row-major).

    * ``vec`` of shape (dim,) gives tensors of shape ``shape``.
    * a block of m vectors, shape (dim, m), gives tensors of shape (m, *shape): entry i is the
      i-th column reshaped, e.g. (m, d_{l+1}, d_l) matrices for a weight.
    """
    shp = shapes.shapes if isinstance(shapes, ParamSet) else tuple(tuple(s) for s in shapes)
    sizes = [int(torch.Size(s).numel()) for s in shp]
    dim = sum(sizes)
    if vec.ndim not in (1, 2) or vec.shape[0] != dim:
        raise ValueError(
            f"expected a vector of length {dim} or a (dim, m) block, got shape {tuple(vec.shape)}"
        )
    out = []
    start = 0
    for s, k in zip(shp, sizes, strict=True):
        piece = vec[start : start + k]
        if vec.ndim == 1:
            out.append(piece.reshape(s))
        else:
            out.append(piece.T.reshape(vec.shape[1], *s))
        start += k
    return out


def _weight_count(model: nn.Module) -> int:
    weights = getattr(model, "weights", None)
    if weights is None:
        raise ValueError("this model has no .weights; only the spec 'all' applies to it")
    return len(weights)


def param_set(model: nn.Module, spec: str | ParamSet) -> ParamSet:
    """Resolve a spec string (see the module docstring) against ``model``.

    A :class:`ParamSet` is returned unchanged after checking its names exist with their shapes.
    Raises ValueError naming the spec and the allowed forms when the spec is malformed or out of
    range (e.g. ``"layer:7"`` for a model with 5 weights).
    """
    params = dict(model.named_parameters())
    if isinstance(spec, ParamSet):
        for n, s in zip(spec.names, spec.shapes, strict=True):
            if n not in params or tuple(params[n].shape) != s:
                raise ValueError(f"parameter set {spec.names} does not match this model ({n!r})")
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"parameter spec must be a string, got {spec!r}; allowed: {SPEC_FORMS}")
    s = spec.strip().lower().replace(" ", "")

    def bad(why: str) -> ValueError:
        return ValueError(f"parameter spec {spec!r}: {why}; allowed forms: {SPEC_FORMS}")

    if s == "all":
        names = list(params)
    elif s == "features":
        names = ["features"]
    elif s in ("weights", "weights+features", "features+weights"):
        L = _weight_count(model)
        w = [f"weights.{i}" for i in range(L)]
        names = w if s == "weights" else ([*w, "features"] if s[0] == "w" else ["features", *w])
    elif s.startswith("layer:") or s.startswith("layers:"):
        L = _weight_count(model)
        body = s.split(":", 1)[1]
        if s.startswith("layer:") and "," in body:
            raise bad("use 'layers:' for more than one layer")
        try:
            idx = [int(x) for x in body.split(",") if x != ""]
        except ValueError:
            raise bad("layer numbers must be integers") from None
        if not idx:
            raise bad("no layer number given")
        if len(set(idx)) != len(idx):
            raise bad("a layer is repeated")
        out_of_range = [i for i in idx if not 1 <= i <= L]
        if out_of_range:
            raise bad(f"layer {out_of_range[0]} is out of range 1..{L} (layers are 1-based)")
        names = [f"weights.{i - 1}" for i in idx]
    else:
        raise bad("unknown form")
    missing = [n for n in names if n not in params]
    if missing:
        raise bad(f"the model has no parameter {missing[0]!r}")
    shapes = tuple(tuple(params[n].shape) for n in names)
    return ParamSet(tuple(names), shapes, spec=spec)
