"""Bad inputs to the command line: each one in its own process, classified by what came back.

Every input here is invalid (wrong type, out of range, absurd size, a broken or hostile file),
so the only good outcome is a refusal: a non-zero exit, exactly one line that says ``error``,
no traceback, and no new run folder. The processes run under an address-space limit
(:data:`MEMORY_LIMIT`) so that an input that slips through validation fails fast instead of
swapping the machine, and under :data:`TIMEOUT` seconds.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

MEMORY_LIMIT = 10 * 2**30
TIMEOUT = 90.0
REFUSED, ACCEPTED, CRASHED, HUNG = "refused", "accepted", "crashed", "hung"


@dataclass
class InputResult:
    """One bad input and what the CLI did with it."""

    label: str
    args: list[str]
    outcome: str
    seconds: float
    message: str


def _files(tmp: Path) -> dict[str, Path]:
    """Hostile and broken files the inputs name."""
    tmp.mkdir(parents=True, exist_ok=True)
    f: dict[str, Path] = {}

    def put(name: str, data: bytes | str) -> None:
        p = tmp / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name] = p

    put("nested.json", "[" * 100_000 + "]" * 100_000)
    put("nested_obj.json", '{"a":' * 50_000 + "1" + "}" * 50_000)
    put("binary.json", os.urandom(4096))
    put("bigint.json", '{"K": ' + "9" * 5000 + "}")
    put("bigfloat.json", '{"lr": 1e400}')
    put("list.json", "[1, 2, 3]")
    put("string.json", '"K=3"')
    put("unknown.json", '{"K": 3, "bogus_field": 1}')
    put("wrongtype.json", '{"K": "three"}')
    put("nulls.json", '{"K": null, "n": null}')
    put("huge.json", json.dumps({"K": 10, "n": 100000, "width": 65536}))
    put("garbage.toml", "K = = 3\n[[[")
    put("binary.toml", os.urandom(2048))
    put("empty.json", "")
    put("sweep_huge.toml", 'name = "huge"\n[base]\nK = 3\n[grid]\n'
        + "".join(f"{k} = [{', '.join(str(i + 1) for i in range(100))}]\n"
                  for k in ("n", "width", "depth", "seed")))
    put("sweep_bad.toml", "[grid\nK = [1, 2")
    put("sweep_binary.toml", os.urandom(1024))
    put("sweep_unknown.toml", 'name = "x"\n[base]\nbogus = 1\n[grid]\nK = [2, 3]\n')
    put("sweep_absurd.toml", 'name = "x"\n[base]\nn = 100000\nwidth = 65536\n[grid]\nK = [10]\n')
    put("sweep_nested.toml", "a = " + "[" * 20_000 + "]" * 20_000 + "\n")
    (tmp / "not_a_run").mkdir()
    f["not_a_run"] = tmp / "not_a_run"
    return f


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(label, argv after ``python -m dufm_core``) of every bad input."""
    f = _files(tmp)
    big = "9" * 5000
    tr = ["train", "--steps", "2"]
    out: list[tuple[str, list[str]]] = []
    bad_values = {
        "--K": ["0", "1", "-3", "abc", "1.5", "100000", big, ""],
        "--n": ["0", "-1", "x", "10000000000"],
        "--width": ["0", "-4", "1e9", "65536"],
        "--depth": ["0", "-1", "1000", "two"],
        "--lam_w": ["-1", "nan", "inf", "abc", "1,2,3,4,5,6,7,8"],
        "--lam_h": ["-0.5", "nan", "-inf"],
        "--lam": ["-1", "nan"],
        "--lr": ["0", "-1", "nan", "inf", "1e400"],
        "--momentum": ["-0.1", "1.5", "nan"],
        "--betas": ["2,3", "0.9", "a,b", "0.9,0.999,0.5"],
        "--steps": ["-5", "abc", "1e30", "nan", big],
        "--log_points": ["0", "-1", "1e12"],
        "--checkpoint_points": ["-1", "1e12"],
        "--seed": ["-1", "1.5", big],
        "--init_scale": ["-1", "nan"],
        "--init_noise": ["-1", "inf"],
        "--activation": ["tanh", ""],
        "--loss": ["hinge"],
        "--model": ["gpt"],
        "--optimizer": ["lbfgs"],
        "--schedule": ["weird"],
        "--dtype": ["float16", "int8"],
        "--device": ["cuda:9", "tpu", "cpu;rm"],
        "--init": ["nope"],
        "--name": ["x" * 10_000],
    }
    for flag, values in bad_values.items():
        for v in values:
            out.append((f"train {flag} {v[:24]}", [*tr, flag, v]))
    out += [
        ("train width 65536 n 100000 K 10 (524 GB)",
         ["train", "--width", "65536", "--n", "100000", "--K", "10", "--steps", "2"]),
        ("train width 65536 depth 64 (2.2 TB)",
         ["train", "--width", "65536", "--depth", "64", "--steps", "2"]),
        ("train K 10000 n 10000000",
         ["train", "--K", "10000", "--n", "10000000", "--steps", "2"]),
        ("train resnet20 unknown dataset",
         ["train", "--model", "resnet20", "--dataset", "imagenet", "--steps", "2"]),
        ("train resnet20 mnist without files",
         ["train", "--model", "resnet20", "--dataset", "mnist", "--data_dir", str(tmp / "none"),
          "--steps", "2"]),
        ("train resnet20 batch -1",
         ["train", "--model", "resnet20", "--batch_size", "-1", "--steps", "2"]),
        ("train resnet20 test fraction 1.5",
         ["train", "--model", "resnet20", "--test_fraction", "1.5", "--steps", "2"]),
        ("train resume missing", ["train", "--resume", str(tmp / "missing")]),
        ("train resume a file", ["train", "--resume", str(f["list.json"])]),
        ("train resume not a run", ["train", "--resume", str(f["not_a_run"])]),
    ]
    for name in ("nested.json", "nested_obj.json", "binary.json", "bigint.json", "bigfloat.json",
                 "list.json", "string.json", "unknown.json", "wrongtype.json", "nulls.json",
                 "huge.json", "garbage.toml", "binary.toml", "empty.json"):
        out.append((f"train --config {name}", ["train", "--config", str(f[name]), "--steps", "2"]))
    out.append(("train --config missing", ["train", "--config", str(tmp / "nope.json")]))
    th = ["theory", "--K", "3", "--n", "10", "--depth", "3"]
    out += [
        ("theory K 0", ["theory", "--K", "0", "--n", "10", "--depth", "3", "--lam", "0.01"]),
        ("theory depth 0", ["theory", "--K", "3", "--n", "10", "--depth", "0", "--lam", "0.01"]),
        ("theory K 10000 n 1e7 depth 64",
         ["theory", "--K", "10000", "--n", "10000000", "--depth", "64", "--lam", "0.01"]),
        ("theory K huge", ["theory", "--K", big, "--n", "10", "--depth", "3", "--lam", "0.01"]),
        ("theory lam -1", [*th, "--lam", "-1"]),
        ("theory lam abc", [*th, "--lam", "abc"]),
        ("theory lam nan", [*th, "--lam", "nan"]),
        ("theory lam-w wrong count", [*th, "--lam-w", "0.1,0.2", "--lam-h", "0.1"]),
        ("theory no lam", th),
        ("theory tau abc", [*th, "--lam", "0.01", "--tau", "abc"]),
        ("theory tau -1", [*th, "--lam", "0.01", "--tau", "-1"]),
    ]
    out += [
        ("analyze missing", ["analyze", str(tmp / "missing")]),
        ("analyze a file", ["analyze", str(f["list.json"])]),
        ("analyze not a run", ["analyze", str(f["not_a_run"])]),
        ("analyze full-params bogus", ["analyze", str(f["not_a_run"]), "--full-params", "x"]),
    ]
    for name in ("sweep_huge.toml", "sweep_bad.toml", "sweep_binary.toml", "sweep_unknown.toml",
                 "sweep_absurd.toml", "sweep_nested.toml", "list.json"):
        out.append((f"sweep {name}", ["sweep", str(f[name])]))
    out += [
        ("sweep missing", ["sweep", str(tmp / "none.toml")]),
        ("sweep jobs 0", ["sweep", str(f["sweep_unknown.toml"]), "--jobs", "0"]),
        ("runs --runs-dir a file", ["runs", "--runs-dir", str(f["list.json"])]),
    ]
    return out


