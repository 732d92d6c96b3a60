"""The analysis report as typed records (docs/design.md §5).

``Report`` holds one checkpoint's report; ``Theory`` its ``theory`` block, ``LayerRecord`` one
entry of ``layers``, ``FullHessian`` the optional ``full_hessian`` block and ``NetworkBlock``
the ``network`` block of a real-network report (§5.3).

The JSON is the contract, the classes a view of it: ``Report.from_json(d).to_json() == d``
for every report the code writes, keys in the same order. Each record models the keys of the
contract (§5.1) and the documented extra keys (§5.2) as attributes; any other key is kept in
``extra`` and written back unchanged, so a key added by a newer builder survives a round trip
through an older reader. A modelled key absent from the source JSON stays absent on output
unless it was given a value (e.g. ``full_hessian`` computed later).

This module imports nothing from ``dufm_core``: the builders (``analysis``,
``network_report``) import it, not the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = ["REPORT_VERSION", "FullHessian", "LayerRecord", "NetworkBlock", "Report", "Theory"]

REPORT_VERSION = 3  # 2: outlier_ratio null below rounding (outlier_ratio_note); 3: §8.3 keys
"""Bumped when the meaning of a key changes; a cached report of another version is recomputed."""

_BASE_FIELDS = ("extra", "_keys")


@dataclass
class _Record:
    """Common JSON mapping of the report records (see the module docstring)."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    # the source's key order (None: built in code, written in declaration order)
    _keys: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    # attribute name -> record class of that key (a list of records where the JSON has a list)
    _nested: ClassVar[dict[str, type[_Record]]] = {}
    _lists: ClassVar[frozenset[str]] = frozenset()
    # keys omitted (rather than written as null) when None in a record built in code
    _optional: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def _modelled(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in _BASE_FIELDS)

    @classmethod
    def from_json(cls, data: dict[str, Any]):
        """The record of a JSON object (a ``dict`` as ``json.load`` gives it)."""
        names = set(cls._modelled())
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                extra[key] = value
                continue
            sub = cls._nested.get(key)
            if sub is not None and value is not None:
                value = ([sub.from_json(v) for v in value] if key in cls._lists
                         else sub.from_json(value))
            kw[key] = value
        for key in names - set(kw):
            kw[key] = None  # absent in the source: stays absent on output
        return cls(**kw, extra=extra, _keys=tuple(data))

    def _value(self, key: str) -> Any:
        value = getattr(self, key)
        if isinstance(value, _Record):
            return value.to_json()
        if key in self._lists and value is not None:
            return [v.to_json() if isinstance(v, _Record) else v for v in value]
        return value

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the record (the inverse of :meth:`from_json`)."""
        modelled = self._modelled()
        names = set(modelled)
        out: dict[str, Any] = {}
        if self._keys is not None:
            for key in self._keys:
                if key in names:
                    out[key] = self._value(key)
                elif key in self.extra:
                    out[key] = self.extra[key]
            for key in modelled:
                if key not in out and getattr(self, key) is not None:
                    out[key] = self._value(key)
        else:
            for key in modelled:
                if key in self._optional and getattr(self, key) is None:
                    continue
                out[key] = self._value(key)
        for key, value in self.extra.items():
            if key not in out:
                out[key] = value
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """A key by its JSON name, modelled or extra (for keys not worth an attribute)."""
        if key in self._modelled():
            value = getattr(self, key)
            return default if value is None else value
        return self.extra.get(key, default)


@dataclass
class Theory(_Record):
    """The ``theory`` block: the closed forms of the UFM that applies (null where none does)."""

    gamma: float | None = None
    lambda_crit: float | None = None
    nontrivial: bool | None = None
    loss: float | None = None
    layer_outlier: list[float | None] | None = None
    full_outliers: list[float] | None = None
    # theory.Prediction (MSE with positive λ)
    K: int | None = None
    n: int | None = None
    L: int | None = None
    lam_w: Any = None
    lam_h: float | None = None
    threshold_lhs: float | None = None
    threshold_rhs: float | None = None
    critical_scale: float | None = None
    one_minus_gamma: float | None = None
    sigma: list[float] | None = None
    s: Any = None
    mean_norms: Any = None
    fit: float | None = None
    reg: float | None = None
    layer_outlier_total: list[float] | None = None
    h1_outlier: float | None = None
    gradient_beta: list[float] | None = None
    gradient_normalised: Any = None
    gradient_coefficients: Any = None
    weight_gram_eigs: Any = None
    gn_split_ranks: Any = None
    full_gn_outlier: Any = None
    rho: Any = None
    full_outliers_first_order: list[float] | None = None
    full_outliers_total: list[float] | None = None
    full_gn_outlier_with_features: Any = None
    rho_with_features: Any = None
    full_outliers_with_features: list[float] | None = None
    full_outliers_with_features_first_order: list[float] | None = None
    # ReLU and CE
    relu_layer_eigenvalues: dict[str, list[list[float]]] | None = None
    note: str | None = None
    ce_alpha_star: float | None = None
    ce_loss_at_alpha_star: float | None = None
    ce_alpha_measured: float | None = None
    ce_layer_eigenvalues: list[list[float]] | None = None


@dataclass
class LayerRecord(_Record):
    """One entry of ``layers``: layer ``layer`` (1..L) of the UFM, or of a network's head."""

    layer: int = 0
    shape: list[int] | None = None
    hessian_method: str | None = None
    hessian_seconds: float | None = None
    hessian_converged: bool | None = None
    hessian_residual_max: float | None = None
    hessian_top: list[float] | None = None
    hessian_top_total: list[float] | None = None
    hessian_predicted: float | None = None
    hessian_predicted_top: list[float] | None = None
    hessian_histogram: dict[str, Any] | None = None
    hessian_effective_rank: float | None = None
    outlier_count: int | None = None
    outlier_count_relative: int | None = None
    outlier_ratio: float | None = None
    outlier_ratio_note: str | None = None  # why outlier_ratio is null (analysis.outlier_ratio)
    alignment_f: list[list[float]] | None = None
    alignment_f_mean: float | None = None
    subspace_capture: list[list[float]] | None = None
    principal_angles: Any = None
    max_principal_angle: float | None = None
    cosine_heatmap: Any = None
    gradient_norm: float | None = None
    gradient_coefficients: list[list[float]] | None = None
    gradient_eigenbasis: list[float] | None = None
    gradient_inside_fraction: float | None = None
    gradient_per_class_norms: list[float] | None = None
    gradient_per_class_coefficients: Any = None
    gradient_beta: float | None = None
    gradient_beta_predicted: float | None = None
    gn_split: dict[str, Any] | None = None
    weight_singular_values: list[float] | None = None
    weight_singular_predicted: float | None = None
    weight_right_capture: Any = None
    weight_left_capture: Any = None
    effective_rank: float | None = None
    stable_rank: float | None = None
    threshold_rank: Any = None
    nc1: float | None = None
    nc2: float | None = None
    nc3: float | None = None
    dnc3_cos: Any = None
    nc1_fro: float | None = None
    # docs/design.md §8.3: the bottom of the fit Hessian (ascending) and its trace
    hessian_bottom: list[float] | None = None
    hessian_bottom_method: str | None = None
    hessian_bottom_converged: bool | None = None
    hessian_trace: float | None = None
    hessian_trace_stderr: float | None = None  # 0 for an exact trace
    hessian_trace_method: str | None = None

    _optional: ClassVar[frozenset[str]] = frozenset({
        "hessian_bottom", "hessian_bottom_method", "hessian_bottom_converged", "hessian_trace",
        "hessian_trace_stderr", "hessian_trace_method"})


