"""config.FIELDS, the field metadata that the CLI's options and the Train form share: one entry
per RunConfig field, its allowed values the ones RunConfig.validate allows, the CLI's help made
from it."""

from __future__ import annotations

import dataclasses
import math

import pytest

from dufm_core import cli
from dufm_core.config import _REAL_ONLY, FIELDS, ConfigError, FieldSpec, RunConfig, field_specs

NAMES = [f.name for f in dataclasses.fields(RunConfig)]


def test_one_entry_per_field() -> None:
    assert sorted(FIELDS) == sorted(NAMES)
    assert [f.name for f, _ in field_specs()] == NAMES
    for name, spec in FIELDS.items():
        assert spec.label and spec.help, name
        assert spec.models in ("all", "ufm", "real"), name
        assert spec.group in ("", "data", "main", "more"), name
        assert spec.widget in ("", "number", "text", "select", "check"), name
        if spec.only_if:
            other, values = spec.only_if
            assert set(values) <= set(FIELDS[other].choices), name
    # the fields a UFM must leave at their defaults are the real networks' own
    assert set(_REAL_ONLY) <= {n for n, s in FIELDS.items() if s.models == "real"}


def _base(spec: FieldSpec) -> dict:
    return {"model": "resnet20"} if spec.models == "real" else {}


def _check(data: dict) -> str | None:
    try:
        RunConfig.from_dict(data).validate()
    except ConfigError as exc:
        return str(exc)
    return None


def _outside(spec: FieldSpec) -> list:
    """Values just outside the allowed range (or at an open end)."""
    ints = isinstance(spec.lo, int) and isinstance(spec.hi, int)
    lo = spec.lo if spec.lo_open else (spec.lo - 1 if ints else spec.lo - 1e-9)
    out = [lo]
    if not math.isinf(spec.hi) and spec.hi < 2**53:
        out.append(spec.hi if spec.hi_open else (spec.hi + 1 if ints else spec.hi + 1e-9))
    return out


def _inside(spec: FieldSpec) -> list:
    ints = isinstance(spec.lo, int) and isinstance(spec.hi, int)
    lo = spec.lo + (1e-9 if spec.lo_open else 0)
    out = [lo]
    if not math.isinf(spec.hi) and spec.hi < 2**53:  # beyond 2^53 validation reads a float
        out.append(spec.hi - (1e-9 if spec.hi_open else 0) if not ints else spec.hi)
    return out


RANGED = [n for n, s in FIELDS.items() if s.lo is not None]


@pytest.mark.parametrize("name", RANGED)
def test_ranges_are_the_ones_validation_allows(name: str) -> None:
    spec = FIELDS[name]
    for value in _inside(spec):
        data = {**_base(spec), name: [value, value] if name == "betas" else value}
        assert _check(data) is None, (name, value)
    for value in _outside(spec):
        data = {**_base(spec), name: [value, value] if name == "betas" else value}
        error = _check(data)
        assert error is not None and error.startswith(f"{name}: must be"), (name, value, error)
        assert spec.allowed() in error, (name, error)  # validation words the same range


@pytest.mark.parametrize("name", [n for n, s in FIELDS.items() if s.choices])
def test_choices_are_the_ones_validation_allows(name: str) -> None:
    spec = FIELDS[name]
    assert _check({**_base(spec), name: "no-such-value"}) == (
        f"{name}: must be one of {spec.allowed()} (got 'no-such-value')"
    )


def test_cli_options_and_help_come_from_the_metadata() -> None:
    train = next(
        a.choices["train"] for a in cli.build_parser()._actions if getattr(a, "choices", None)
    )
    options = {a.dest[4:]: a for a in train._actions if a.dest.startswith("cfg_")}
    assert set(options) == {*NAMES, "lam"}
    for name in NAMES:
        spec, action = FIELDS[name], options[name]
        assert action.help.startswith(spec.help.replace("%", "%%")), name
        if spec.choices:
            assert action.metavar == "{" + ",".join(spec.choices) + "}"
        elif spec.allowed():
            assert f"allowed {spec.allowed()}" in action.help
        if spec.models == "real":
            assert action.help.endswith("real networks only"), name
    assert "default 0.9,0.999" in options["betas"].help
