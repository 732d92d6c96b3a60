"""The memory cap (issue #12, dufm_core/resources.py): sizes, the cap, the one-line refusal at
every entry before any folder is made, presets that pass on a small machine, and the estimate
against the peak memory of real runs, measured in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dufm_core import kinds, resources, sweeps
from dufm_core.cli import main
from dufm_core.config import ConfigError, RunConfig
from dufm_core.presets import PRESETS
from dufm_core.process import jobs
from dufm_core.resources import MemoryCapError

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**kw) -> RunConfig:
    cfg = RunConfig.from_dict(kw)
    cfg.validate()
    return cfg


@pytest.mark.parametrize(("text", "value"), [
    ("8G", 8 * 10**9), ("512M", 512 * 10**6), ("1.5GB", 1_500_000_000), ("4GiB", 4 * 2**30),
    ("123456", 123456), (" 2 k ", 2000), ("3t", 3 * 10**12), ("64MiB", 64 * 2**20),
])
def test_sizes_parse(text: str, value: int) -> None:
    assert resources.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-5G", "0", "8X", "1e9", "9" * 5000, "8 G B B"])
def test_bad_sizes_are_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        resources.parse_size(text)
    msg = str(err.value)
    assert msg.startswith("DUFM_MEMORY_CAP: must be a size such as 8G")
    assert len(msg.splitlines()) == 1 and len(msg) < 200


def test_format_bytes() -> None:
    assert resources.format_bytes(524_288_000_000) == "524 GB"
    assert resources.format_bytes(4.3e9) == "4.3 GB"
    assert resources.format_bytes(12_000_000) == "12 MB"
    assert resources.format_bytes(512) == "512 B"


def test_the_default_cap_is_half_the_physical_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(resources.CAP_ENV, raising=False)
    cap, source = resources.memory_cap()
    assert cap == int(resources.physical_memory() * 0.5)
    assert "50% of this machine's" in source and resources.CAP_ENV in source
    monkeypatch.setenv(resources.CAP_ENV, "3G")
    assert resources.memory_cap() == (3 * 10**9, resources.CAP_ENV)


def test_a_bad_cap_is_one_line_at_the_cli(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv(resources.CAP_ENV, "plenty")
    assert main(["train", "--K", "3", "--runs-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: DUFM_MEMORY_CAP: must be a size such as 8G, 512M, 4GiB or a number "
                   "of bytes (got 'plenty')"]


def test_just_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for cfg in (_cfg(K=5, n=300, width=200, depth=3),
                _cfg(K=5, n=300, width=200, depth=3, activation="relu", optimizer="adam"),
                _cfg(model="resnet20", n=40)):
        need = kinds.get(cfg.model).memory_estimate(cfg).total
        monkeypatch.setenv(resources.CAP_ENV, str(need))
        kinds.check_memory(cfg)
        monkeypatch.setenv(resources.CAP_ENV, str(need - 1))
        with pytest.raises(MemoryCapError) as err:
            kinds.check_memory(cfg)
        assert "more than the memory cap" in str(err.value)
        assert str(err.value).endswith("(DUFM_MEMORY_CAP)")


@pytest.mark.parametrize(("args", "words"), [
    (["--width", "65536", "--n", "100000", "--K", "10"], "TB (metrics' layer features"),
    (["--width", "65536", "--depth", "64"], "weights"),
    (["--K", "10000", "--n", "10000000", "--width", "10000", "--depth", "2"], "features H_1"),
])
def test_absurd_runs_are_refused_before_any_folder(args, words, monkeypatch, tmp_path: Path,
                                                   capsys) -> None:
    monkeypatch.setenv(resources.CAP_ENV, "12G")
    runs = tmp_path / "runs"
    t0 = time.perf_counter()
    assert main(["train", *args, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this run needs about" in err[0] and words in err[0], err
    assert err[0].endswith("more than the memory cap 12 GB (DUFM_MEMORY_CAP)")
    assert not runs.exists() and time.perf_counter() - t0 < 5
    with pytest.raises(MemoryCapError):
        jobs.launch(RunConfig.from_dict({"width": 65536, "depth": 64}), runs)
    assert not runs.exists()


def test_the_brief_example_names_width_and_n(monkeypatch, tmp_path, capsys) -> None:
    """width 65536 × n 100000 × K 10 of float64 features alone is 524 GB."""
    monkeypatch.setenv(resources.CAP_ENV, "12G")
    cfg = _cfg(K=10, n=100_000, width=65536)
    parts = {p.name: p.nbytes for p in kinds.get("ufm").memory_estimate(cfg).parts}
    assert parts["features H_1"] // 2 == 65536 * 1_000_000 * 8  # value and gradient
    with pytest.raises(MemoryCapError) as err:
        kinds.check_memory(cfg)
    assert err.value.field == "width × depth × K × n"


def test_theory_refuses_what_it_cannot_hold(monkeypatch, capsys) -> None:
    monkeypatch.setenv(resources.CAP_ENV, "2G")
    t0 = time.perf_counter()
    assert main(["theory", "--K", "10000", "--n", "10000000", "--depth", "64",
                 "--lam", "1e-9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: K: this theory output needs about 84 GB")
    assert time.perf_counter() - t0 < 5
    assert main(["theory", "--K", "30", "--n", "10000000", "--depth", "64", "--lam", "1e-9",
                 "--tau", "0.5"]) == 0
    assert len(json.loads(capsys.readouterr().out)["full_outliers"]) == 900


def test_resume_and_analysis_check_the_cap(monkeypatch, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert main(["train", "--K", "3", "--n", "40", "--width", "30", "--depth", "2", "--steps",
                 "5", "--runs-dir", str(runs)]) == 0
    run_dir = capsys.readouterr().out.strip().splitlines()[-1]
    monkeypatch.setenv(resources.CAP_ENV, "100k")
    assert main(["train", "--resume", run_dir, "--steps", "10"]) == 2
    assert "this run needs about" in capsys.readouterr().err
    assert main(["analyze", run_dir]) == 2
    err = capsys.readouterr().err
    assert "memory cap" in err and len(err.strip().splitlines()) == 1


def test_every_preset_passes_on_a_2gb_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default cap of a 2 GB machine is 1 GB: every Train preset trains and is analysed
    under it, and every sweep preset validates (its members' training and analysis)."""
    monkeypatch.setenv(resources.CAP_ENV, "1G")
    for name, preset in PRESETS.items():
        cfg = _cfg(**preset)
        kind = kinds.get(cfg.model)
        assert kind.check_memory(cfg).total < 10**9, name
        resources.check(kind.analysis_memory(cfg))
    for name, path in sweeps.presets.spec_files().items():
        assert sweeps.load_spec(path).members(), name


