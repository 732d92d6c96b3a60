"""The reproduction checklist (issue #13, item 3; docs/design.md §4): the paper's headline
claims, each turned into a measured value beside its prediction, a tolerance and pass/fail.

A :class:`Claim` names the checklist run it needs (:data:`RUNS`: the paper's presets of
:mod:`dufm_core.presets`, named so that they are found again), says in a sentence or two what it
means, how to measure it from that run's analysis report (:mod:`dufm_core.reports`) and where on
the dashboard it can be seen. Every prediction comes from :mod:`dufm_core.theory` (the closed
forms of the run's own config); the one number stated by the paper, the case-A loss, is kept as
:data:`PAPER_CASE_A_LOSS` for the caption and checked against theory in the tests.

Checklist runs are ordinary runs of the store. :func:`find_runs` picks, for each entry of
:data:`RUNS`, the newest finished run whose config is exactly the checklist's (so a run trained
once is never trained again, and a user's run with other settings is never mistaken for one);
:func:`launch_missing` queues the missing ones as background workers
(:func:`dufm_core.process.jobs.launch`, as the Train page does); :func:`evaluate` analyses the
finished ones (``reports.analyze``, the full Hessian where a claim needs it; cached in the run
folder) and returns one :class:`Row` per claim. :func:`main` is ``python -m dufm_core
checklist``. No Streamlit here: the page is ``pages/checklist.py`` over ``ui/checklist.py``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dufm_core import theory
from dufm_core.config import ConfigError, RunConfig
from dufm_core.presets import PRESETS
from dufm_core.report_types import Report
from dufm_core.store import Run, default_runs_dir, iter_runs

__all__ = ["CLAIMS", "PAPER_CASE_A_LOSS", "RUNS", "ChecklistRun", "Claim", "Outcome", "Row",
           "evaluate", "find_runs", "format_table", "launch_missing", "main", "run_config"]

PAPER_CASE_A_LOSS = 0.1648378727
"""The closed-form loss of case A as the paper's reproduction states it (docs/theory.md §8)."""

RELU_LAYER = 4  # the layer the paper analyses in its ReLU experiment (docs/theory.md §5.2)
RELU_UNEQUAL = 0.1  # the ReLU outliers count as unequal when λ_1/λ_K exceeds 1 by more than this
FLOAT64_RTOL = 1e-6  # a float64 run trained ≥ 1e4 steps meets its closed forms to this (§8, I)

ACTIVE = ("queued", "running")


# --------------------------------------------------------------------------- the runs
@dataclass(frozen=True)
class ChecklistRun:
    """One run the checklist needs: a preset, possibly shortened, under its own run name."""

    key: str  # the preset's name (dufm_core.presets.PRESETS)
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why it differs from the preset, if it does

    @property
    def name(self) -> str:
        """The config's ``name``: its run folders are ``<time>-checklist-<preset>-<tag>``."""
        return f"checklist-{self.key}"


RUNS: dict[str, ChecklistRun] = {
    "paper-linear": ChecklistRun("paper-linear"),
    # the preset's 30 000 steps take ~40 s on a shared CPU; a third of them show the same
    # unequal outliers: λ_1/λ_K of layer 4 was 3.39 after 8 000 steps and 3.42 after 30 000
    "paper-relu": ChecklistRun(
        "paper-relu", {"steps": 10_000},
        "10 000 of the preset's 30 000 steps: the outliers' spread is already what it stays"),
}


def run_config(key: str) -> RunConfig:
    """The full config of checklist run ``key``: its preset, the overrides and the name."""
    spec = RUNS[key]
    return RunConfig.from_dict({**PRESETS[spec.key], **spec.overrides, "name": spec.name})


@dataclass
class RunState:
    """Where the checklist run of one preset stands in the runs folder."""

    key: str
    finished: Run | None = None  # the newest finished run with the checklist's config
    active: Run | None = None  # a queued or running one (training now)
    status: dict[str, Any] | None = None  # the active run's status.json
    ended: tuple[str, str, str] | None = None  # the newest run that ended otherwise: id, state, why


