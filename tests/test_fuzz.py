"""Property-based fuzzing of everything that parses outside input (issue #12): config dicts and
files, the CLI's train/theory options, sweep specs and the safetensors reader. The only
exceptions allowed are the documented one-line error types (ConfigError and its SpecError,
CheckpointError), and their message is one line. Bounded: ~60 examples a property, no deadline
(a first example imports torch), and the memory cap kept small so nothing big is ever built."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dufm_core import cli, kinds, sweeps
from dufm_core.checkpoints import CheckpointError
from dufm_core.config import FIELDS, ConfigError, RunConfig, load_config_file

# $FUZZ_N examples (random) for a long local hunt; 60 derandomised ones in the suite
_N = os.environ.get("FUZZ_N")
FUZZ = settings(max_examples=int(_N or 60), deadline=None, derandomize=not _N,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 20 MB memory cap: whatever validates here is small."""
    monkeypatch.setenv("DUFM_MEMORY_CAP", "20M")


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    assert len(text) < 2000, len(text)


# --------------------------------------------------------------------------- values
_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=10**4000, max_value=10**4400),  # past str()'s digit limit when long
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 3, 5, 60, 2**63 - 1, 2**63, -1, 0.5, 1e-300, 1e300]),
)
_words = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["1e3", "2.0", "nan", "inf", "-0", "0x10", "1_000", "3,4", "1,2,3,4,5",
                     "linear", "relu", "mse", "ce", "gd", "adam", "ufm", "resnet20", "cpu",
                     "float32", "true", "no", "9" * 5000]),
)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, _words),
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
_FIELD_NAMES = [*FIELDS, "lam"]


@FUZZ
@given(st.dictionaries(st.sampled_from(_FIELD_NAMES), _json_values, max_size=8))
def test_config_dicts(data: dict) -> None:
    try:
        cfg = RunConfig.from_dict(data)
        cfg.validate()
        kinds.check_memory(cfg)
    except ConfigError as exc:
        _one_line(exc)


@FUZZ
@given(st.one_of(_json_values, st.dictionaries(st.text(max_size=20), _json_values, max_size=3)))
def test_config_dicts_of_any_shape(data) -> None:
    try:
        RunConfig.from_dict(data).validate()
    except ConfigError as exc:
        _one_line(exc)


# --------------------------------------------------------------------------- files
def _json_text(value) -> str:
    try:
        return json.dumps(value)
    except ValueError:  # an int past the digit limit
        return "1" * 5000


@FUZZ
@given(st.one_of(st.binary(max_size=400),
                 _json_values.map(lambda v: _json_text(v).encode()),
                 st.dictionaries(st.sampled_from(_FIELD_NAMES), _json_values, max_size=6)
                 .map(lambda v: _json_text(v).encode()),
                 st.text(max_size=200).map(str.encode)),
       st.sampled_from([".json", ".toml"]))
def test_config_files(tmp_path_factory, content: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / f"c{suffix}"
    path.write_bytes(content)
    try:
        RunConfig.from_dict(load_config_file(path)).validate()
    except ConfigError as exc:
        _one_line(exc)


# --------------------------------------------------------------------------- the CLI
_option_text = st.one_of(_words, _numbers.map(lambda v: _json_text(v)))


def _run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue()


@FUZZ
@given(st.dictionaries(st.sampled_from(list(FIELDS)), _option_text, max_size=5))
def test_cli_train_options(options: dict[str, str]) -> None:
    """In-process ``train --dry-run``: exit 0, or 2 with one line ``error: ...``."""
    argv = ["train", "--dry-run", *[f"--{k}={v}" for k, v in options.items()]]
    code, err = _run_cli(argv)
    assert code in (0, 2)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


@FUZZ
@given(st.fixed_dictionaries({"K": _option_text, "n": _option_text, "depth": _option_text},
                             optional={"lam": _option_text, "lam-w": _option_text,
                                       "lam-h": _option_text, "tau": _option_text}))
def test_cli_theory_options(options: dict[str, str]) -> None:
    code, err = _run_cli(["theory", *[f"--{k}={v}" for k, v in options.items()]])
    assert code in (0, 2)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


# --------------------------------------------------------------------------- sweep specs
def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _json_text(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) \
            + "}"
    return '""'


_toml_leaf = st.one_of(st.booleans(), _numbers, _words)
_toml_values = st.recursive(_toml_leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
_spec_keys = st.sampled_from([*FIELDS, "lam", "lam_over_crit", "bogus"])


@st.composite
def _specs(draw) -> str:
    lines = [f"name = {_toml_value(draw(st.one_of(st.just('fz'), _words)))}", "[base]"]
    for key, value in draw(st.dictionaries(_spec_keys, _toml_values, max_size=4)).items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append("[grid]")
    for key, value in draw(st.dictionaries(_spec_keys, st.lists(_toml_leaf, min_size=0,
                                                                max_size=3),
                                           max_size=3)).items():
        lines.append(f"{key} = {_toml_value(value)}")
    if draw(st.booleans()):
        lines += ["[analysis]", f"full_hessian = {_toml_value(draw(_toml_leaf))}"]
    return "\n".join(lines) + "\n"


@FUZZ
@given(st.one_of(_specs(), st.text(max_size=300), st.binary(max_size=300)))
def test_sweep_specs(text: str | bytes) -> None:
    try:
        if isinstance(text, bytes):
            sweeps.parse_spec("fuzz.toml", text.decode("utf-8", "replace")).members()
        else:
            sweeps.load_spec("fuzz.toml", text)
    except ConfigError as exc:  # SpecError is one
        _one_line(exc)


# --------------------------------------------------------------------------- safetensors
_st_entry = st.fixed_dictionaries({
    "dtype": st.one_of(st.sampled_from(["F64", "F32", "I64", "BF16", ""]), _json_values),
    "shape": st.one_of(st.lists(st.integers(-3, 2**64), max_size=4), _json_values),
    "data_offsets": st.one_of(st.lists(st.integers(-3, 2**64), min_size=2, max_size=2),
                              _json_values),
})
_metadata = st.one_of(
    st.just({"format_version": "1", "step": "0",
             "config": json.dumps({"K": 3, "n": 4, "width": 5, "depth": 2})}),
    st.dictionaries(st.sampled_from(["format_version", "step", "config"]), _json_values),
    _json_values,
)
_names = st.sampled_from(["features", "weights.0", "weights.1", "x", "__metadata__"])


@FUZZ
@given(st.one_of(
    st.dictionaries(_names, _st_entry, max_size=3).flatmap(
        lambda entries: _metadata.map(lambda meta: {"__metadata__": meta, **entries})),
    _json_values,
), st.binary(max_size=200), st.integers(-5, 5))
def test_safetensors_reader(tmp_path_factory, header, body: bytes, skew: int) -> None:
    head = _json_text(header).encode()
    declared = max(0, len(head) + skew)
    raw = struct.pack("<Q", declared) + head + body
    path = tmp_path_factory.mktemp("st") / "f.safetensors"
    path.write_bytes(raw)
    try:
        kinds.load_checkpoint(path)
    except CheckpointError as exc:
        _one_line(exc)


@FUZZ
@given(st.binary(max_size=600), st.sampled_from([".safetensors", ".pt"]))
def test_checkpoint_bytes(tmp_path_factory, raw: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("ck") / f"f{suffix}"
    path.write_bytes(raw)
    try:
        kinds.load_checkpoint(path)
    except CheckpointError as exc:
        _one_line(exc)
        assert "weights_only" not in str(exc)
