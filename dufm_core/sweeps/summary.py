"""The tables of sweeps: one row per member (``summary.csv``, the monitor's progress table) and
one entry per sweep (the listing of the Sweeps page).

Rows are read from the member records (:mod:`dufm_core.sweeps.folder`) and the member runs'
``status.json``, so they are fresh on every call and cheap enough for every page load. The
columns of ``summary.csv`` (docs/sweeps.md §3) are the same whatever state the members are in.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dufm_core.store import Run, atomic_write_bytes
from dufm_core.sweeps.folder import (
    driver_status,
    manifest,
    read_record,
    runs_root_of,
    sweeps_root,
)

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


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def summary_rows(folder: str | Path) -> list[dict[str, Any]]:
    """One dict per member of the sweep's current spec, in grid order (members that have not
    run yet have state ``pending``). Reads the records; cheap enough to call on every page load.
    """
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


def state_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """{state: number of members} of a sweep's rows."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


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
        out.append(
            {
                "name": folder.name,
                "path": folder,
                "members": len(rows),
                "counts": state_counts(rows),
                "driver": driver_status(folder).get("state"),
                "updated_at": (folder / "sweep.json").stat().st_mtime,
            }
        )
    return sorted(out, key=lambda s: -s["updated_at"])