def _config_dict(run: Run) -> dict[str, Any] | None:
    try:
        return run.config().to_dict()
    except (OSError, ConfigError):
        return None


def find_runs(runs_dir: str | Path | None = None) -> dict[str, RunState]:
    """For each checklist run: the newest finished run whose config is the checklist's, and any
    queued or running one. Runs of other configs (even with the same name) are ignored."""
    wants = {key: run_config(key).to_dict() for key in RUNS}
    out = {key: RunState(key) for key in RUNS}
    for run in iter_runs(runs_dir):  # name order = creation order: later ones win
        have = _config_dict(run)
        for key, want in wants.items():
            if have != want:
                continue
            status = run.status()
            if status["state"] == "finished" and run.checkpoints():
                out[key].finished = run
            elif status["state"] in ACTIVE:
                out[key].active, out[key].status = run, status
            else:  # failed, cancelled, diverged, interrupted: said beside "not run yet"
                out[key].ended = (run.id, status["state"], status["error"] or "")
    return out


def missing(states: dict[str, RunState]) -> list[str]:
    """The checklist runs with neither a finished nor an active run."""
    return [k for k, s in states.items() if s.finished is None and s.active is None]


def launch_missing(runs_dir: str | Path | None = None,
                   launch: Callable[..., Run] | None = None) -> list[Run]:
    """Queue every missing checklist run as a background worker (``jobs.launch``); return them."""
    if launch is None:
        from dufm_core.process import jobs

        launch = jobs.launch
    return [launch(run_config(key), runs_dir) for key in missing(find_runs(runs_dir))]


# --------------------------------------------------------------------------- the claims
@dataclass(frozen=True)
class Outcome:
    """A claim measured on one report."""

    measured: float | None
    predicted: float | None
    ok: bool
    measured_text: str
    predicted_text: str
    detail: str = ""  # per-layer values, or why nothing could be measured
    layer: int | None = None  # the layer the link opens on (the worst one)


@dataclass(frozen=True)
class Claim:
    """One headline claim of the paper as a check on a checklist run."""

    id: str
    title: str
    caption: str  # what the claim means, in a sentence or two
    run: str  # key of RUNS
    tolerance_text: str
    measure: Callable[[Report, RunConfig], Outcome]
    page: str  # the dashboard page that shows it (pages/<page>.py)
    page_label: str
    full: bool = False  # needs the full Hessian (reports.analyze(run, full=True))


def _prediction(cfg: RunConfig) -> theory.Prediction:
    return theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)


def _g(x: float | None, digits: int = 10) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _near_one(x: float) -> str:
    """A value close to 1 as ``1 + 8.2e-15`` (its distance from 1 is what matters)."""
    if not math.isfinite(x):
        return "—"
    d = x - 1.0
    return "1" if d == 0 else f"1 {'+' if d > 0 else '−'} {abs(d):.1e}" if abs(d) < 1e-3 else _g(x)


def _worst(values: Sequence[float | None], bad: Callable[[float], float]) -> tuple[int, float]:
    """(layer 1..L, value) of the layer where ``bad(value)`` is largest; a missing value is
    the worst of all (it is reported as inf)."""
    scored = [(math.inf if v is None or not math.isfinite(v) else bad(v), i + 1,
               math.inf if v is None else v) for i, v in enumerate(values)]
    _, layer, value = max(scored)
    return layer, value


def _per_layer(values: Sequence[Any], fmt: Callable[[Any], str]) -> str:
    return "per layer: " + ", ".join(f"{i + 1}: {fmt(v)}" for i, v in enumerate(values))


def measure_loss(report: Report, cfg: RunConfig) -> Outcome:
    """Total loss of the last checkpoint against the closed form (γ solves the threshold)."""
    pred = _prediction(cfg).loss
    got = float((report.loss or {})["total"])
    ok = abs(got - pred) <= FLOAT64_RTOL * abs(pred)
    return Outcome(got, pred, ok, _g(got), _g(pred),
                   f"paper (case A): {PAPER_CASE_A_LOSS}; rel. error {abs(got - pred) / pred:.1e}")


