"""What the run store's JSON files hold, well typed (docs/design.md §3.3, §3.4).

Files in a run folder can be damaged (a crash, a full disk, a hand edit, a copied folder), so
everything read back from them goes through here: :func:`typed_status` gives status.json's
fields with their types (state ``unknown`` and an ``error`` when the content is not a status),
:func:`typed_metrics_row` a metrics row with an int step and well-typed known fields (or None:
the row is skipped). The run store (:mod:`dufm_core.store`) reads and writes the files.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

STATES = ("queued", "running", "finished", "failed", "cancelled", "diverged")  # ever written
ENDED_STATES = ("finished", "failed", "cancelled", "diverged")  # a worker wrote its last word
INTERRUPTED = "interrupted"  # reported (never written) for `running` runs whose process is gone
UNKNOWN = "unknown"  # reported (never written) when status.json or config.json is unreadable


def as_int(value: Any) -> int | None:
    """``value`` as an int when it is one (a whole float or a numeric string too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    return None


def as_number(value: Any) -> int | float | None:
    """``value`` when it is a number (not a bool), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _numbers(value: Any) -> list[int | float | None] | None:
    """A list with its non-numbers as None, or None if ``value`` is not a list."""
    return [as_number(v) for v in value] if isinstance(value, list) else None


def file_problem(name: str, exc: Exception) -> str:
    """One line on why the file ``name`` could not be read."""
    if isinstance(exc, FileNotFoundError):
        return f"no {name}"
    if isinstance(exc, OSError):
        return f"{name} cannot be read ({exc.strerror or exc})"
    if isinstance(exc, UnicodeDecodeError):
        return f"{name} is not text (corrupt)"
    if isinstance(exc, json.JSONDecodeError):
        return f"{name} is not valid JSON ({exc.msg} at line {exc.lineno}; corrupt or empty)"
    return f"{name} cannot be read ({exc})"


# status.json's fields by type; a bad `state`, `step` or `total_steps` makes the status unknown
_STATUS_INTS = ("pid", "pid_start")
_STATUS_FLOATS = ("created_at", "started_at", "updated_at", "finished_at", "loss")
_STATUS_STRS = ("host", "error", "device", "pid_cmd")


def typed_status(raw: Any) -> dict[str, Any]:
    """status.json's content with every field well typed: ``state`` a str, ``step`` and
    ``total_steps`` ints, the optional fields of the right type or None. A content that is not
    an object, an unknown state or a step that is not a whole number gives state ``unknown``
    with an ``error`` saying what is wrong; other keys are kept as they are."""
    problems = []
    if not isinstance(raw, dict):
        problems.append(f"status.json holds a JSON {type(raw).__name__}, not an object")
        raw = {}
    status = dict(raw)
    state = raw.get("state")
    if state not in STATES and not problems:
        problems.append(f"status.json: state {state!r} is not one of {', '.join(STATES)}")
    for key in ("step", "total_steps"):
        value = raw.get(key)
        number = 0 if value is None else as_int(value)
        if number is None:
            problems.append(f"status.json: {key} {value!r} is not a whole number")
        status[key] = number or 0
    for key in _STATUS_INTS:
        status[key] = as_int(raw.get(key))
    for key in _STATUS_FLOATS:
        status[key] = as_number(raw.get(key))
    for key in _STATUS_STRS:
        status[key] = _as_str(raw.get(key))
    if problems:
        status["state"], status["error"] = UNKNOWN, "; ".join(problems)
    return status


# metrics rows (docs/design.md §3.4): known keys are read as numbers, lists of numbers, or (sv)
# lists of lists of numbers; a value of another type becomes None (a list is dropped)
SCALAR_METRICS = ("time", "loss", "fit", "reg", "grad_norm", "gamma_measured", "train_acc",
                  "test_acc", "batch_loss", "lr", "epoch", "sharpness", "sharpness_products",
                  "sharpness_limit")
BOOL_METRICS = ("edge_of_stability",)
LAYER_METRICS = ("nc1", "nc1_fro", "nc1_ratio", "nc2", "nc3")


def typed_metrics_row(row: Any) -> dict[str, Any] | None:
    """A metrics row with an int ``step`` and well-typed known fields, or None when it is not
    an object or its step cannot be read (such a row is skipped)."""
    if not isinstance(row, dict):
        return None
    step = as_int(row.get("step"))
    if step is None or step < 0:
        return None
    out = {**row, "step": step}
    for key in SCALAR_METRICS:
        if key in out:
            out[key] = as_number(out[key])
    for key in BOOL_METRICS:
        if key in out:
            out[key] = out[key] if isinstance(out[key], bool) else None
    for key in LAYER_METRICS:
        if key in out and (values := _numbers(out.pop(key))) is not None:
            out[key] = values
    if "sv" in out:
        raw = out.pop("sv")
        lists = [_numbers(v) for v in raw] if isinstance(raw, list) else [None]
        if all(v is not None for v in lists):
            out["sv"] = lists
    return out
