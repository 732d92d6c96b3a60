"""Downloads of the dashboard as plain tables: a run's ``metrics.jsonl`` as one tidy CSV.

A metrics row (docs/design.md §3, ``dufm_core/training/ufm.py`` ``compute_metrics`` and
``dufm_core/training/real.py``) mixes scalars with per-layer lists; a spreadsheet wants one value
per cell. :func:`tidy_metrics` spreads every list over columns of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd


def _flatten(name: str, value: Any, depth: int, out: dict[str, Any], index: dict) -> None:
    """Put ``value`` under ``name`` in ``out``; a list becomes ``name_l1``, ``name_l2``, … at
    the first level and ``name_1``, ``name_2``, … below it; a dict becomes ``name.key``.
    ``index`` records each column's sort key within its metric (the list positions)."""
    if isinstance(value, dict):
        for i, (k, v) in enumerate(value.items(), start=1):
            index[f"{name}.{k}"] = (*index.get(name, ()), i)
            _flatten(f"{name}.{k}", v, depth + 1, out, index)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value, start=1):
            col = f"{name}_l{i}" if depth == 0 else f"{name}_{i}"
            index[col] = (*index.get(name, ()), i)
            _flatten(col, v, depth + 1, out, index)
    else:
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # a non-finite value is an empty cell, like a missing one
        out[name] = value


def tidy_metrics(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per logged step and one column per value: the tidy form of ``metrics.jsonl``.

    Columns, in the order the metrics first appear (``step`` first):

    * a scalar keeps its name: ``step``, ``loss``, ``fit``, ``reg``, ``grad_norm``,
      ``gamma_measured``, ``time``; for real networks also ``epoch``, ``lr``, ``train_acc``,
      ``test_acc``, ``batch_loss``;
    * a per-layer list gets one column per layer, ``<name>_l<l>`` with l counted from 1:
      ``nc1_l1`` … ``nc1_l{L+1}`` (likewise ``nc1_fro``, ``nc1_ratio``, ``nc2``; these follow the
      feature index, H_l as W_l sees it, and the last one, l = L+1, is the output Z) and
      ``nc3_l1`` … ``nc3_lL`` (the weight index, W_l);
    * a list per layer (``sv``: the top K+1 singular values of W_l, descending) gets
      ``<name>_l<l>_<i>``: ``sv_l1_1`` is the largest singular value of W_1, ``sv_l1_2`` the next;
    * anything nested in a dict is ``<name>.<key>`` (none today; kept general so that a new
      metric still exports).

    Within a metric the columns are sorted by layer, then position. A row that lacks a value
    (a metric first logged later, a diverged step that logged only its loss, a test accuracy
    of None, a non-finite value) has an empty cell there: NaN in the frame, nothing between the
    commas of ``to_csv``.
    """
    flat: list[dict[str, Any]] = []
    first_seen: dict[str, int] = {}  # metric name -> order of first appearance
    sort_key: dict[str, tuple[int, ...]] = {}  # column -> positions within its metric
    metric_of: dict[str, str] = {}  # column -> the metric it comes from
    for row in rows:
        out: dict[str, Any] = {}
        for name, value in row.items():
            first_seen.setdefault(name, len(first_seen))
            cols: dict[str, Any] = {}
            _flatten(name, value, 0, cols, sort_key)
            for col in cols:
                metric_of.setdefault(col, name)
            out.update(cols)
        flat.append(out)
    if "step" in first_seen:
        first_seen["step"] = -1
    columns = sorted(metric_of, key=lambda c: (first_seen[metric_of[c]], sort_key.get(c, ())))
    return pd.DataFrame.from_records(flat, columns=columns)