def measure_outlier_ratio(report: Report, cfg: RunConfig) -> Outcome:
    """max/min of each layer's top K² fit-Hessian eigenvalues; the worst layer is reported."""
    ratios = [lay.outlier_ratio for lay in report.layers]
    layer, worst = _worst(ratios, lambda r: abs(r - 1.0))
    pred = 1.0  # every layer's K² outliers equal λ_{W_l}γ/(1−γ) (theory.md §4.1)
    ok = math.isfinite(worst) and abs(worst - pred) <= FLOAT64_RTOL
    return Outcome(worst, pred, ok, f"{_near_one(worst)} (layer {layer})", "1 at every layer",
                   _per_layer(ratios, lambda r: _near_one(r) if r is not None else "—"), layer)


def measure_alignment(report: Report, cfg: RunConfig) -> Outcome:
    """The smallest f_cc' over all pairs and layers (f = 1: μ_c^{(l+1)}μ_c'^{(l)ᵀ} lies in the
    top-K² eigenspace)."""
    mins = [min(min(row) for row in lay.alignment_f) if lay.alignment_f else None
            for lay in report.layers]
    layer, worst = _worst(mins, lambda f: abs(1.0 - f))
    ok = math.isfinite(worst) and abs(1.0 - worst) <= FLOAT64_RTOL
    return Outcome(worst, 1.0, ok, f"{_near_one(worst)} (min, layer {layer})", "1 for every c, c'",
                   _per_layer(mins, lambda f: _near_one(f) if f is not None else "—"), layer)


def measure_gradient(report: Report, cfg: RunConfig) -> Outcome:
    """The largest entry of |C − I/K| over the layers, C the gradient coefficient matrix."""
    want = _prediction(cfg).gradient_coefficients
    devs: list[float | None] = []
    for lay in report.layers:
        C = lay.gradient_coefficients
        devs.append(None if C is None else max(
            abs(C[a][b] - want[a][b]) for a in range(cfg.K) for b in range(cfg.K)))
    layer, worst = _worst(devs, abs)
    ok = math.isfinite(worst) and worst <= FLOAT64_RTOL
    return Outcome(worst, 0.0, ok, f"max |C − I/K| = {worst:.1e} (layer {layer})",
                   f"C = I/{cfg.K} (1/{cfg.K} on the diagonal)",
                   _per_layer(devs, lambda d: _g(d, 3)), layer)


def measure_gn_ranks(report: Report, cfg: RunConfig) -> Outcome:
    """The ranks of Papyan's within / cross / class Gauss–Newton parts at every layer."""
    want = list(_prediction(cfg).gn_split_ranks)
    ranks = [list((lay.gn_split or {}).get("ranks") or []) for lay in report.layers]
    bad = [i + 1 for i, r in enumerate(ranks) if r != want]
    shown = sorted({" / ".join(map(str, r)) for r in ranks})
    return Outcome(None, None, not bad,
                   ("; ".join(shown) + (" at every layer" if len(shown) == 1 else "")),
                   " / ".join(map(str, want)),
                   _per_layer(ranks, lambda r: "/".join(map(str, r))),
                   bad[0] if bad else min(3, cfg.depth))


def _groups(values: Sequence[float], rtol: float) -> list[tuple[float, int]]:
    """Values (descending) grouped where neighbours agree to ``rtol``: (first value, count)."""
    out: list[tuple[float, int]] = []
    for v in sorted(values, reverse=True):
        if out and abs(v - out[-1][0]) <= rtol * abs(out[-1][0]):
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((v, 1))
    return out


def _groups_text(groups: list[tuple[float, int]], digits: int = 10) -> str:
    return ", ".join(f"{c} × {_g(v, digits)}" for v, c in groups)


