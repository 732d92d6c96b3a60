"""The run comparer's data (the Compare page, issue #13 item 2): which runs to show, the config
diff, every series the chosen runs have (logged in metrics.jsonl or analysed in
``analysis/series.json``), the closed-form reference of a series where the theory applies to a
run, short legend names, and runs that differ only by ``seed`` grouped into mean ± spread bands.

Everything here is plain data in, plain data out (no Streamlit), so that it is unit-tested on
its own; ``pages/compare.py`` places it and ``ui/figures/compare.py`` draws it.

A series is named by a key: a scalar metric by its own name (``loss``, ``gamma_measured``), a
per-layer value as ``name[l]`` with l from 1 (``nc1[2]``: NC1 of H_2; ``sv_max[l]``: the largest
singular value of W_l), an analysed per-checkpoint value likewise (``hessian_top1[l]``,
``outlier_ratio[l]``, ...). :func:`describe` gives a key's words for the picker.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dufm_core import kinds
from dufm_core.config import ConfigError, RunConfig
from dufm_core.run_schema import as_number
from dufm_core.store import RunSummary, open_run, read_json
from ui.figures.compare import CompareLine

Curve = tuple[list[int], list[float | None]]  # (steps, values; None where a step lacks one)

IGNORED_IN_GROUPS = ("seed", "name")  # fields that do not split runs into different curves
NOT_SERIES = ("step", "epoch")  # numeric metrics keys that are an axis, not a series
MAX_LEGEND = 40  # characters of a legend name
MAX_DIFF_FIELDS = 3  # differing config values written into a legend name

# the words of each series (before its [l]); the order of the picker
SERIES_WORDS = {
    "loss": "loss (fit + reg)",
    "fit": "fit part of the loss",
    "reg": "regularisation part of the loss",
    "gamma_measured": "γ measured (mean diagonal of the output class means)",
    "grad_norm": "gradient norm",
    "train_acc": "training accuracy (eval mode)",
    "test_acc": "test accuracy (eval mode)",
    "batch_loss": "batch loss (train mode)",
    "lr": "learning rate",
    "time": "wall time (s)",
    "nc1": "NC1 of H_l (l = L+1: the output)",
    "nc1_fro": "NC1, Frobenius form, of H_l",
    "nc1_ratio": "NC1 ratio of H_l",
    "nc2": "NC2 of H_l",
    "nc3": "NC3 of W_l",
    "sv_max": "largest singular value of W_l",
    "sv_min_top_k": "K-th singular value of W_l",
    "hessian_top1": "analysed: largest eigenvalue of W_l's fit Hessian",
    "hessian_topK2": "analysed: K²-th eigenvalue of W_l's fit Hessian",
    "hessian_next": "analysed: (K²+1)-th eigenvalue of W_l's fit Hessian",
    "outlier_ratio": "analysed: max/min of the top K² eigenvalues of W_l",
    "outlier_count": "analysed: outliers counted by the largest log-gap, W_l",
    "alignment_f_mean": "analysed: mean f_cc' of W_l",
    "subspace_capture_mean": "analysed: mean subspace capture of W_l",
    "gradient_inside_fraction": "analysed: gradient's share inside the outlier space, W_l",
    "effective_rank": "analysed: effective rank of W_l",
    "hessian_effective_rank": "analysed: effective rank of W_l's Hessian",
    "full_top1": "analysed: largest eigenvalue of the full fit Hessian",
    "full_topK2": "analysed: K²-th eigenvalue of the full fit Hessian",
}
_KEY = re.compile(r"^(.*?)(?:\[(\d+)\])?$")


@dataclass(frozen=True)
class RunData:
    """What the comparer knows of one run: its id, config (a dict as in config.json), state,
    metrics rows and ``analysis/series.json`` (None when it has none)."""

    id: str
    config: dict[str, Any]
    state: str
    metrics: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Any] | None = None


# --------------------------------------------------------------------------- which runs
def parse_ids(value: str | None) -> list[str]:
    """The run ids of a ``?runs=id1,id2`` parameter, in order, without blanks or repeats."""
    out: list[str] = []
    for part in (value or "").split(","):
        if (rid := part.strip()) and rid not in out:
            out.append(rid)
    return out


def missing_message(missing: Sequence[str], shown: Callable[[str], str] = str) -> str:
    """The one line for a link that names runs the runs folder lacks (``shown`` makes a
    visitor's value safe to repeat; at most three are named)."""
    names = ", ".join(f"`{shown(i)}`" for i in missing[:3])
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    verb = "was" if len(missing) == 1 else "were"
    return (f"Run{'s' if len(missing) > 1 else ''} {names}{more} {verb} not found in the runs "
            "folder; pick runs below.")


def default_ids(rows: Sequence[RunSummary], has_metrics: Mapping[str, bool], most: int = 2
                ) -> list[str]:
    """The newest ``most`` runs of ``rows`` (newest first, as the runs table lists them) that
    have logged metrics: never a queued run or one with nothing to draw."""
    picked = [r.id for r in rows if r.state != "queued" and has_metrics.get(r.id)]
    return picked[:most]


# --------------------------------------------------------------------------- config diff
def _shown_value(value: Any) -> str:
    """A config value as text: numbers in short form, lists with their items so."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.12g}"  # short, yet values that differ show different
    if isinstance(value, list):
        return "[" + ", ".join(_shown_value(v) for v in value) + "]"
    return str(value)


def _same(value: Any) -> str:
    """A config value in a form where equal values, and only they, are equal (exact numbers)."""
    return json.dumps(value, sort_keys=True, default=repr)


def differing_fields(configs: Mapping[str, Mapping[str, Any]],
                     ignore: Iterable[str] = ()) -> list[str]:
    """The config fields whose values are not the same in every run (a field one run lacks
    differs), in the order the configs first list them; ``ignore`` left out."""
    skip = set(ignore)
    fields: list[str] = []
    for c in configs.values():
        fields += [k for k in c if k not in fields and k not in skip]
    out = []
    for f in fields:
        values = {_same(c[f]) if f in c else "" for c in configs.values()}
        if len(values) > 1:
            out.append(f)
    return out


def config_table(configs: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str],
                 show_all: bool = False) -> dict[str, list[str]]:
    """The config diff as table columns: ``field`` and one column per run (headed by its label
    in ``labels``), with only the differing fields unless ``show_all``. A field a run lacks
    shows as —."""
    diff = differing_fields(configs)
    if show_all:
        rows = []
        for c in configs.values():
            rows += [k for k in c if k not in rows]
    else:
        rows = diff
    table = {"field": list(rows)}
    for rid, c in configs.items():
        table[labels.get(rid, rid)] = [_shown_value(c[f]) if f in c else "—" for f in rows]
    return table


# --------------------------------------------------------------------------- legend names
def id_suffixes(ids: Sequence[str]) -> dict[str, str]:
    """Each id's shortest run of trailing ``-``-separated parts that no other id ends with
    (``…-K3-L3-d4e3`` → ``d4e3``); the whole id when none is shorter."""
    out = {}
    for rid in ids:
        parts = rid.split("-")
        for n in range(1, len(parts) + 1):
            tail = "-".join(parts[-n:])
            if not any(o != rid and (o == tail or o.endswith("-" + tail)) for o in ids):
                break
        out[rid] = tail
    return out


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_LEGEND else text[: MAX_LEGEND - 1] + "…"


def diff_text(config: Mapping[str, Any], fields: Sequence[str]) -> str:
    """``lam_w=0.001, seed=2``: the values of ``fields`` in ``config`` (at most
    MAX_DIFF_FIELDS; then ``…``)."""
    parts = [f"{f}={_shown_value(config.get(f))}" for f in fields[:MAX_DIFF_FIELDS]]
    return ", ".join(parts) + (", …" if len(fields) > MAX_DIFF_FIELDS else "")


def legend_names(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Short, distinct legend names of runs: the run's ``name`` where it has one that no other
    chosen run has; else the config values that differ between the runs (``lam_w=0.001,
    seed=2``) when they tell the runs apart; else the shortest unique suffix of the id."""
    ids = list(configs)
    names = {i: " ".join(str(configs[i].get("name") or "").split()) for i in ids}
    diff = differing_fields(configs, ignore=("name",))
    by_diff = {i: diff_text(configs[i], diff) for i in ids}
    suffix = id_suffixes(ids)
    out = {}
    for i in ids:
        if names[i] and list(names.values()).count(names[i]) == 1:
            out[i] = names[i]
        elif diff and list(by_diff.values()).count(by_diff[i]) == 1:
            out[i] = by_diff[i]
        else:
            out[i] = suffix[i]
    return {i: _short(v) for i, v in out.items()}


# --------------------------------------------------------------------------- series
def _layer_key(name: str, layer: int) -> str:
    return f"{name}[{layer}]"


def split_key(key: str) -> tuple[str, int | None]:
    """``nc1[2]`` → (``nc1``, 2); ``loss`` → (``loss``, None)."""
    m = _KEY.match(key)
    assert m is not None  # the pattern matches every string
    return m[1], int(m[2]) if m[2] else None


def _finite(value: Any) -> float | None:
    v = as_number(value)
    return float(v) if v is not None and math.isfinite(v) else None


def _add(out: dict[str, Curve], key: str, step: int, value: Any) -> None:
    steps, values = out.setdefault(key, ([], []))
    steps.append(step)
    values.append(_finite(value))


def metric_series(rows: Sequence[Mapping[str, Any]], K: int | None = None) -> dict[str, Curve]:
    """Every numeric series of metrics ``rows``: each scalar key, each per-layer list as
    ``name[l]`` (l from 1), and from the singular values ``sv`` the largest (``sv_max[l]``) and,
    given K, the K-th (``sv_min_top_k[l]``) of each W_l. A row that lacks a key leaves that
    series without the step; a series whose values are all missing is left out."""
    out: dict[str, Curve] = {}
    for row in rows:
        step = int(row["step"])
        for key, value in row.items():
            if key in NOT_SERIES:
                continue
            if key == "sv" and isinstance(value, list):
                for l, svs in enumerate(value, start=1):
                    nums = [v for v in (_finite(s) for s in _list(svs)) if v is not None]
                    _add(out, _layer_key("sv_max", l), step, max(nums) if nums else None)
                    if K is not None and K >= 1:
                        kth = sorted(nums, reverse=True)[K - 1] if len(nums) >= K else None
                        _add(out, _layer_key("sv_min_top_k", l), step, kth)
            elif isinstance(value, list):
                for l, v in enumerate(value, start=1):
                    if not isinstance(v, list):
                        _add(out, _layer_key(key, l), step, v)
            elif as_number(value) is not None:
                _add(out, key, step, value)
    return {k: c for k, c in out.items() if any(v is not None for v in c[1])}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in _list(value) if isinstance(v, Mapping)]


