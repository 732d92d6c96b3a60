"""Sweeps: a grid of runs from one TOML spec, run by an executor, summarised in one table.

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

Every member is validated (:meth:`RunConfig.validate`) before anything starts; an error names the
member and the field (``member 3 [lam=0.5, seed=1]: lr: must be ...``).

On disk (see docs/sweeps.md)::

    runs/sweeps/<name>/          stable: a rerun of the same spec finds it
      spec.toml                  the spec as given
      sweep.json                 the members: index, key, grid values, resolved config
      driver.json                executor, pid, host, state of the process running the sweep
      members/<key>.json         one record per member: its run id, state, summary row
      summary.csv                one row per member (see :func:`member_row`)
      log.txt                    the driver's output when the dashboard started it
    runs/<run_id>/               the member runs themselves, ordinary run folders, so every
                                 page of the dashboard and every CLI verb can open them

A member is identified by its **key**, a hash of its resolved config (the ``name`` excluded), so a
rerun skips members that already ended (``finished`` or ``diverged``: outcomes of the config, not
accidents), resumes ``cancelled``/``interrupted`` ones from their last checkpoint, and starts the
rest afresh. A member's training *and* its analysis run in the worker (:func:`execute_member`),
so an executor parallelises both.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dufm_core.config import ConfigError, RunConfig
from dufm_core.store import (
    atomic_write_bytes,
    atomic_write_json,
    default_runs_dir,
    pid_alive,
    read_json,
)

SWEEPS_SUBDIR = "sweeps"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples" / "sweeps"
DONE_STATES = ("finished", "diverged")  # a rerun keeps these: they are results of the config
ENDED_STATES = ("finished", "diverged", "failed", "cancelled")  # nothing runs any more
RESUMABLE_STATES = ("cancelled", "interrupted", "running")  # resumed from the last checkpoint
TOP_KEYS = ("name", "description", "base", "grid", "analysis", "resources")
DERIVED_AXES = ("lam", "lam_over_crit")
FULL_PARAMS = ("weights", "weights+features")
CANCEL_FILE = "cancel"  # present while a cancelled sweep winds down: members do not start
ZERO_HESSIAN = 1e-8  # a layer whose top fit-Hessian eigenvalue is below this has no outliers
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONFIG_FIELDS = tuple(f.name for f in fields(RunConfig))
CONFIG_COLUMNS = (
    "K",
    "n",
    "depth",
    "width",
    "activation",
    "loss",
    "lam_w",
    "lam_h",
    "lr",
    "steps",
    "seed",
)


TEMPLATE = """name = "my-sweep"
[base]
K = 3
n = 10
width = 12
depth = 3
steps = 4000
[grid]
lam = [0.002, 0.02]
seed = [0, 1]
"""


class SpecError(ConfigError):
    """A sweep spec is invalid. ``field`` is the offending key (``grid.lam``, ``lr``, ...);
    ``member`` is the member's index when one member's config is the problem."""

    def __init__(self, field_name: str, message: str, member: str | None = None) -> None:
        self.member = member
        ConfigError.__init__(self, field_name, message)
        if member is not None:
            self.args = (f"{member}: {field_name}: {message}",)


# --------------------------------------------------------------------------- the spec
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
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def parse_spec(source: str | Path, text: str | None = None) -> SweepSpec:
    """Parse a spec from TOML text (``text``) or a file path; check its shape (not yet the
    members: call :meth:`SweepSpec.members`, or :func:`load_spec` which does both)."""
    if text is None:
        path = Path(source)
        if not path.is_file():
            raise SpecError("spec", f"file not found: {path}")
        text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError("spec", f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise SpecError(unknown[0], f"unknown spec key; allowed: {', '.join(TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SpecError(
            "name",
            "must be 1-64 characters: letters, digits, '-', '_' or '.', starting with a letter "
            f"or digit (got {name!r})",
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
            raise SpecError(f"grid.{key}", f"must be a non-empty list of values (got {values!r})")
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
        raise SpecError("analysis.full_hessian", f"must be true or false (got {full!r})")
    full_params = analysis.get("full_params", "weights")
    if full_params not in FULL_PARAMS:
        raise SpecError("analysis.full_params", f"must be one of {' | '.join(FULL_PARAMS)}")
    res = data.get("resources", {})
    if not isinstance(res, dict) or set(res) - {"cpus", "gpus"}:
        raise SpecError("resources", "allowed keys: cpus, gpus (per member)")
    cpus, gpus = res.get("cpus", 1.0), res.get("gpus", 0.0)
    for key, value, lo in (("cpus", cpus, 0.0), ("gpus", gpus, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo:
            raise SpecError(f"resources.{key}", f"must be a number >= {lo:g} (got {value!r})")
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
    from dufm_core import theory

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
                if (
                    isinstance(factor, bool)
                    or not isinstance(factor, (int, float))
                    or not factor > 0
                    or not math.isfinite(factor)
                ):
                    raise ConfigError("lam_over_crit", f"must be a number > 0 (got {factor!r})")
                lam = float(factor) * theory.lambda_crit(cfg.K, cfg.n, cfg.depth)
                cfg.lam_w, cfg.lam_h = lam, lam
                cfg.validate()
        except ConfigError as exc:
            raise SpecError(exc.field, str(exc).split(": ", 1)[-1], member=label) from None
        except (TypeError, ValueError) as exc:
            raise SpecError("config", str(exc), member=label) from None
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


# --------------------------------------------------------------------------- the sweep folder
def sweeps_root(runs_dir: str | Path | None = None) -> Path:
    """``<runs>/sweeps``."""
    return (Path(runs_dir) if runs_dir is not None else default_runs_dir()) / SWEEPS_SUBDIR


def sweep_dir(name: str, runs_dir: str | Path | None = None) -> Path:
    """The stable folder of sweep ``name``: ``<runs>/sweeps/<name>``."""
    return sweeps_root(runs_dir) / name


def runs_root_of(folder: str | Path) -> Path:
    """The runs folder a sweep folder belongs to (``<runs>/sweeps/<name>`` → ``<runs>``)."""
    return Path(folder).resolve().parent.parent


def _record_path(folder: Path, key: str) -> Path:
    return folder / "members" / f"{key}.json"


def read_record(folder: str | Path, key: str) -> dict[str, Any] | None:
    """A member's record, or None if it never started."""
    try:
        return read_json(_record_path(Path(folder), key))
    except (OSError, ValueError):
        return None


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    (folder / "members").mkdir(parents=True, exist_ok=True)
    record["updated_at"] = round(time.time(), 3)
    atomic_write_json(_record_path(folder, record["key"]), record)


