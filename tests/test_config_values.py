"""Config values and files that used to end in tracebacks (issue #12): every one is a single
ConfigError line; integers are checked as integers; the theory warnings cite sections that
exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dufm_core import config
from dufm_core.config import ConfigError, RunConfig, load_config_file
from dufm_core.config_values import check_float, check_int, shown

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("data", [[1, 2], "K=3", 5, None, (("K", 3),)])
def test_a_config_that_is_not_a_table(data) -> None:
    with pytest.raises(ConfigError, match=r"^config: must be a table/object of config keys"):
        RunConfig.from_dict(data)


ODD = [
    ("K", 10**5000), ("K", "9" * 5000), ("K", 1e308), ("K", [[[[[[3]]]]]]), ("K", {"a": 1}),
    ("lr", 10**5000), ("lr", "1" * 100_000), ("lr", [0.1]), ("seed", 2**63), ("seed", -1),
    ("width", [1] * 10**5), ("lam_w", "0.1," * 1000), ("betas", [0.9] * 1000),
    ("amp", [True]), ("activation", ["linear"]), ("name", "x" * 10**6), ("model", {"x": 1}),
]


@pytest.mark.parametrize(("field", "value"), ODD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(ODD)])
def test_odd_values_are_one_short_line(field: str, value) -> None:
    cfg = RunConfig.from_dict({field: value})
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and len(msg) < 400, msg
    assert msg.startswith(f"{field}: ")


def test_integers_stay_exact() -> None:
    assert check_int("seed", 2**63 - 1, 0, 2**63 - 1) == 2**63 - 1
    assert check_int("seed", str(2**63 - 1), 0, 2**63 - 1) == 2**63 - 1
    assert check_int("steps", "1e3", 1, 10**9) == 1000
    assert check_int("steps", 2.0, 1, 10) == 2
    with pytest.raises(ConfigError):
        check_int("steps", True, 0, 10)
    assert check_float("lr", "1e-3", 0, 1) == 1e-3
    assert "digits" in shown(10**5000) and len(shown("x" * 10**6)) <= 80


def test_seed_near_the_top_validates() -> None:
    cfg = RunConfig(seed=2**63 - 1)
    cfg.validate()
    assert cfg.seed == 2**63 - 1


def test_config_files_of_every_bad_kind(tmp_path: Path) -> None:
    cases = {
        "bin.json": b"\x00\xff\xfe\x80",
        "bin.toml": b"\x00\xff\xfe\x80",
        "list.json": b"[1]",
        "deep.json": b"[" * 50_000 + b"]" * 50_000,
        "deep.toml": b"K = " + b"[" * 50_000 + b"]" * 50_000,
        "digits.json": b'{"K": ' + b"7" * 5000 + b"}",
        "digits.toml": b"K = " + b"7" * 5000,
        "big.json": b" " * (2 << 20) + b"{}",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ConfigError) as err:
            load_config_file(path)
        assert str(err.value).startswith("config: ") and len(str(err.value).splitlines()) == 1


def _sections(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", text, re.M)}


def test_warnings_cite_sections_that_exist() -> None:
    """Every "docs/theory.md §X" the config's warnings cite is a heading of docs/theory.md."""
    have = _sections((ROOT / "docs" / "theory.md").read_text())
    source = Path(config.__file__).read_text()
    cited = set(re.findall(r"theory\.md §(\d+(?:\.\d+)?)", source))
    assert cited and cited <= have, cited - have


def test_the_warnings_near_the_threshold_say_what_is_and_is_not_promised() -> None:
    """Just above λ_crit the optimum is zero; just below it is collapsed; in both cases the
    theory does not promise that gradient descent gets there (it can stall: K=3, n=4, L=3,
    λ=0.0655 ended at a loss of neither)."""
    above = RunConfig(K=3, n=4, width=6, depth=3, lam_w=0.0655, lam_h=0.0655)
    (msg,) = above.validate()
    assert "above the critical value" in msg and "global optimum is W = 0" in msg
    assert "does not say that gradient descent" in msg and "collapses to zero" not in msg
    below = RunConfig(K=3, n=4, width=6, depth=3, lam_w=0.062, lam_h=0.062)
    (msg,) = below.validate()
    assert "close below the critical value" in msg and "stall" in msg
    far = RunConfig(K=3, n=4, width=6, depth=3, lam_w=0.01, lam_h=0.01)
    assert far.validate() == []