_ANALYSED = ("outlier_ratio", "outlier_count", "alignment_f_mean", "subspace_capture_mean",
             "gradient_inside_fraction", "effective_rank", "hessian_effective_rank")


def analysed_series(series: Mapping[str, Any] | None) -> dict[str, Curve]:
    """The per-checkpoint series of ``analysis/series.json``: per layer l the largest and the
    K²-th Hessian eigenvalue (``hessian_top1[l]``, ``hessian_topK2[l]``), the next one
    (``hessian_next[l]``), and the scalar measures (``outlier_ratio[l]``, ``alignment_f_mean[l]``,
    ``gradient_inside_fraction[l]``, …); the full Hessian's largest and K²-th eigenvalue where it
    was computed. Empty when there is none (NC1–3 come from the metrics, logged more often)."""
    out: dict[str, Curve] = {}
    if not isinstance(series, Mapping):
        return out
    K2 = (as_number(series.get("K")) or 0) ** 2
    for entry in _dicts(series.get("entries")):  # a damaged file: what cannot be read is left
        step = entry.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        for lay in _dicts(entry.get("layers")):
            l = lay.get("layer")
            if not isinstance(l, int) or isinstance(l, bool):
                continue
            top = [v for v in (_finite(t) for t in _list(lay.get("top"))) if v is not None]
            _add(out, _layer_key("hessian_top1", l), step, max(top) if top else None)
            _add(out, _layer_key("hessian_topK2", l), step,
                 min(top) if top and len(top) >= K2 else None)
            _add(out, _layer_key("hessian_next", l), step, lay.get("next"))
            for key in _ANALYSED:
                _add(out, _layer_key(key, l), step, lay.get(key))
        full = [v for v in (_finite(t) for t in _list(entry.get("full_top"))) if v is not None]
        if full:
            _add(out, "full_top1", step, max(full))
            _add(out, "full_topK2", step, min(full) if len(full) >= K2 else None)
    return {k: c for k, c in out.items() if any(v is not None for v in c[1])}