def prepare(spec: SweepSpec, runs_dir: str | Path | None = None) -> Path:
    """Create (or refresh) the sweep folder: ``spec.toml`` and ``sweep.json``. Idempotent."""
    members = spec.members()
    folder = sweep_dir(spec.name, runs_dir)
    (folder / "members").mkdir(parents=True, exist_ok=True)
    (folder / CANCEL_FILE).unlink(missing_ok=True)
    atomic_write_bytes(folder / "spec.toml", spec.source.encode())
    atomic_write_json(
        folder / "sweep.json",
        {
            "name": spec.name,
            "description": spec.description,
            "axes": spec.axes,
            "full_hessian": spec.full_hessian,
            "full_params": spec.full_params,
            "resources": {"cpus": spec.cpus, "gpus": spec.gpus},
            "members": [
                {"index": m.index, "key": m.key, "values": m.values, "config": m.config.to_dict()}
                for m in members
            ],
            "updated_at": round(time.time(), 3),
        },
    )
    return folder


def manifest(folder: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep folder."""
    return read_json(Path(folder) / "sweep.json")


# --------------------------------------------------------------------------- one member
def _new_member_run(cfg: RunConfig, runs_root: Path, folder: Path) -> Any:
    """Make the member's run folder so that it appears in the runs folder already claimed:
    built in ``<sweep>/staging``, given a ``claim`` file (so :func:`dufm_core.process.jobs.pump`
    never starts it as an ordinary queued run), then moved into place with one ``os.rename``."""
    from dufm_core.store import Run, create_run

    staging = folder / "staging"
    run = create_run(cfg, staging)
    (run.path / "claim").write_text(f"sweep {folder.name} {socket.gethostname()} {os.getpid()}\n")
    target = runs_root / run.path.name
    runs_root.mkdir(parents=True, exist_ok=True)
    os.rename(run.path, target)
    return Run(target)


def execute_member(task: Mapping[str, Any]) -> dict[str, Any]:
    """Train one member and analyse its last checkpoint; write and return its record.

    The one function every executor runs (a pool process, a Ray task, or in-process). ``task``
    is plain data: ``key``, ``index``, ``values``, ``config`` (dict), ``runs_dir`` and
    ``sweep_dir`` (absolute paths every worker can reach), ``full_hessian``, ``full_params``.
    Never raises for a failing member: the failure is the record's ``state`` and ``error``.
    """
    from dufm_core import analysis, training
    from dufm_core.store import open_run

    folder = Path(task["sweep_dir"])
    runs_root = Path(task["runs_dir"])
    key = task["key"]
    record: dict[str, Any] = {
        "key": key,
        "index": task["index"],
        "values": task["values"],
        "run": None,
        "state": "running",
        "error": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": round(time.time(), 3),
        "finished_at": None,
        "train_seconds": None,
        "analysis_seconds": None,
        "cpu_seconds": None,  # CPU time of the whole member in its process (user + system)
        "row": None,
    }
    if (folder / CANCEL_FILE).exists():  # cancelled before it started: no run folder
        record.update(state="cancelled", error="cancelled before it started")
        record["finished_at"] = record["started_at"]
        _write_record(folder, record)  # the summary then says so (a rerun starts it)
        return record
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        cfg = RunConfig.from_dict(task["config"])
        cfg.validate()
        old = read_record(folder, key)
        run, mode = None, "new"
        if old and old.get("run") and (runs_root / old["run"]).is_dir():
            previous = open_run(runs_root / old["run"])
            state = previous.status().get("state")
            if state == "finished":  # trained before, its analysis never recorded: analyse
                run, mode = previous, "analyse"
            elif state in RESUMABLE_STATES and previous.latest_checkpoint() is not None:
                run, mode = previous, "resume"
        if run is None:
            run = _new_member_run(cfg, runs_root, folder)
        record["run"] = run.id
        record["resumed"] = mode == "resume"
        _write_record(folder, record)
        if mode == "analyse":
            record["state"] = "finished"
        else:
            try:
                trainer = training.trainer_for(run, cfg, progress=None)  # the model's trainer
                result = trainer.train(resume=mode == "resume")
                record["state"] = result.state
                record["error"] = run.status().get("error")
            except Exception as exc:  # the run's status.json already says failed
                record["state"] = "failed"
                record["error"] = f"{type(exc).__name__}: {exc}"
        record["train_seconds"] = round(time.perf_counter() - t0, 3)
        report = None
        if record["state"] == "finished":
            t1 = time.perf_counter()
            try:
                report = analysis.analyze(
                    run,
                    full=bool(task.get("full_hessian")),
                    full_params=task.get("full_params", "weights"),
                )
            except Exception as exc:  # a finished run stays finished; say why it has no analysis
                record["analysis_error"] = f"{type(exc).__name__}: {exc}"
            record["analysis_seconds"] = round(time.perf_counter() - t1, 3)
        record["row"] = member_row(cfg, run.metrics()[-1:], report)
        if report is not None:
            with contextlib.suppress(Exception):  # an extra column; never fails the member
                record["row"]["gamma_diag"] = _output_diagonal(run)
    except Exception as exc:  # bad task or unreadable run folder: still a record, never a crash
        record["state"] = "failed"
        record["error"] = record["error"] or f"{type(exc).__name__}: {exc}"
    record["finished_at"] = round(time.time(), 3)
    record["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    _write_record(folder, record)
    return record


def _output_diagonal(run: Any) -> list[float] | None:
    """Each class's own output scale: the diagonal of the K × K output class means at the last
    checkpoint (their mean is ``gamma_measured``). Shows partially collapsed solutions, where
    some classes sit at γ and others at 0."""
    import torch

    from dufm_core import collapse
    from dufm_core.store import load_checkpoint

    step = run.latest_checkpoint()
    if step is None:
        return None
    ck = load_checkpoint(run.checkpoint_path(step))
    with torch.no_grad():
        Z = ck.model().double()
    M = collapse.class_means(Z.T, ck.labels, ck.config.K)
    return [float(v) for v in torch.diagonal(M)]


# --------------------------------------------------------------------------- one summary row
def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _mean(xs: Iterable[Any]) -> float | None:
    vals = [v for v in (_num(x) for x in xs) if v is not None]
    return sum(vals) / len(vals) if vals else None


def _max(xs: Iterable[Any]) -> float | None:
    vals = [v for v in (_num(x) for x in xs) if v is not None]
    return max(vals) if vals else None


def member_row(
    cfg: RunConfig, last_metrics: Sequence[Mapping[str, Any]], report: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The measured and predicted quantities of one member for ``summary.csv``.

    Per layer l: ``outlier_l{l}`` (top fit-Hessian eigenvalue), ``outlier_pred_l{l}``,
    ``outlier_count_l{l}`` (the report's gap rule; 0 when the top eigenvalue is below
    ``ZERO_HESSIAN``, i.e. the Hessian vanishes), ``outlier_ratio_l{l}`` (max/min of the top K²),
    ``f_mean_l{l}`` (mean f_cc'), ``nc1_l{l}``..``nc3_l{l}``; and their summaries over layers.
    With a full Hessian: the measured K² outliers split into the top K(K−1)/2 (predicted at
    GN + ρ) and the next K(K+1)/2 (GN − ρ), beside the sum of the layer-wise outliers.
    """
    from dufm_core import theory

    K, L = cfg.K, cfg.depth
    K2 = K * K
    row: dict[str, Any] = {}
    last = last_metrics[-1] if last_metrics else {}
    row["steps_done"] = last.get("step")
    row["final_loss"] = _num(last.get("loss"))
    row["gamma_measured"] = _num(last.get("gamma_measured"))
    equal = len(set(cfg.lam_ws)) == 1 and cfg.lam_ws[0] == cfg.lam_h
    positive = min([*cfg.lam_ws, cfg.lam_h]) > 0
    pred = (
        theory.predict(K, cfg.n, cfg.lam_ws, cfg.lam_h) if cfg.loss == "mse" and positive else None
    )
    row["gamma_predicted"] = pred.gamma if pred else None
    row["loss_predicted"] = pred.loss if pred and cfg.activation == "linear" else None
    lam_c = theory.lambda_crit(K, cfg.n, L)
    row["lambda_crit"] = lam_c
    row["lam_over_crit"] = cfg.lam_h / lam_c if equal else None
    row["critical_scale"] = theory.critical_scale(K, cfg.n, cfg.lam_ws, cfg.lam_h) if pred else None
    row["nontrivial"] = pred.nontrivial if pred else None
    if report is None:
        return row
    row["final_loss"] = _num(report["loss"]["total"])
    row["gamma_measured"] = _num(report.get("gamma_measured", row["gamma_measured"]))
    layers = report.get("layers", [])
    tops, counts = [], []
    for lay in layers:
        l = lay["layer"]
        top = lay.get("hessian_top") or []
        t1 = _num(top[0]) if top else None
        count = int(lay.get("outlier_count") or 0)
        if t1 is None or abs(t1) < ZERO_HESSIAN:
            count = 0
        row[f"outlier_l{l}"] = t1
        row[f"outlier_pred_l{l}"] = _num(lay.get("hessian_predicted"))
        row[f"outlier_count_l{l}"] = count
        row[f"outlier_ratio_l{l}"] = _num(lay.get("outlier_ratio"))
        row[f"f_mean_l{l}"] = _num(lay.get("alignment_f_mean"))
        for nc in ("nc1", "nc2", "nc3"):
            row[f"{nc}_l{l}"] = _num(lay.get(nc))
        tops.append(_mean(top[:K2]) if len(top) >= K2 else t1)
        counts.append(count)
    row["outlier_count_min"] = min(counts) if counts else None
    row["outlier_count_max"] = max(counts) if counts else None
    row["outlier_ratio_max"] = _max(row.get(f"outlier_ratio_l{l}") for l in range(1, L + 1))
    row["f_mean"] = _mean(row.get(f"f_mean_l{l}") for l in range(1, L + 1))
    for nc in ("nc1", "nc2", "nc3"):
        row[f"{nc}_max"] = _max(row.get(f"{nc}_l{l}") for l in range(1, L + 1))
    row["layer_sum_measured"] = sum(t for t in tops if t is not None) if tops else None
    row["layer_sum_predicted"] = pred.full_gn_outlier if pred else None
    full = report.get("full_hessian")
    if full and full.get("params") == "weights":
        top = [v for v in (_num(x) for x in full.get("top", [])) if v is not None]
        n_plus = K * (K - 1) // 2
        row["full_top"] = top[0] if top else None
        row["full_outlier_count"] = full.get("outlier_count")
        if len(top) >= K2:
            row["full_plus_measured"] = _mean(top[:n_plus])
            row["full_minus_measured"] = _mean(top[n_plus:K2])
            row["rho_measured"] = (row["full_plus_measured"] - row["full_minus_measured"]) / 2
        if pred and pred.nontrivial:
            row["full_plus_predicted"] = pred.full_outliers[0]
            row["full_minus_predicted"] = pred.full_outliers[-1]
            row["rho_predicted"] = pred.rho
        row["full_seconds"] = _num(full.get("seconds"))
    return row


# --------------------------------------------------------------------------- the table
def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def summary_rows(folder: str | Path) -> list[dict[str, Any]]:
    """One dict per member of the sweep's current spec, in grid order (members that have not
    run yet have state ``pending``). Reads the records; cheap enough to call on every page load.
    """
    from dufm_core.store import Run

    folder = Path(folder)
    man = manifest(folder)
    runs_root = runs_root_of(folder)
    axes = man["axes"]
    out = []
    for m in man["members"]:
        rec = read_record(folder, m["key"]) or {}
        row: dict[str, Any] = {"member": m["index"], "key": m["key"]}
        for axis in axes:
            row[axis] = m["values"].get(axis)
        for col in CONFIG_COLUMNS:
            if col not in row:
                row[col] = m["config"].get(col)
        state = rec.get("state", "pending")
        step, total = 0, m["config"].get("steps")
        if rec.get("run"):
            status = Run(runs_root / rec["run"]).status()
            step = status.get("step") or 0
            if state == "running":  # the run's own status is fresher (and knows interrupted)
                state = status.get("state", state)
                if state == "queued":
                    state = "running"
                elif state == "finished":  # trained; the worker is analysing it now
                    state = "analysing"
        row.update(
            run=rec.get("run"),
            state=state,
            step=step,
            total_steps=total,
            error=rec.get("error") or rec.get("analysis_error"),
            train_seconds=rec.get("train_seconds"),
            analysis_seconds=rec.get("analysis_seconds"),
            host=rec.get("host"),
        )
        row.update(rec.get("row") or {})
        out.append(row)
    return out


def progress_table(folder: str | Path) -> list[dict[str, Any]]:
    """The monitor's table: per member its grid values, state, training progress (0..1), the
    headline numbers once it has them, and its run id or error."""
    axes = manifest(folder)["axes"]
    cols = [
        "member",
        *axes,
        "state",
        "step",
        "total_steps",
        "final_loss",
        "gamma_measured",
        "gamma_predicted",
        "outlier_count_max",
        "error",
        "run",
    ]
    out = []
    for row in summary_rows(folder):
        entry = {c: row.get(c) for c in cols}
        total = row.get("total_steps") or 0
        entry["progress"] = min(1.0, (row.get("step") or 0) / total) if total else 0.0
        out.append(entry)
    return out


RESULT_COLUMNS = (
    "steps_done",
    "final_loss",
    "loss_predicted",
    "gamma_measured",
    "gamma_predicted",
    "gamma_diag",
    "lambda_crit",
    "lam_over_crit",
    "critical_scale",
    "nontrivial",
)
LAYER_COLUMNS = (
    "outlier_l{l}",
    "outlier_pred_l{l}",
    "outlier_count_l{l}",
    "outlier_ratio_l{l}",
    "f_mean_l{l}",
    "nc1_l{l}",
    "nc2_l{l}",
    "nc3_l{l}",
)
OVER_LAYER_COLUMNS = (
    "outlier_count_min",
    "outlier_count_max",
    "outlier_ratio_max",
    "f_mean",
    "nc1_max",
    "nc2_max",
    "nc3_max",
    "layer_sum_measured",
    "layer_sum_predicted",
)
FULL_COLUMNS = (
    "full_top",
    "full_outlier_count",
    "full_plus_measured",
    "full_plus_predicted",
    "full_minus_measured",
    "full_minus_predicted",
    "rho_measured",
    "rho_predicted",
    "full_seconds",
)


def summary_columns(folder: str | Path, rows: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """The columns of ``summary.csv``, the same whatever state the members are in (a sweep
    whose members all failed still has every column of docs/sweeps.md §3, empty): position and
    key, the axes, the config, state and timings, the results, per layer up to the deepest
    member, over layers, the full Hessian (when the spec asks for it), then any other column a
    row has (first-seen order)."""
    man = manifest(folder)
    depth = max((int(m["config"].get("depth") or 0) for m in man["members"]), default=0)
    columns = [
        "member",
        "key",
        *man["axes"],
        *CONFIG_COLUMNS,
        "run",
        "state",
        "step",
        "total_steps",
        "error",
        "train_seconds",
        "analysis_seconds",
        "host",
        *RESULT_COLUMNS,
        *(c.format(l=l) for l in range(1, depth + 1) for c in LAYER_COLUMNS),
        *OVER_LAYER_COLUMNS,
        *(FULL_COLUMNS if man.get("full_hessian") else ()),
    ]
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    return list(dict.fromkeys(columns))  # an axis that is also a config column: once


def write_summary(folder: str | Path, rows: Sequence[Mapping[str, Any]] | None = None) -> Path:
    """Write ``summary.csv`` (atomically): one row per member, :func:`summary_columns`."""
    folder = Path(folder)
    rows = summary_rows(folder) if rows is None else rows
    columns = summary_columns(folder, rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    path = folder / "summary.csv"
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def read_summary(folder: str | Path) -> list[dict[str, Any]]:
    """``summary.csv`` back as dicts with numbers parsed (empty cells become None)."""
    path = Path(folder) / "summary.csv"
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as fh:
        for raw in csv.DictReader(fh):
            out.append({k: _parse_cell(v) for k, v in raw.items()})
    return out


def _parse_cell(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


# --------------------------------------------------------------------------- the driver
def driver_status(folder: str | Path) -> dict[str, Any]:
    """``driver.json`` with ``state`` ``interrupted`` when its process on this host is gone."""
    try:
        status = read_json(Path(folder) / "driver.json")
    except (OSError, ValueError):
        return {"state": "never started"}
    if (
        status.get("state") in ("running", "starting")
        and status.get("host") == socket.gethostname()
        and not pid_alive(int(status.get("pid") or 0))
    ):
        status["state"] = "interrupted"
    return status


class SweepRunError(RuntimeError):
    """The sweep started (its folder exists) but its executor failed as a whole, e.g. a Ray
    cluster that cannot be reached; ``folder`` is the sweep folder, whose ``driver.json`` says
    ``failed``. Single members never raise this: their failures are their records."""

    def __init__(self, folder: Path, message: str) -> None:
        super().__init__(message)
        self.folder = folder


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: the folder, state counts, members skipped and run."""

    folder: Path
    counts: dict[str, int]
    skipped: int
    ran: int
    seconds: float
    cancelled: bool = False


def pending_members(spec: SweepSpec, folder: Path) -> tuple[list[Member], int]:
    """(members to run, number skipped because they already ended). A finished member whose
    analysis failed is run again: :func:`execute_member` then only analyses it."""
    from dufm_core.store import Run

    runs_root = runs_root_of(folder)
    todo, skipped = [], 0
    for m in spec.members():
        rec = read_record(folder, m.key)
        if (
            rec
            and rec.get("state") in DONE_STATES
            and rec.get("run")
            and (runs_root / rec["run"] / "config.json").is_file()
            and Run(runs_root / rec["run"]).status().get("state") in DONE_STATES
            and not rec.get("analysis_error")  # else: analysed again (not retrained)
        ):
            skipped += 1
        else:
            todo.append(m)
    return todo, skipped


def run_sweep(
    spec: SweepSpec,
    runs_dir: str | Path | None = None,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every member of ``spec`` that has not ended yet and write ``summary.csv``.

    ``executor`` is ``local`` (a pool of ``jobs`` worker processes, default the number of cores)
    or ``ray`` (one Ray task per member; ``address`` joins an existing cluster, else a local Ray
    instance with ``jobs`` CPUs starts). The runs folder must be reachable, at the same path, by
    every worker. SIGTERM cancels: members still waiting never start, running ones checkpoint.
    """
    from dufm_core.process import executors

    t0 = time.perf_counter()
    spec.members()  # validate all before anything is written
    root = (Path(runs_dir) if runs_dir is not None else default_runs_dir()).resolve()
    ex = executors.make_executor(
        executor, jobs=jobs, address=address, cpus=spec.cpus, gpus=spec.gpus
    )
    how = ex.describe()  # a local pool that cannot start its workers says so here
    running = driver_status(sweep_dir(spec.name, root))
    if running.get("state") in ("running", "starting") and running.get("pid") != os.getpid():
        raise RuntimeError(
            f"sweep {spec.name} is already being run by pid {running.get('pid')} on "
            f"{running.get('host')}; cancel it first (or, if that process is gone, delete "
            f"{sweep_dir(spec.name, root) / 'driver.json'})"
        )
    folder = prepare(spec, root)
    todo, skipped = pending_members(spec, folder)
    say = progress or (lambda _msg: None)
    say(
        f"sweep {spec.name}: {len(spec.members())} members, {skipped} already ended, "
        f"{len(todo)} to run with the {how}"
    )
    driver = {
        "state": "running",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "executor": executor,
        "executor_detail": how,
        "jobs": ex.slots,
        "address": address,
        "started_at": round(time.time(), 3),
        "finished_at": None,
        "members": len(spec.members()),
        "to_run": len(todo),
    }
    atomic_write_json(folder / "driver.json", driver)
    tasks = [
        {
            "key": m.key,
            "index": m.index,
            "values": m.values,
            "config": m.config.to_dict(),
            "runs_dir": str(root),
            "sweep_dir": str(folder),
            "full_hessian": spec.full_hessian,
            "full_params": spec.full_params,
        }
        for m in todo
    ]
    done = 0
    stop = {"flag": False}

    def on_result(
        task: Mapping[str, Any], record: Mapping[str, Any] | None, error: str | None
    ) -> None:
        nonlocal done
        done += 1
        if record is None:  # the worker died: record it from here
            rec = read_record(folder, task["key"]) or {
                "key": task["key"],
                "index": task["index"],
                "values": task["values"],
                "run": None,
            }
            rec.update(
                state="cancelled" if stop["flag"] else "failed",
                error=error,
                finished_at=round(time.time(), 3),
            )
            _write_record(folder, rec)
            record = rec
        say(
            f"[{done}/{len(tasks)}] member {record['index']} {record['state']}"
            + (f": {record['error']}" if record.get("error") else "")
        )
        with contextlib.suppress(OSError, ValueError):
            write_summary(folder)

    def on_signal(signum: int, _frame: Any) -> None:
        stop["flag"] = True
        with contextlib.suppress(OSError):
            (folder / CANCEL_FILE).touch()
        ex.cancel()

    def on_cancel(task: Mapping[str, Any]) -> None:
        """SIGTERM a running member's worker (this host): it checkpoints, ends `cancelled`."""
        from dufm_core.process import jobs
        from dufm_core.store import open_run

        rec = read_record(folder, task["key"])
        if rec and rec.get("run") and rec.get("state") == "running":
            with contextlib.suppress(OSError, ValueError):
                jobs.cancel(open_run(root / rec["run"]))

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread: no signal cancellation
            old[sig] = signal.signal(sig, on_signal)
    error: str | None = None
    try:
        ex.run(execute_member, tasks, on_result, on_cancel)
    except Exception as exc:  # the executor itself broke (Ray unreachable, ...): not a member
        error = f"{type(exc).__name__}: {exc}"
        raise SweepRunError(folder, f"sweep {spec.name}: the executor failed: {error}") from exc
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        rows = summary_rows(folder)
        write_summary(folder, rows)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        state = "failed" if error else "cancelled" if stop["flag"] else "finished"
        driver.update(
            state=state, error=error, finished_at=round(time.time(), 3), counts=counts
        )
        atomic_write_json(folder / "driver.json", driver)
    seconds = time.perf_counter() - t0
    say(
        f"sweep {spec.name} {driver['state']} in {seconds:.1f} s: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    return SweepResult(
        folder=folder,
        counts=counts,
        skipped=skipped,
        ran=len(tasks),
        seconds=seconds,
        cancelled=stop["flag"],
    )


# --------------------------------------------------------------------------- background, listing
def launch_sweep(
    spec: SweepSpec,
    runs_dir: str | Path | None = None,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
) -> Path:
    """Start ``python -m dufm_core sweep`` for ``spec`` as a detached process (the dashboard's
    way: the page stays responsive, and the sweep survives a reload); return the sweep folder.
    The members are validated here first, so a bad spec fails before anything starts."""
    root = (Path(runs_dir) if runs_dir is not None else default_runs_dir()).resolve()
    spec.members()  # validate every member first
    from dufm_core.process import executors

    if executor == "ray" and (missing := executors.ray_missing()):
        raise RuntimeError(missing)  # before any folder is written
    status = driver_status(sweep_dir(spec.name, root))  # before touching the folder: a running
    if status.get("state") in ("running", "starting"):  # sweep's spec and cancel file stay
        raise RuntimeError(f"sweep {spec.name} is already running (pid {status.get('pid')})")
    folder = prepare(spec, root)
    args = ["sweep", str(folder / "spec.toml"), "--runs-dir", str(root), "--executor", executor]
    if jobs:
        args += ["--jobs", str(jobs)]
    if address:
        args += ["--address", address]
    from dufm_core.process.env import cli_command, spawn_detached

    proc = spawn_detached(cli_command(*args), folder / "log.txt")
    # reap the driver when it ends (the dashboard's server lives long: no zombies)
    threading.Thread(target=proc.wait, daemon=True).start()
    atomic_write_json(
        folder / "driver.json",
        {
            "state": "starting",
            "pid": proc.pid,
            "host": socket.gethostname(),
            "executor": executor,
            "started_at": round(time.time(), 3),
        },
    )
    return folder


def cancel_sweep(folder: str | Path) -> str:
    """Ask the sweep's driver to stop (SIGTERM): waiting members never start and running ones
    checkpoint and end `cancelled`; a later run of the same spec resumes them."""
    status = driver_status(folder)
    if status.get("state") not in ("running", "starting"):
        return f"nothing to cancel (driver {status.get('state')})"
    if status.get("host") != socket.gethostname():
        return f"the driver runs on another host ({status.get('host')})"
    try:
        os.kill(int(status["pid"]), signal.SIGTERM)
    except (ProcessLookupError, KeyError, ValueError):
        return "the driver had already exited"
    return f"sent SIGTERM to the sweep driver {status['pid']}"


def list_sweeps(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every sweep folder under ``<runs>/sweeps`` (newest first): name, path, member count,
    state counts and driver state."""
    root = sweeps_root(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in root.iterdir():
        if not (folder / "sweep.json").is_file():
            continue
        try:
            rows = summary_rows(folder)
        except (OSError, ValueError, KeyError):
            continue
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        out.append(
            {
                "name": folder.name,
                "path": folder,
                "members": len(rows),
                "counts": counts,
                "driver": driver_status(folder).get("state"),
                "updated_at": (folder / "sweep.json").stat().st_mtime,
            }
        )
    return sorted(out, key=lambda s: -s["updated_at"])


def presets() -> dict[str, Path]:
    """The example specs shipped in ``examples/sweeps`` by name (file stem)."""
    if not EXAMPLES_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(EXAMPLES_DIR.glob("*.toml"))}


# --------------------------------------------------------------------------- study data
def studies(rows: Sequence[Mapping[str, Any]], axes: Sequence[str]) -> list[str]:
    """Which studies a sweep's table supports: ``phase`` (a λ axis), ``depth``, ``width``,
    ``sensitivity`` (ReLU or CE members over λ)."""
    out = []
    lam_axes = {"lam", "lam_over_crit", "lam_w", "lam_h"}
    if lam_axes & set(axes):
        if any(r.get("loss") == "mse" and r.get("activation") == "linear" for r in rows):
            out.append("phase")
        if any(r.get("activation") == "relu" or r.get("loss") == "ce" for r in rows):
            out.append("sensitivity")
    if "depth" in axes:
        out.append("depth")
    if "width" in axes:
        out.append("width")
    return out


def phase_curves(rows: Sequence[Mapping[str, Any]], points: int = 400) -> list[dict[str, Any]]:
    """Theory curves for the phase diagram, one per (K, n, L) among the linear MSE rows:
    λ/λ_crit on a log grid, γ(λ) (jumping from (L−1)/L to 0 at 1) and the predicted outlier
    count (K² below λ_crit, 0 above)."""
    from dufm_core import theory

    groups = sorted(
        {
            (int(r["K"]), int(r["n"]), int(r["depth"]))
            for r in rows
            if r.get("loss") == "mse"
            and r.get("activation") == "linear"
            and r.get("lam_over_crit") is not None
        }
    )
    ratios = [r["lam_over_crit"] for r in rows if r.get("lam_over_crit")]
    if not groups or not ratios:
        return []
    lo, hi = math.log10(min(ratios)) - 0.3, math.log10(max(ratios)) + 0.3
    out = []
    for K, n, L in groups:
        lam_c = theory.lambda_crit(K, n, L)
        xs = [10 ** (lo + (hi - lo) * i / (points - 1)) for i in range(points)]
        xs = sorted({*xs, 1.0 - 1e-9, 1.0 + 1e-9})
        gammas = [theory.gamma(K, n, x * lam_c, x * lam_c, L) for x in xs]
        out.append(
            {
                "K": K,
                "n": n,
                "L": L,
                "lambda_crit": lam_c,
                "x": xs,
                "gamma": gammas,
                "count": [K * K if g > 0 else 0 for g in gammas],
                "gamma_crit": (L - 1) / L,
            }
        )
    return out


def main_progress(msg: str) -> None:
    """Progress lines of the CLI driver (standard error)."""
    print(msg, file=sys.stderr, flush=True)