@dataclass
class FullHessian(_Record):
    """The ``full_hessian`` block: the top of the Hessian over one parameter set."""

    params: str | None = None
    dim: int | None = None
    top: list[float] | None = None
    predicted: list[float] | None = None
    method: str | None = None
    seconds: float | None = None
    matvecs: int | None = None
    residual_norms: list[float] | None = None
    converged: bool | None = None
    converged_each: list[bool] | None = None
    outlier_count: int | None = None
    density: dict[str, Any] | None = None
    note: str | None = None
    tol: float | None = None
    # docs/design.md §8.3: total-Hessian bottom, fit trace, verdict, outlier attribution
    bottom: list[float] | None = None
    trace: float | None = None
    trace_stderr: float | None = None
    trace_method: str | None = None
    verdict: str | None = None  # "minimum" | "saddle" | "undetermined"
    verdict_detail: dict[str, Any] | None = None
    bottom_seconds: float | None = None
    attribution: list[dict[str, Any]] | None = None  # {"value", "multiplicity", "layers", ...}
    attribution_blocks: list[str] | None = None
    attribution_rel_tol: float | None = None

    _optional: ClassVar[frozenset[str]] = frozenset({
        "bottom", "trace", "trace_stderr", "trace_method", "verdict", "verdict_detail",
        "bottom_seconds", "attribution", "attribution_blocks", "attribution_rel_tol"})


@dataclass
class NetworkBlock(_Record):
    """The ``network`` block of a real-network report (docs/design.md §5.3)."""

    model: str | None = None
    dataset: str | None = None
    N: int | None = None
    n: int | None = None
    feature_dim: int | None = None
    bn_mode: str | None = None
    lam_h_run: float | None = None
    lam_h_ufm: float | None = None
    lam_h_note: str | None = None
    backbone_reg: float | None = None
    train_acc: float | None = None
    test_acc: float | None = None
    feature_nc1: float | None = None
    feature_nc2: float | None = None
    feature_norm_mean: float | None = None


@dataclass
class Report(_Record):
    """One checkpoint's analysis report (docs/design.md §5)."""

    report_version: int | None = REPORT_VERSION
    run: str | None = None
    step: int | None = None
    config: dict[str, Any] | None = None
    theory: Theory | None = None
    loss: dict[str, float] | None = None
    gamma_measured: float | None = None
    hessian: str | None = None
    layers: list[LayerRecord] = field(default_factory=list)
    full_hessian: FullHessian | None = None
    seconds: float | None = None
    ufm_config: dict[str, Any] | None = None
    network: NetworkBlock | None = None

    _nested: ClassVar[dict[str, type[_Record]]] = {
        "theory": Theory, "layers": LayerRecord, "full_hessian": FullHessian,
        "network": NetworkBlock}
    _lists: ClassVar[frozenset[str]] = frozenset({"layers"})
    _optional: ClassVar[frozenset[str]] = frozenset({"full_hessian", "ufm_config", "network",
                                                     "seconds"})

    @property
    def current(self) -> bool:
        """Whether the report was made by this version of the code (else it is recomputed)."""
        return self.report_version == REPORT_VERSION

    @property
    def K(self) -> int:
        return int((self.config or {})["K"])
