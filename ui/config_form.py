"""The Train page's form, generated from the RunConfig field metadata (``dufm_core.config.FIELDS``)
that also writes the CLI's ``--<field>`` help: one widget per field, placed by its group and row,
with its label, help, allowed range or choices. A new RunConfig field gets its widget from its
FIELDS line; nothing here names a field.

Widgets: an int is a number input over its allowed range; a field with choices a selectbox; a
bool a checkbox; the rest (floats, per-layer lists, text) a text input that RunConfig.validate
reads, so that 1e-06 stays 1e-06 and ``64,128,128`` is a list. A widget's key is the page's
prefix and the field's name (``paper-linear_lr``).

"Train again": a run's own settings are a starting point like a preset (:func:`settings_of`);
the page keys their widgets by the run (:func:`again_key`) so that they start at its values.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from itertools import groupby
from typing import Any

import streamlit as st

from dufm_core.config import FIELDS, ConfigError, FieldSpec, RunConfig
from dufm_core.presets import PRESETS
from dufm_core.store import Run

# Fields the generated form leaves out, and why (tests/ui/test_config_form.py holds every
# other field in a group of the form).
HIDDEN = {
    "model": "the page's own model switch above the form: changing it resets every field to "
    "the chosen model's defaults (config.MODEL_DEFAULTS)",
}
GROUPS = ("data", "main", "more")
COLUMNS = 4
JS_MAX_INT = 2**53 - 1  # a number input's bounds must be exact in the browser

_TYPES = typing.get_type_hints(RunConfig)


def widget_kind(name: str) -> str:
    """``number``, ``select``, ``check`` or ``text`` for field ``name`` (its FieldSpec.widget, else
    from its type and choices)."""
    spec = FIELDS[name]
    if spec.widget:
        return spec.widget
    if spec.choices:
        return "select"
    hint = _TYPES[name]
    if hint is bool:
        return "check"
    return "number" if hint is int else "text"


def fields_of(group: str, model: str) -> list[str]:
    """The fields the form shows in ``group`` for a run of ``model``, in FIELDS order."""
    return [n for n, s in FIELDS.items() if s.group == group and s.applies_to(model)]


def _as_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _widget(name: str, spec: FieldSpec, col: Any, value: Any, key: str, disabled: bool,
            placeholder: str | None) -> Any:
    """Draw field ``name``'s widget in ``col`` starting at ``value``; return what it holds."""
    kind = widget_kind(name)
    common = {"key": key + name, "help": spec.help, "disabled": disabled}
    if kind == "select":
        return col.selectbox(spec.label, spec.choices, spec.choices.index(value), **common)
    if kind == "check":
        return col.checkbox(spec.label, bool(value), **common)
    if kind == "number":
        if _TYPES[name] is int:
            lo, hi = int(spec.lo), min(int(spec.hi), JS_MAX_INT)
            step = int(spec.step or 1)
            return col.number_input(spec.label, lo, hi, int(value), step=step, **common)
        return col.number_input(spec.label, float(spec.lo), float(spec.hi), float(value),
                                step=spec.step, **common)
    return col.text_input(spec.label, _as_text(value), placeholder=placeholder, **common)


def _to_config(name: str, held: Any) -> Any:
    """A widget's value as RunConfig.from_dict takes it: text stripped, a list field split."""
    if not isinstance(held, str):
        return held
    if typing.get_origin(_TYPES[name]) is list:
        return [v.strip() for v in held.split(",")]
    return held.strip()


def render(group: str, start: Mapping[str, Any], key: str, model: str) -> dict[str, Any]:
    """Draw ``group``'s widgets for ``model`` in rows of four columns, starting at ``start`` (a
    RunConfig as a dict: a preset's or a model's defaults), keys ``key + field``. Returns
    {field: value} for RunConfig.from_dict; a field disabled by its ``only_if`` keeps its
    starting value."""
    values: dict[str, Any] = {}
    names = fields_of(group, model)
    for _, same_row in groupby(names, key=lambda n: FIELDS[n].row):
        row = list(same_row)
        spans = [FIELDS[n].span for n in row]
        cols = st.columns([*spans, *[1] * (COLUMNS - sum(spans))], vertical_alignment="bottom")
        for name, col in zip(row, cols, strict=False):
            spec = FIELDS[name]
            placeholder = None
            disabled = False
            if spec.only_if:
                other, allowed = spec.only_if
                current = values.get(other, start.get(other))
                disabled = current not in allowed
                placeholder = f"not needed for {current}" if disabled else None
            held = _widget(name, spec, col, start[name], key, disabled, placeholder)
            values[name] = start[name] if disabled else _to_config(name, held)
    return values


def form_fields() -> set[str]:
    """Every field some group of the form shows (for some model)."""
    return {n for n, s in FIELDS.items() if s.group in GROUPS}



def settings_of(run: Run) -> tuple[RunConfig | None, str | None]:
    """(the run's config, None) to train again from, or (None, one line saying why not: a
    missing or damaged config.json)."""
    try:
        return run.config(), None
    except (ConfigError, FileNotFoundError) as exc:
        return None, str(exc)


def again_key(run_id: str) -> str:
    """The widget-key prefix of a form pre-filled from run ``run_id``: its own keys, so its
    widgets start at the run's values and not at what a preset's form held."""
    return f"again_{run_id}_"


def preset_of_model(model: str, default: str) -> str:
    """The first preset for ``model`` (a preset without ``model`` is a UFM's), else
    ``default``: the preset the form starts at when the page shows a run of ``model``."""
    return next((n for n, p in PRESETS.items() if p.get("model", "ufm") == model), default)