def measure_full_split(report: Report, cfg: RunConfig) -> Outcome:
    """The top K² eigenvalues of the full fit-Hessian over all weights against the exact split
    K(K−1)/2 at Σλ* + ρ and K(K+1)/2 at Σλ* − ρ."""
    K2 = cfg.K ** 2
    pred = list(_prediction(cfg).full_outliers)
    full = report.full_hessian
    if full is None or not full.top or full.params != "weights":
        return Outcome(None, None, False, "—", _groups_text(_groups(pred, 1e-9)),
                       "the report has no full Hessian over the weights")
    top = sorted(full.top, reverse=True)[:K2]
    err = max(abs(a - b) / abs(b) for a, b in zip(top, sorted(pred, reverse=True), strict=False))
    ok = len(top) == K2 and err <= FLOAT64_RTOL and bool(full.converged)
    return Outcome(err, 0.0, ok, _groups_text(_groups(top, FLOAT64_RTOL)),
                   _groups_text(_groups(pred, 1e-9)),
                   f"largest relative error {err:.1e}; ρ = {_g(_prediction(cfg).rho, 6)}")


def measure_sigma(report: Report, cfg: RunConfig) -> Outcome:
    """The K largest singular values of every W_l against σ_l = √(γ(1−γ)/(Kλ_{W_l})); the
    largest relative error is reported, and the (K+1)-th singular value in the detail."""
    sigma = _prediction(cfg).sigma
    errs: list[float | None] = []
    tails: list[float] = []
    for lay, s in zip(report.layers, sigma, strict=True):
        sv = sorted(lay.weight_singular_values or [], reverse=True)
        errs.append(max(abs(x - s) / s for x in sv[:cfg.K]) if len(sv) >= cfg.K else None)
        tails.append(sv[cfg.K] / s if len(sv) > cfg.K else 0.0)
    layer, worst = _worst(errs, abs)
    ok = math.isfinite(worst) and worst <= FLOAT64_RTOL
    top = sorted(report.layers[layer - 1].weight_singular_values or [], reverse=True)[:cfg.K]
    return Outcome(worst, 0.0, ok,
                   f"{_groups_text(_groups(top, FLOAT64_RTOL), 8)} (layer {layer}; "
                   f"rel. error {worst:.1e})",
                   f"{cfg.K} × {', '.join(sorted({_g(s, 8) for s in sigma}))} at every layer",
                   f"largest (K+1)-th singular value / σ_l: {max(tails):.1e} (rank K)", layer)


def measure_relu_unequal(report: Report, cfg: RunConfig) -> Outcome:
    """λ_1/λ_K of layer 4's fit Hessian (autograd, σ'(0) = 0): at the best DNC point the K
    largest are equal (ratio 1); the paper's ReLU runs stay away from it."""
    layer = min(RELU_LAYER, cfg.depth)
    top = sorted(report.layers[layer - 1].hessian_top or [], reverse=True)
    dnc = theory.relu_layer_eigenvalues(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h, 0.0)[layer - 1]
    pred = dnc[0] / dnc[cfg.K - 1]
    if len(top) < cfg.K or not top[cfg.K - 1] > 0:
        return Outcome(None, pred, False, "—", f"{_g(pred, 6)} at the best DNC point",
                       f"layer {layer} has fewer than K positive eigenvalues", layer)
    ratio = top[0] / top[cfg.K - 1]
    ok = ratio - pred > RELU_UNEQUAL
    K2 = cfg.K ** 2
    sub = str(cfg.K).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))
    return Outcome(ratio, pred, ok, f"λ₁/λ{sub} = {_g(ratio, 4)} (layer {layer})",
                   f"{_g(pred, 6)} at the best DNC point",
                   f"top K² = {K2} at layer {layer}: " + ", ".join(_g(v, 3) for v in top[:K2]),
                   layer)