def run_series(run: RunData) -> dict[str, Curve]:
    """Every series of one run: its metrics' and its analysed ones."""
    K = as_number(run.config.get("K"))
    return {**metric_series(run.metrics, int(K) if K else None), **analysed_series(run.series)}


def _order(key: str) -> tuple[int, str, int]:
    name, layer = split_key(key)
    words = list(SERIES_WORDS)
    return (words.index(name) if name in words else len(words), name, layer or 0)


def available(all_series: Mapping[str, Mapping[str, Curve]]) -> list[str]:
    """The keys any of the runs has (``{run id: run_series}``), in the picker's order: the
    scalar metrics, per-layer metrics, analysed series (layers in number order)."""
    keys = {k for s in all_series.values() for k in s}
    return sorted(keys, key=_order)


def describe(key: str) -> str:
    """A series key with its words: ``nc1[2] · NC1 of H_l (l = L+1: the output)``."""
    name, _ = split_key(key)
    words = SERIES_WORDS.get(name)
    return f"{key} · {words}" if words else key


def title(key: str) -> str:
    """A chart title for series ``key``: its words, and the layer (``…, l = 2``)."""
    name, layer = split_key(key)
    words = SERIES_WORDS.get(name, name)
    return words[0].upper() + words[1:] + (f", l = {layer}" if layer is not None else "")


