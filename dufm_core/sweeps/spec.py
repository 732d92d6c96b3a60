"""Sweep specs: parsing, validation and expansion into members (docs/sweeps.md §1).

A spec names a sweep, gives a ``[base]`` config and a ``[grid]`` of axes; the members are the
Cartesian product of the axes (the last axis varies fastest)::

    name = "lam"
    [base]
    K = 3
    n = 10
    width = 12
    depth = 3
    steps = 4000
    [grid]
    lam = [0.002, 0.02]        # any RunConfig field; ``lam`` sets every λ_W and λ_H
    seed = [0, 1]

Optional tables: ``[analysis]`` (``full_hessian = true`` adds the full fit-Hessian over the
weights to each member's analysis, for the depth study; ``full_params``) and ``[resources]``
(``cpus``, ``gpus`` per member: what a Ray task asks for). Besides the config fields a grid may
have the axis ``lam_over_crit``: every λ set to that multiple of the equal-λ critical value
λ_crit(K, n, L) of docs/theory.md §3.1, the natural axis of a phase diagram.

A grid has at most :data:`MAX_MEMBERS` members: their number (the product of the axis lengths) is
counted before any member is built, so a pasted 10⁸-member grid is refused at once. Every member
is validated (:meth:`RunConfig.validate`) and checked against the memory cap
(:mod:`dufm_core.resources`: its training, and its analysis with the spec's ``[analysis]``)
before anything starts; an error names the member and the field
(``member 3 [lam=0.5, seed=1]: lr: must be ...``). A spec of more than 1 MiB, or one that is not
UTF-8 TOML, is one line too. A member is identified by
its **key** (:func:`config_key`), a hash of its resolved config, so a rerun of the same spec finds
the members it already ran.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dufm_core.config import ConfigError, RunConfig
from dufm_core.config_values import MAX_FILE_BYTES, check_float, parse_table, shown

MAX_MEMBERS = 10_000  # members of one grid at most (the product of its axis lengths)
TOP_KEYS = ("name", "description", "base", "grid", "analysis", "resources")
DERIVED_AXES = ("lam", "lam_over_crit")
FULL_PARAMS = ("weights", "weights+features")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONFIG_FIELDS = tuple(f.name for f in fields(RunConfig))


class SpecError(ConfigError):
    """A sweep spec is invalid. ``field`` is the offending key (``grid.lam``, ``lr``, ...);
    ``member`` is the member's index when one member's config is the problem."""

    def __init__(self, field_name: str, message: str, member: str | None = None) -> None:
        self.member = member
        ConfigError.__init__(self, field_name, message)
        if member is not None:
            self.args = (f"{member}: {field_name}: {' '.join(message.split())}",)


@dataclass
class Member:
    """One point of the grid: its position, grid values, validated config and stable key."""

    index: int
    values: dict[str, Any]
    config: RunConfig
    key: str

    def label(self) -> str:
        """``member 3 [lam=0.5, seed=1]``: how errors and logs name this member."""
        return _label(self.index, self.values)


def _label(index: int, values: Mapping[str, Any]) -> str:
    inner = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
    return f"member {index} [{inner}]"


@dataclass
class SweepSpec:
    """A parsed sweep spec (see the module docstring); :meth:`members` expands and validates."""

    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    description: str = ""
    full_hessian: bool = False
    full_params: str = "weights"
    cpus: float = 1.0
    gpus: float = 0.0
    source: str = ""
    _members: list[Member] | None = field(default=None, repr=False)

    @property
    def axes(self) -> list[str]:
        return list(self.grid)

    def members(self) -> list[Member]:
        """Every member of the grid, validated; raises :class:`SpecError` naming the member."""
        if self._members is None:
            self._members = _expand(self)
        return self._members


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return shown(value)[1:-1]
    if isinstance(value, (list, dict)):
        try:
            text = json.dumps(value)
        except (RecursionError, ValueError, TypeError):
            return shown(value)
        return text if len(text) <= 80 else shown(value)
    return shown(value)


def parse_spec(source: str | Path, text: str | None = None) -> SweepSpec:
    """Parse a spec from TOML text (``text``) or a file path; check its shape (not yet the
    members: call :meth:`SweepSpec.members`, or :func:`load_spec` which does both)."""
    raw: str | bytes
    if text is None:
        path = Path(source)
        if not path.is_file():
            raise SpecError("spec", f"file not found: {path}")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SpecError("spec", f"{path} is larger than {MAX_FILE_BYTES // 1024} KiB")
        raw = path.read_bytes()
    else:
        raw = text
    try:
        data = parse_table(raw, True, "spec", "the TOML spec")
        text = raw if isinstance(raw, str) else raw.decode("utf-8")
    except ConfigError as exc:
        raise SpecError("spec", str(exc).split(": ", 1)[-1]) from None
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise SpecError(unknown[0], f"unknown spec key; allowed: {', '.join(TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(
            "name",
            "must be 1-64 characters: letters, digits, '-', '_' or '.', starting with a letter "
            f"or digit (got {shown(name)})",
        )
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise SpecError("base", "must be a table of config keys")
    for key in base:
        if key not in (*_CONFIG_FIELDS, "lam"):
            raise SpecError(
                f"base.{key}", f"unknown config key; known: {', '.join(_CONFIG_FIELDS)}, lam"
            )
    grid = data.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SpecError("grid", "must be a table with at least one axis, e.g. lam = [0.01, 0.02]")
    for key, values in grid.items():
        if key not in (*_CONFIG_FIELDS, *DERIVED_AXES):
            raise SpecError(
                f"grid.{key}", "unknown axis; an axis is a config key, lam or lam_over_crit"
            )
        if key == "name":
            raise SpecError("grid.name", "members are named by the sweep; not an axis")
        if not isinstance(values, list) or not values:
            raise SpecError(f"grid.{key}",
                            f"must be a non-empty list of values (got {shown(values)})")
    count = math.prod(len(v) for v in grid.values())
    if count > MAX_MEMBERS:
        sizes = " × ".join(str(len(v)) for v in grid.values())
        raise SpecError("grid", f"has {count} members ({sizes}), more than the limit "
                                f"{MAX_MEMBERS} (sweeps.spec.MAX_MEMBERS); split the sweep")
    lam_axes = [k for k in ("lam", "lam_over_crit") if k in grid]
    clash = [k for k in ("lam_w", "lam_h") if k in grid]
    if len(lam_axes) > 1 or (lam_axes and clash):
        raise SpecError(
            f"grid.{lam_axes[-1]}",
            f"sets every λ, so it cannot be combined with "
            f"the axes {', '.join([*lam_axes[:-1], *clash])}",
        )
    analysis = data.get("analysis", {})
    if not isinstance(analysis, dict) or set(analysis) - {"full_hessian", "full_params"}:
        raise SpecError("analysis", "allowed keys: full_hessian (true/false), full_params")
    full = analysis.get("full_hessian", False)
    if not isinstance(full, bool):
        raise SpecError("analysis.full_hessian", f"must be true or false (got {shown(full)})")
    full_params = analysis.get("full_params", "weights")
    if full_params not in FULL_PARAMS:
        raise SpecError("analysis.full_params", f"must be one of {' | '.join(FULL_PARAMS)} "
                                                f"(got {shown(full_params)})")
    res = data.get("resources", {})
    if not isinstance(res, dict) or set(res) - {"cpus", "gpus"}:
        raise SpecError("resources", "allowed keys: cpus, gpus (per member)")
    cpus, gpus = res.get("cpus", 1.0), res.get("gpus", 0.0)
    for key, value, lo in (("cpus", cpus, 0.0), ("gpus", gpus, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo:
            raise SpecError(f"resources.{key}",
                            f"must be a number >= {lo:g} (got {shown(value)})")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise SpecError("description", "must be a string")
    return SweepSpec(
        name=name,
        base=dict(base),
        grid={k: list(v) for k, v in grid.items()},
        description=desc,
        full_hessian=full,
        full_params=full_params,
        cpus=float(cpus),
        gpus=float(gpus),
        source=text,
    )


def load_spec(source: str | Path, text: str | None = None) -> SweepSpec:
    """:func:`parse_spec` and validate every member."""
    spec = parse_spec(source, text)
    spec.members()
    return spec


def config_key(cfg: RunConfig) -> str:
    """Stable member key: the first 12 hex digits of the SHA-256 of the resolved config as
    canonical JSON, without ``name`` (which the sweep sets)."""
    data = cfg.to_dict()
    data.pop("name", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _resolve(spec: SweepSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """Base config with the member's grid values applied (λ axes expanded)."""
    data = dict(spec.base)
    if "lam" in data:  # as RunConfig.from_dict: explicit lam_w / lam_h in [base] win
        lam = data.pop("lam")
        data.setdefault("lam_w", lam)
        data.setdefault("lam_h", lam)
    for key, value in values.items():
        if key == "lam":
            data["lam_w"] = data["lam_h"] = value
        elif key != "lam_over_crit":
            data[key] = value
    return data


