"""Checks of single config values, shared by the config, the CLI and sweep specs: each one
returns the value in its type or raises :class:`ConfigError`, one line naming the field, the
allowed range and what was given (shortened, so that a 5000-digit number, a megabyte of text or
a deeply nested list still gives one short line).

Integers are checked as integers (a seed near 2**63 stays exact); text is accepted in the number
forms of the CLI (``"1e3"`` is 1000 steps, ``"2.0"`` is 2). Nothing here raises anything but
ConfigError, whatever the value (tests/test_fuzz.py).
"""

from __future__ import annotations

import json
import math
import reprlib
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

_MAX_INT_TEXT = 400  # characters of an integer written as text; longer is refused unparsed
MAX_FILE_BYTES = 1 << 20  # a config file or sweep spec of more than 1 MiB is refused unread


class ConfigError(ValueError):
    """A configuration value is out of range; the message is one line naming the field."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        name = " ".join(str(field_name).split()) or repr(field_name)
        super().__init__(f"{name}: {' '.join(message.split())}")


class _Short(reprlib.Repr):
    """reprlib with short limits, and big integers described rather than converted (CPython
    refuses str() of an int past 4300 digits)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 40, 40, 40
        self.maxlist = self.maxtuple = self.maxdict = 6

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_SHORT = _Short()


def shown(value: Any) -> str:
    """A short one-line repr of any value, for error messages."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # a value whose repr itself fails
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(name, f"must be one of {' | '.join(allowed)} (got {shown(value)})")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A bool, or the words true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else str(value) if isinstance(
        value, int) and value in (0, 1) else ""
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be true or false (got {shown(value)})")


def _as_integer(value: Any) -> int | None:
    """The integer ``value`` stands for (an int, an integral finite float, or text in either
    form: ``"12"``, ``"1e3"``, ``"2.0"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if not text or len(text) > _MAX_INT_TEXT:
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    """An integer in [lo, hi] (see :func:`_as_integer` for the forms accepted)."""
    iv = _as_integer(value)
    if iv is None or not lo <= iv <= hi:
        raise ConfigError(name, f"must be an integer in [{lo}, {hi}] (got {shown(value)})")
    return iv


def check_float(
    name: str, value: Any, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
) -> float:
    """A finite number in the interval [lo, hi] (``lo_open``/``hi_open`` for open ends)."""
    left = "(" if lo_open else "["
    right = ")" if hi_open or math.isinf(hi) else "]"
    rng = f"{left}{lo:g}, {'inf' if math.isinf(hi) else f'{hi:g}'}{right}"
    fv = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        if isinstance(value, str) and len(value) > _MAX_INT_TEXT:
            value = value[:_MAX_INT_TEXT] + "..."
        try:
            fv = float(value)
        except (ValueError, OverflowError):
            fv = math.nan
    if not math.isfinite(fv):
        raise ConfigError(name, f"must be a finite number in {rng} (got {shown(value)})")
    below = fv <= lo if lo_open else fv < lo
    above = fv >= hi if hi_open else fv > hi
    if below or above:
        raise ConfigError(name, f"must be a number in {rng} (got {fv:g})")
    return fv


def as_list(value: Any) -> list[Any] | None:
    """A list of per-layer values given as a list or as ``"a,b,c"`` text; None for a scalar."""
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",")]
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _per_layer(name: str, items: list[Any], length: int) -> None:
    if len(items) != length:
        raise ConfigError(
            name,
            f"must be one value or one per layer ({length} values for depth {length}); "
            f"got {len(items)}",
        )


def _one_or_per_layer(check: Callable[..., Any], name: str, value: Any, length: int,
                      lo: Any, hi: Any) -> Any:
    """``check(name, v, lo, hi)`` of one value, or of each of ``length`` per-layer values; a
    one-element list is one value."""
    items = as_list(value)
    if items is None:
        return check(name, value, lo, hi)
    if len(items) == 1:
        return check(name, items[0], lo, hi)
    _per_layer(name, items, length)
    return [check(name, v, lo, hi) for v in items]


def check_int_or_list(name: str, value: Any, length: int, lo: int, hi: int) -> int | list[int]:
    """One integer, or one per layer (``length`` of them), each in [lo, hi]."""
    return _one_or_per_layer(check_int, name, value, length, lo, hi)


def check_float_or_list(
    name: str, value: Any, length: int, lo: float, hi: float
) -> float | list[float]:
    """One number, or one per layer (``length`` of them), each in [lo, hi]."""
    return _one_or_per_layer(check_float, name, value, length, lo, hi)


def parse_table(raw: str | bytes, toml: bool, field: str, where: str) -> dict[str, Any]:
    """The table of a JSON or TOML text (``toml``), or ConfigError naming ``field`` with one line
    saying why not: not UTF-8, too large, not parseable (nested too deeply, a number with too
    many digits, a syntax error at line:column) or not a table."""
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(field, f"{where} is larger than {MAX_FILE_BYTES // 1024} KiB")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(field, f"{where} is not UTF-8 text") from None
    try:
        data = tomllib.loads(raw) if toml else json.loads(raw)
    except RecursionError:
        raise ConfigError(field, f"cannot parse {where}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, TOMLDecodeError, int digit limits
        text = str(exc)
        reason = ("a number has too many digits" if "integer string conversion" in text
                  else (text.splitlines() or ["syntax error"])[0][:200])
        raise ConfigError(field, f"cannot parse {where}: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(field, f"{where} must hold a table/object of keys (got "
                                 f"{type(data).__name__})")
    return data