def positive_series(key: str) -> bool:
    """Whether a log y axis suits the series by default (losses, norms, eigenvalues, NC)."""
    name, _ = split_key(key)
    return name not in ("gamma_measured", "train_acc", "test_acc", "outlier_count", "time",
                        "alignment_f_mean", "subspace_capture_mean", "gradient_inside_fraction",
                        "effective_rank", "hessian_effective_rank", "lr", "sv_max",
                        "sv_min_top_k")


# --------------------------------------------------------------------------- references
def reference(config: Mapping[str, Any], key: str) -> float | None:
    """The closed-form value series ``key`` tends to, for a run of ``config``, or None where
    the theory does not give one for that run: the linear-MSE closed forms (every λ positive;
    not ReLU, whose trained runs need not reach the linear optimum; a real network's at
    λ_H,UFM = λ_H/N, its loss only without backbone weight decay; docs/theory.md §3–§4):
    the loss and its fit and reg parts, γ, σ_l of W_l, the K² equal layer outliers
    λ_W γ/(1−γ), max/min 1 of the top K², f_cc' and the gradient's share inside the outlier
    space 1, effective rank K, K² outliers."""
    if not config:  # an unreadable config.json: nothing to predict from (not the defaults)
        return None
    try:
        cfg = RunConfig.from_dict(dict(config))
        cfg.validate()  # a damaged or hand-edited config.json: no reference, not an error
        theory = kinds.predict_for(cfg)
        pred = theory.prediction() if cfg.activation != "relu" else None
    except (ConfigError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if pred is None:
        return None
    name, layer = split_key(key)
    if name in ("loss", "fit", "reg"):
        return None if cfg.lam_backbone > 0 else float(getattr(pred, name))
    per_layer = {"sv_max": pred.sigma, "sv_min_top_k": pred.sigma,
                 "hessian_top1": pred.layer_outlier, "hessian_topK2": pred.layer_outlier}
    if name in per_layer:
        values = per_layer[name]
        return float(values[layer - 1]) if layer and 1 <= layer <= len(values) else None
    if name == "gamma_measured":
        return float(pred.gamma)
    fixed = {"outlier_ratio": 1.0, "alignment_f_mean": 1.0,
             "subspace_capture_mean": 1.0, "gradient_inside_fraction": 1.0,
             "effective_rank": float(cfg.K), "outlier_count": float(cfg.K**2)}
    if name in fixed and pred.nontrivial:
        return float(fixed[name])
    return None


# --------------------------------------------------------------------------- seed groups
def seed_groups(configs: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """The runs as groups whose configs are equal but for ``seed`` (and ``name``), in the order
    of their first run; a run alone is a group of one."""
    groups: dict[str, list[str]] = {}
    for rid, c in configs.items():
        key = repr(sorted((k, _same(v)) for k, v in c.items() if k not in IGNORED_IN_GROUPS))
        groups.setdefault(key, []).append(rid)
    return list(groups.values())


@dataclass(frozen=True)
class Band:
    """Mean and spread of a series over the runs of a seed group, at the steps every run
    logged: ``lower``/``upper`` are min and max (``spread`` "min–max") or mean ∓ one standard
    deviation (population, ``spread`` "±1 std")."""

    steps: list[int]
    mean: list[float | None]
    lower: list[float | None]
    upper: list[float | None]
    spread: str
    runs: int


SPREADS = ("min–max", "±1 std")


def band(curves: Sequence[Curve], spread: str = SPREADS[0]) -> Band:
    """:class:`Band` of ``curves`` (one per run): at each step all of them have; a step where
    some run's value is missing uses the others'."""
    if spread not in SPREADS:
        raise ValueError(f"spread: {spread!r} is not one of {', '.join(SPREADS)}")
    common = set(curves[0][0]) if curves else set()
    for steps, _ in curves[1:]:
        common &= set(steps)
    at = [dict(zip(s, v, strict=True)) for s, v in curves]
    steps = sorted(common)
    mean: list[float | None] = []
    lower: list[float | None] = []
    upper: list[float | None] = []
    for step in steps:
        vals = [v for d in at if (v := d[step]) is not None]
        if not vals:
            mean.append(None)
            lower.append(None)
            upper.append(None)
            continue
        m = sum(vals) / len(vals)
        mean.append(m)
        if spread == SPREADS[0]:
            lower.append(min(vals))
            upper.append(max(vals))
        else:
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))
            lower.append(m - sd)
            upper.append(m + sd)
    return Band(steps, mean, lower, upper, spread, len(curves))