def _expand(spec: SweepSpec) -> list[Member]:
    from dufm_core import kinds, resources, theory

    members: list[Member] = []
    seen: dict[str, int] = {}
    for index, combo in enumerate(itertools.product(*spec.grid.values())):
        values = dict(zip(spec.grid, combo, strict=True))
        label = _label(index, values)
        data = _resolve(spec, values)
        try:
            cfg = RunConfig.from_dict(data)
            cfg.validate()
            if "lam_over_crit" in values:
                factor = values["lam_over_crit"]
                if isinstance(factor, str):
                    raise ConfigError("lam_over_crit", f"must be a number > 0 (got "
                                                       f"{shown(factor)})")
                factor = check_float("lam_over_crit", factor, 0.0, math.inf, lo_open=True)
                lam = factor * theory.lambda_crit(cfg.K, cfg.n, cfg.depth)
                cfg.lam_w, cfg.lam_h = lam, lam
                cfg.validate()
            kind = kinds.get(cfg.model)
            kind.check_memory(cfg)
            resources.check(kind.analysis_memory(cfg, spec.full_hessian, spec.full_params))
        except ConfigError as exc:
            raise SpecError(exc.field, str(exc).split(": ", 1)[-1], member=label) from None
        except (TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
            raise SpecError("config", str(exc)[:300] or type(exc).__name__,
                            member=label) from None
        key = config_key(cfg)
        cfg.name = f"{spec.name}-{key[:8]}"[:80]
        if key in seen:
            raise SpecError(
                "grid",
                f"resolves to the same config as member {seen[key]} (an axis lists a value twice?)",
                member=label,
            )
        seen[key] = index
        members.append(Member(index, values, cfg, key))
    return members