CLAIMS: list[Claim] = [
    Claim("loss", "Closed-form loss (case A)",
          "Gradient descent on the paper's linear UFM reaches the global optimum, whose loss "
          f"has a closed form: {PAPER_CASE_A_LOSS} for K=3, n=40, L=5, λ=0.01.",
          "paper-linear", "relative 1e-6", measure_loss, "train", "Train"),
    Claim("outlier-ratio", "Top-K² outliers equal",
          "At the optimum each layer's fit Hessian has exactly K² non-zero eigenvalues, all "
          "equal to λ_W γ/(1−γ): the max/min of the top K² tends to 1 at every layer.",
          "paper-linear", "|ratio − 1| ≤ 1e-6", measure_outlier_ratio, "spectrum", "Spectrum"),
    Claim("alignment", "Eigenvectors are class-mean products",
          "The top-K² eigenspace is spanned by the outer products μ_c^(l+1) μ_c'^(l)ᵀ of the "
          "class means: each one's share inside it, f_cc', tends to 1.",
          "paper-linear", "1 − f ≤ 1e-6", measure_alignment, "alignment", "Alignment"),
    Claim("gradient", "Gradient coefficients C = I/K",
          "The fit gradient of each layer uses only the K diagonal directions μ_c^(l+1) μ_c^(l)ᵀ, "
          "all with the same weight: C is I/K.",
          "paper-linear", "max |C − I/K| ≤ 1e-6", measure_gradient, "gradients", "Gradients"),
    Claim("gn-ranks", "Gauss–Newton split 0 / K(K−1) / K",
          "Papyan's split of each layer's Gauss–Newton matrix: the within-class part vanishes, "
          "the cross-class part carries K(K−1) outliers and the class part K.",
          "paper-linear", "exact ranks", measure_gn_ranks, "spectrum", "Spectrum"),
    Claim("full-hessian", "Full Hessian: K(K+1)/2 and K(K−1)/2",
          "Over all weights the K² outliers are the layer-wise ones summed, split by the "
          "cross-layer term ±ρ: K(K−1)/2 above and K(K+1)/2 below.",
          "paper-linear", "relative 1e-6", measure_full_split, "spectrum",
          "Spectrum (full)", full=True),
    Claim("sigma", "Weight singular values σ_l",
          "Every W_l has rank K with K equal singular values σ_l = √(γ(1−γ)/(Kλ_W)); the rest "
          "are zero.",
          "paper-linear", "relative 1e-6", measure_sigma, "collapse", "Collapse & weights"),
    Claim("relu-unequal", "ReLU: outliers stay unequal",
          "In the ReLU UFM gradient descent separates the outliers but does not equalise them "
          "(the paper's Fig. 9): at layer 4 the largest eigenvalue stays well above the K-th, "
          "although at the best DNC point they are equal.",
          "paper-relu", f"λ₁/λ_K − 1 > {RELU_UNEQUAL}", measure_relu_unequal, "spectrum",
          "Spectrum"),
]


# --------------------------------------------------------------------------- evaluation
@dataclass
class Row:
    """One row of the checklist table: a claim and what its run says (or why it cannot)."""

    claim: Claim
    state: str  # pass | fail | not run yet | training | error
    outcome: Outcome | None = None
    run_id: str | None = None
    step: int | None = None
    message: str = ""  # for states other than pass/fail

    @property
    def ok(self) -> bool:
        return self.state == "pass"

    def query(self) -> dict[str, str]:
        """The link's query parameters: run, step and (where it matters) layer."""
        q: dict[str, str] = {}
        if self.run_id is not None:
            q["run"] = self.run_id
        if self.step is not None and self.claim.page != "train" and self.claim.page != "collapse":
            q["step"] = str(self.step)
        if self.outcome is not None and self.outcome.layer is not None and \
                self.claim.page in ("spectrum", "alignment", "gradients"):
            q["layer"] = str(self.outcome.layer)
        return q


Analyze = Callable[..., Report]
Progress = Callable[[str, float], None] | None