def group_names(configs: Mapping[str, Mapping[str, Any]], groups: Sequence[Sequence[str]]
                ) -> list[str]:
    """A legend name per seed group: the config values that differ between the groups (seed
    and name left out) or, when that does not tell them apart, the first run's legend name;
    ``· n seeds`` after a group of several runs."""
    heads = {g[0]: configs[g[0]] for g in groups}
    diff = differing_fields(heads, ignore=IGNORED_IN_GROUPS)
    single = legend_names(heads)
    out = []
    for g in groups:
        base = diff_text(configs[g[0]], diff) if diff else ("" if len(groups) == 1
                                                             else single[g[0]])
        count = f"{len(g)} seeds" if len(g) > 1 else ""
        out.append(_short(" · ".join(p for p in (base, count) if p) or single[g[0]]))
    return out


# --------------------------------------------------------------------------- assembly
def load_run(summary: RunSummary) -> RunData:
    """A row of the runs table as :class:`RunData`: its metrics and, when the run has one, its
    ``analysis/series.json`` (an unreadable one counts as none)."""
    run = open_run(summary.path)
    series = None
    path = run.analysis_dir / "series.json"
    if path.is_file():
        try:
            raw = read_json(path)
        except (OSError, ValueError):
            raw = None
        series = raw if isinstance(raw, dict) else None
    metrics = run.metrics() if summary.state != "queued" else []
    return RunData(summary.id, dict(summary.config), summary.state, metrics, series)