def test_a_sweep_member_over_the_cap_is_refused(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(resources.CAP_ENV, "1G")
    text = ('name = "big"\n[base]\nK = 10\nn = 1000\ndepth = 2\nsteps = 10\n'
            '[grid]\nwidth = [10, 20000]\n')
    with pytest.raises(sweeps.SpecError, match=r"member 1 \[width=20000\]: .*memory cap 1 GB"):
        sweeps.load_spec("big.toml", text)
    full = (text.replace("20000]", "30]").replace("n = 1000", "n = 10")
            + "[analysis]\nfull_hessian = true\n")
    monkeypatch.setenv(resources.CAP_ENV, "20M")
    with pytest.raises(sweeps.SpecError, match="the analysis needs about"):
        sweeps.load_spec("big.toml", full)


_MEASURE = """
import json, sys, tempfile, threading, time
import torch
from dufm_core import kinds
from dufm_core.config import RunConfig
torch.set_num_threads(1)
cfg = RunConfig.from_dict(json.loads(sys.argv[1])); cfg.validate()
estimate = kinds.get(cfg.model).memory_estimate(cfg).total
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) * 1024
base, peak, done = anon(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anon())
        time.sleep(0.002)
t = threading.Thread(target=sample, daemon=True)
t.start()
with tempfile.TemporaryDirectory() as d:
    kinds.train(cfg, runs_dir=d, progress=lambda m: None)
done.set(); t.join()
print(json.dumps({"estimate": estimate, "measured": max(peak[0], anon()) - base}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("config", [
    {"K": 10, "n": 1000, "width": 500, "depth": 3},  # linear MSE: the K-row fast path
    {"K": 10, "n": 500, "width": 400, "depth": 3, "activation": "relu", "optimizer": "adam"},
    {"model": "resnet20", "n": 100},  # digits, full batch of 1000 images
])
def test_the_estimate_is_within_a_factor_of_the_measured_peak(config: dict) -> None:
    """The estimate against the peak anonymous RSS of a short real run (after the imports),
    sampled every 2 ms in a fresh process: between half and three times it. Anonymous memory
    only: file-backed pages (the libraries' code) come and go with the page cache, which
    depends on what else the machine runs, and are not what the estimate counts."""
    config = {**config, "steps": 2, "log_points": 2, "checkpoint_points": 1, "device": "cpu"}
    out = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=180, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = got["estimate"] / got["measured"]
    assert 0.5 <= ratio <= 3.0, {**got, "ratio": ratio}


_UNDER_LIMIT = """
import json, resource, sys
limit = 3 * 2**30  # an address-space limit: an attempted big allocation fails instead of swapping
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from dufm_core.cli import main
from dufm_core.checkpoints import CheckpointError
from dufm_core.kinds import load_checkpoint
if sys.argv[1] == "train":
    sys.exit(main(["train", "--width", "65536", "--n", "100000", "--K", "10", "--steps", "2",
                   "--runs-dir", sys.argv[2]]))
try:
    load_checkpoint(sys.argv[2])
except CheckpointError as exc:
    print("refused:", exc, file=sys.stderr)
    sys.exit(2)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")
def test_absurd_sizes_are_refused_under_an_address_space_limit(tmp_path: Path) -> None:
    """A 524 GB run and a tiny safetensors file whose config asks for the same are refused with
    one line by a process limited to 3 GB of address space: nothing was allocated first (an
    attempted allocation would end in a traceback), and no run folder is made."""
    cfg = RunConfig(K=10, n=100000, width=65536, depth=3).to_dict()
    head = json.dumps({
        "__metadata__": {"format_version": "1", "step": "0", "config": json.dumps(cfg)},
        "features": {"dtype": "F64", "shape": [2, 2], "data_offsets": [0, 32]},
    }).encode()
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(len(head).to_bytes(8, "little") + head + bytes(32))
    runs = tmp_path / "runs"
    for args in (["train", str(runs)], ["load", str(tiny)]):
        out = subprocess.run([sys.executable, "-c", _UNDER_LIMIT, *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2, out.stderr[-500:]
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-500:]
        assert "memory cap" in lines[0], lines[0]
    assert not runs.exists() or not any(runs.iterdir())