def evaluate(runs_dir: str | Path | None = None, analyze: Analyze | None = None,
             states: dict[str, RunState] | None = None, progress: Progress = None) -> list[Row]:
    """One :class:`Row` per claim: measured on the newest finished checklist run of its preset
    (analysed once, cached in the run folder), or "training" / "not run yet"."""
    if analyze is None:
        from dufm_core import reports

        analyze = reports.analyze
    states = find_runs(runs_dir) if states is None else states
    reports_by_key: dict[str, Report | Exception] = {}
    keys = [k for k in RUNS if states[k].finished is not None]
    for i, key in enumerate(keys):
        run = states[key].finished
        assert run is not None
        if progress:
            progress(f"analysing {run.id}", i / max(len(keys), 1))
        full = any(c.full for c in CLAIMS if c.run == key)
        try:
            reports_by_key[key] = analyze(run, full=full)
        except Exception as exc:  # a row says why; the other claims still show
            reports_by_key[key] = exc
    if progress:
        progress("done", 1.0)
    return [_row(claim, states[claim.run], reports_by_key.get(claim.run)) for claim in CLAIMS]


def _row(claim: Claim, st: RunState, report: Report | Exception | None) -> Row:
    if st.finished is None:
        if st.active is not None:
            status = st.status or {}
            return Row(claim, "training", run_id=st.active.id,
                       message=f"training: step {status.get('step', 0)} of "
                               f"{status.get('total_steps') or '?'}")
        why = "" if st.ended is None else (
            f" (the last one, {st.ended[0]}, {st.ended[1]}" + (f": {st.ended[2]}" if st.ended[2]
                                                               else "") + ")")
        return Row(claim, "not run yet", message="not run yet" + why)
    if isinstance(report, Exception) or report is None:
        return Row(claim, "error", run_id=st.finished.id,
                   message=f"cannot analyse {st.finished.id}: {type(report).__name__}: {report}")
    cfg = RunConfig.from_dict(report.config or {})
    try:
        outcome = claim.measure(report, cfg)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as exc:
        return Row(claim, "error", run_id=st.finished.id, step=report.step,
                   message=f"report of {st.finished.id} lacks what {claim.id} needs: {exc}")
    return Row(claim, "pass" if outcome.ok else "fail", outcome, st.finished.id, report.step)


# --------------------------------------------------------------------------- CLI
MARKS = {"pass": "PASS", "fail": "FAIL", "not run yet": "not run yet", "training": "training",
         "error": "ERROR"}


def format_table(rows: list[Row]) -> str:
    """The checklist as a plain-text table: claim, measured, predicted, tolerance, result."""
    head = ("claim", "measured", "predicted", "tolerance", "result")
    lines = [(r.claim.title,
              r.outcome.measured_text if r.outcome else r.message,
              r.outcome.predicted_text if r.outcome else "",
              r.claim.tolerance_text, MARKS[r.state]) for r in rows]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*x).rstrip() for x in lines]
    passed = sum(r.ok for r in rows)
    out.append(f"{passed} of {len(rows)} claims pass")
    return "\n".join(out)


def add_parser(sub: Any) -> None:
    """The ``checklist`` subcommand (cli.py adds it to its subparsers)."""
    p = sub.add_parser("checklist", help="the paper's claims: measured, predicted, pass/fail")
    p.add_argument("--runs-dir", default=None,
                   help="runs folder (default $DUFM_RUNS_DIR or ./runs)")
    p.add_argument("--train", action="store_true",
                   help="first train the missing checklist runs here (about 20 s on an idle CPU)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """``python -m dufm_core checklist``: print the table; exit 0 only if every claim passes
    (1 otherwise, 2 for a runs folder that is not one)."""
    root = Path(args.runs_dir) if args.runs_dir is not None else default_runs_dir()
    if root.exists() and not root.is_dir():
        print(f"error: runs-dir: {root} is a file, not a runs folder", file=sys.stderr)
        return 2
    if args.train:
        from dufm_core import kinds

        for key in missing(find_runs(root)):
            print(f"training checklist run {key} …", file=sys.stderr, flush=True)
            result = kinds.train(run_config(key), runs_dir=root, progress=None)
            print(f"  {result.run.id}: {result.state}", file=sys.stderr, flush=True)
    rows = evaluate(root)
    print(format_table(rows))
    if any(r.state == "not run yet" for r in rows):
        print("some runs are missing: add --train to train them (or use the dashboard's "
              "Reproduction checklist page)", file=sys.stderr)
    return 0 if all(r.ok for r in rows) else 1