def has_metrics(summary: RunSummary) -> bool:
    """Whether the run has logged anything (a metrics.jsonl that is not empty): a cheap check
    for the default choice, that reads no rows."""
    try:
        return open_run(summary.path).metrics_path.stat().st_size > 0
    except OSError:
        return False


def checkpoints(summary: RunSummary) -> list[int]:
    """The steps of the run's checkpoints."""
    return open_run(summary.path).checkpoints()


def needs_series(run: RunData, checkpoints: Sequence[int]) -> bool:
    """Whether the run has checkpoints that its ``analysis/series.json`` does not cover."""
    covered = run.series.get("steps") if run.series is not None else None
    return bool(checkpoints) and covered != list(checkpoints)


def unique(names: Mapping[str, str]) -> dict[str, str]:
    """``names`` with a repeated name made distinct by `` (2)``, `` (3)``, … after it."""
    out: dict[str, str] = {}
    for key, name in names.items():
        shown, n = name, 1
        while shown in out.values():
            n += 1
            shown = f"{name} ({n})"
        out[key] = shown
    return out


def build_lines(runs: Mapping[str, RunData], key: str, grouped: bool, spread: str = SPREADS[0],
                members: bool = False, series: Mapping[str, Mapping[str, Curve]] | None = None,
                ) -> tuple[list[CompareLine], list[str]]:
    """The overlay of series ``key`` for ``runs`` (``{id: RunData}``, in legend order), and the
    ids of the runs that lack it. Ungrouped: one line per run, named by :func:`legend_names`.
    Grouped: runs equal but for the seed make one line, their mean, with a :func:`band`
    (``spread``) and, with ``members``, each run faint; a group of one stays a plain line.
    ``series``: the runs' :func:`run_series` where the caller has them already."""
    configs = {i: r.config for i, r in runs.items()}
    series = series if series is not None else {i: run_series(r) for i, r in runs.items()}
    curves = {i: c for i in runs if (c := series.get(i, {}).get(key)) is not None}
    missing = [i for i in runs if i not in curves]
    names = unique(legend_names(configs))
    lines: list[CompareLine] = []
    if not grouped:
        for i, (steps, values) in curves.items():
            lines.append(CompareLine(names[i], steps, values, reference=reference(configs[i], key)))
        return lines, missing
    groups = seed_groups(configs)
    titles = unique(dict(enumerate(group_names(configs, groups))))
    for g, ids in enumerate(groups):
        have = [i for i in ids if i in curves]
        if not have:
            continue
        ref = reference(configs[have[0]], key)
        if len(have) == 1:
            steps, values = curves[have[0]]
            lines.append(CompareLine(titles[g] if len(ids) > 1 else names[have[0]], steps,
                                     values, reference=ref))
            continue
        b = band([curves[i] for i in have], spread)
        shown = [(names[i], *curves[i]) for i in have] if members else []
        lines.append(CompareLine(f"{titles[g]}, mean", b.steps, b.mean, b.lower, b.upper, shown,
                                 ref, band_name=f"{titles[g]}, {spread}"))
    return lines, missing


def lines_csv(lines: Sequence[CompareLine], key: str) -> str:
    """The overlay's data as CSV, one row per curve and step: ``curve, step, <key>`` and, for a
    seed group, ``lower, upper`` of its band (empty where a curve has none), then the group's
    runs as curves of their own; the closed-form values as ``reference``."""
    out = [f"curve,step,{key},lower,upper,reference"]

    def cell(v: float | None) -> str:
        return "" if v is None else repr(float(v))

    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    for line in lines:
        lower = line.lower or [None] * len(line.steps)
        upper = line.upper or [None] * len(line.steps)
        for step, v, lo, hi in zip(line.steps, line.values, lower, upper, strict=True):
            out.append(f"{quoted(line.name)},{step},{cell(v)},{cell(lo)},{cell(hi)},"
                       f"{cell(line.reference)}")
        for name, steps, values in line.members:
            out += [f"{quoted(name)},{s},{cell(v)},,,{cell(line.reference)}"
                    for s, v in zip(steps, values, strict=True)]
    return "\n".join(out) + "\n"
