"""ui/config_form.py: the Train form generated from config.FIELDS. Every RunConfig field is in
the form or hidden with a reason, its widget is the metadata's (label, kind, range), the form
round-trips every preset and model default unchanged, and the Train page shows it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dufm_core.config import FIELDS, MODELS, RunConfig
from dufm_core.presets import PRESETS
from tests.dashboard.conftest import run_page, serve_runs
from ui import config_form

NAMES = {f.name for f in dataclasses.fields(RunConfig)}
# streamlit.testing element list per widget kind
ELEMENTS = {"number": "number_input", "text": "text_input", "select": "selectbox",
            "check": "checkbox"}


def test_every_field_is_in_the_form_or_hidden_with_a_reason() -> None:
    shown = config_form.form_fields()
    assert shown | set(config_form.HIDDEN) == NAMES
    assert not shown & set(config_form.HIDDEN)
    assert all(len(reason) > 20 for reason in config_form.HIDDEN.values())
    assert all(FIELDS[n].group == "" for n in config_form.HIDDEN)


def test_widget_kinds_follow_the_metadata() -> None:
    for name in config_form.form_fields():
        spec, kind = FIELDS[name], config_form.widget_kind(name)
        if kind == "number":
            assert spec.lo is not None and spec.hi is not None, name
        assert (kind == "select") == bool(spec.choices), name
    assert config_form.widget_kind("lr") == "text"  # floats are typed: 1e-06 stays 1e-06
    assert config_form.widget_kind("width") == "text"  # one value or one per layer
    assert config_form.widget_kind("amp") == "check"
    # rows fit in the four columns
    for group in config_form.GROUPS:
        for model in MODELS:
            rows: dict[int, int] = {}
            for name in config_form.fields_of(group, model):
                rows[FIELDS[name].row] = rows.get(FIELDS[name].row, 0) + FIELDS[name].span
            assert max(rows.values(), default=0) <= config_form.COLUMNS, (group, model)


def _form_app(start: dict, model: str) -> None:
    import streamlit as st

    from ui import config_form

    values = {"model": model}
    for group in config_form.GROUPS:
        values |= config_form.render(group, start, "t_", model)
    st.session_state["values"] = values


STARTS = {name: p for name, p in PRESETS.items()} | {f"model={m}": {"model": m} for m in MODELS}


@pytest.mark.parametrize("name", list(STARTS))
def test_the_form_round_trips_presets_and_model_defaults(name: str) -> None:
    cfg = RunConfig.from_dict(STARTS[name])
    cfg.validate()
    at = AppTest.from_function(_form_app, args=(cfg.to_dict(), cfg.model), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    back = RunConfig.from_dict(at.session_state["values"])
    back.validate()
    assert back.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("model", MODELS)
def test_train_page_draws_the_generated_form(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    serve_runs(runs_dir, monkeypatch)
    at = run_page("train")
    prefix = "paper-linear_"
    if model != "ufm":
        at.selectbox(key="paper-linear_model").set_value(model).run()
        prefix = f"paper-linear_{model}_"
    assert not at.exception, [e.value for e in at.exception]
    start = RunConfig.from_dict({"model": model} if model != "ufm" else PRESETS["paper-linear"])
    for name in config_form.form_fields():
        spec = FIELDS[name]
        widgets = getattr(at, ELEMENTS[config_form.widget_kind(name)])
        keys = {w.key for w in widgets}
        if not spec.applies_to(model):
            assert prefix + name not in keys, name
            continue
        widget = widgets(key=prefix + name)
        assert widget.label == spec.label and widget.help == spec.help, name
        if config_form.widget_kind(name) == "number":
            assert widget.min == spec.lo and widget.max == min(spec.hi, config_form.JS_MAX_INT)
            assert widget.value == getattr(start, name)
        if config_form.widget_kind(name) == "select":
            assert list(widget.options) == list(spec.choices)


def test_a_field_used_only_for_some_values_is_disabled_otherwise(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_runs(runs_dir, monkeypatch)
    at = run_page("train")
    assert at.text_input(key="paper-linear_init_noise").disabled  # init = random
    at.selectbox(key="paper-linear_init").set_value("optimum").run()
    assert not at.text_input(key="paper-linear_init_noise").disabled
    at.text_input(key="paper-linear_init_noise").set_value("-1").run()
    assert [e.value for e in at.error] == ["init_noise: must be a number in [0, inf) (got -1)"]