def _limit() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def classify(rc: int | None, stderr: str, new_folders: int) -> tuple[str, str]:
    """Outcome and the message line of one finished (or timed-out: ``rc`` None) process."""
    if rc is None:
        return HUNG, f"no answer in {TIMEOUT:.0f} s"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if "Traceback" in stderr or rc < 0:
        last = lines[-1] if lines else f"signal {-rc}"
        return CRASHED, last[:200]
    if rc == 0:
        return ACCEPTED, "exit status 0"
    errors = [ln for ln in lines if "error" in ln.lower()]
    if len(errors) == 1 and new_folders == 0:
        return REFUSED, errors[0][:200]
    why = f"{len(errors)} error lines" if len(errors) != 1 else f"{new_folders} run folder(s) made"
    return CRASHED, f"{why}: {(lines[-1] if lines else '')[:160]}"


def run_one(label: str, args: list[str], tmp: Path) -> InputResult:
    runs = tmp / "runs" / str(abs(hash(label)))
    runs.mkdir(parents=True)
    env = {**os.environ, "DUFM_RUNS_DIR": str(runs), "DUFM_LAUNCHER": "0",
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "dufm_core", *args], env=env,
                              capture_output=True, text=True, errors="replace", timeout=TIMEOUT,
                              preexec_fn=_limit)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, stderr = None, (exc.stderr or b"").decode(errors="replace") if isinstance(
            exc.stderr, bytes) else (exc.stderr or "")
    seconds = time.perf_counter() - t0
    new = sum(1 for p in runs.iterdir() if p.is_dir())
    outcome, message = classify(rc, stderr, new)
    return InputResult(label, args, outcome, round(seconds, 2), message)


def run_all(tmp: Path, workers: int = 2, progress=print) -> list[InputResult]:
    todo = cases(tmp)
    results: list[InputResult] = []
    with ThreadPoolExecutor(workers) as pool:
        for r in pool.map(lambda c: run_one(c[0], c[1], tmp), todo):
            results.append(r)
            if r.outcome != REFUSED:
                progress(f"  {r.outcome:8s} {r.label}: {r.message}")
    return results
