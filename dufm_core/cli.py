"""Command-line interface (docs/design.md §4).

::

    python -m dufm_core train   [--config FILE] [--<key> VALUE ...] [--runs-dir DIR] [--dry-run]
    python -m dufm_core train   --resume RUN_DIR [--steps S] [--device D]
    python -m dufm_core theory  --K K --n n --depth L --lam LAM [--lam-h LAM_H] [--lam-w a,b,c]
    python -m dufm_core runs    [--runs-dir DIR] [--json]
    python -m dufm_core checklist [--runs-dir DIR] [--train]

``train`` prints the run folder as its last line of standard output; progress goes to standard
error. Every bad value is refused with one line naming the field and its allowed range (exit 2),
before any run folder is created, and so is a run, a resume, an analysis or a ``theory`` output
that would need more memory than the cap (:mod:`dufm_core.resources`). Numbers are read in the
same forms everywhere (``--steps 1e3`` is 1000 steps, for a new run and for ``--resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from dufm_core import resources
from dufm_core.config import (
    MAX_STEPS,
    ConfigError,
    FieldSpec,
    RunConfig,
    field_specs,
    load_config_file,
)
from dufm_core.config_values import check_float, check_int
from dufm_core.curvature import sharded
from dufm_core.curvature.sharded import ShardError, data_parallel

THEORY_BYTES_PER_VALUE = 140  # measured: one K²-list value costs ~130 bytes up to its JSON text


def _die(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- train
def _config_help(f: dataclasses.Field, spec: FieldSpec) -> str:
    """``--<field>``'s help: the field's metadata (config.FIELDS), its allowed range, default."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    parts = [spec.help]
    if spec.allowed() and not spec.choices:  # choices are in the metavar already
        parts.append(f"allowed {spec.allowed()}")
    parts.append(f"default {shown!r}" if shown == "" else f"default {shown}")
    if spec.models != "all":
        parts.append("real networks only" if spec.models == "real" else "UFM only")
    return "; ".join(parts)


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """One ``--<field>`` option per RunConfig field (dashes or underscores), values as text;
    RunConfig.validate converts and range-checks them. The help comes from config.FIELDS, as
    do the dashboard's Train form widgets (ui/config_form.py)."""
    g = p.add_argument_group("run configuration (RunConfig fields)")
    for f, spec in field_specs():
        flags = [f"--{f.name}"]
        if "_" in f.name:
            flags.append(f"--{f.name.replace('_', '-')}")
        metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else "V"
        g.add_argument(
            *flags, dest=f"cfg_{f.name}", metavar=metavar, default=None,
            help=_config_help(f, spec).replace("%", "%%"),
        )
    g.add_argument(
        "--lam",
        dest="cfg_lam",
        metavar="V",
        default=None,
        help="set every λ_W and λ_H to one value",
    )


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    data: dict[str, Any] = {}
    if args.config:
        data.update(load_config_file(args.config))
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if "lam" in given:  # --lam sets all; explicit --lam-w/--lam-h still win
        lam = given.pop("lam")
        data["lam_w"] = given.get("lam_w", lam)
        data["lam_h"] = given.get("lam_h", lam)
        data.pop("lam", None)
    if "betas" in given:
        given["betas"] = [v.strip() for v in given["betas"].split(",")][:3]
    data.update(given)
    return RunConfig.from_dict(data)


def _train_run_dir(args: argparse.Namespace) -> int:
    """Worker mode: train the queued run folder ``--run-dir`` (made by jobs.launch), then start
    the next queued run if any (:func:`dufm_core.process.worker.train_run`)."""
    from dufm_core.process import worker

    return worker.train_run(args.run_dir)


def cmd_train(args: argparse.Namespace) -> int:
    from dufm_core import kinds, training

    if args.run_dir:
        return _train_run_dir(args)
    if args.resume:
        extra = [
            k
            for k, v in vars(args).items()
            if k.startswith("cfg_") and v is not None and k not in ("cfg_steps", "cfg_device")
        ]
        if extra or args.config:
            return _die("--resume takes only --steps and --device; the run keeps its own config")
        try:
            steps = (None if args.cfg_steps is None
                     else check_int("steps", args.cfg_steps, 1, MAX_STEPS))
            result = kinds.resume(args.resume, steps=steps, device=args.cfg_device)
        except (ConfigError, OSError, RuntimeError, ValueError) as exc:
            return _die(str(exc))
        print(result.run.path)
        return 0 if result.state == "finished" else 1
    try:
        cfg = _config_from_args(args)
        warnings = cfg.validate()
        kinds.check_memory(cfg)
    except ConfigError as exc:
        return _die(str(exc))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.dry_run:
        print(json.dumps({"config": cfg.to_dict(), "warnings": warnings}, indent=2))
        return 0
    try:
        training.pick_device(cfg.device)
    except RuntimeError as exc:
        return _die(str(exc))
    try:
        result = kinds.train(cfg, runs_dir=args.runs_dir)
    except (ConfigError, OSError) as exc:  # real networks: data folder, n, K or amp, before any
        return _die(str(exc))  # run folder; a runs folder that cannot be written (a full disk)
    print(result.run.path)
    return 0 if result.state == "finished" else 1


# --------------------------------------------------------------------------- theory
def _theory_memory(K: int, L: int, tau: bool) -> resources.MemoryEstimate:
    """The output of ``theory``: six K²-long lists (five outlier lists and the K×K gradient
    coefficients) and, with ``--tau``, L more (the ReLU layer eigenvalues), each value costing
    :data:`THEORY_BYTES_PER_VALUE` up to its JSON text. Nothing grows with n."""
    return resources.MemoryEstimate("this theory output", (
        resources.Part("K² lists", 6 * K * K * THEORY_BYTES_PER_VALUE, "K"),
        resources.Part("ReLU layer eigenvalues", L * K * K * THEORY_BYTES_PER_VALUE * tau,
                       "K × depth"),
    ))


def cmd_theory(args: argparse.Namespace) -> int:
    from dufm_core import theory

    try:
        if args.lam is None and (args.lam_w is None or args.lam_h is None):
            raise ConfigError("lam", "give --lam, or both --lam-w and --lam-h")
        lam_w = args.lam_w if args.lam_w is not None else args.lam
        lam_h = args.lam_h if args.lam_h is not None else args.lam
        K = check_int("K", args.K, 2, 10_000)
        cfg = RunConfig(K=K, n=args.n, depth=args.depth, lam_w=lam_w, lam_h=lam_h, width=K)
        cfg.validate()
        if min([*cfg.lam_ws, cfg.lam_h]) <= 0:
            raise ConfigError("lam", "must be > 0 for the closed forms")
        tau = None if args.tau is None else check_float("tau", args.tau, 0.0, 1.0)
        resources.check(_theory_memory(cfg.K, cfg.depth, tau is not None))
    except ConfigError as exc:
        return _die(str(exc))
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    out = pred.to_dict()
    if tau is not None:
        out["relu_tau"] = tau
        out["relu_layer_eigenvalues"] = theory.relu_layer_eigenvalues(
            cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h, tau
        )
    print(json.dumps(out, indent=2))
    return 0


# --------------------------------------------------------------------------- analyze
def cmd_analyze(args: argparse.Namespace) -> int:
    from dufm_core import kinds
    from dufm_core.checkpoints import CheckpointError
    from dufm_core.store import open_run

    def progress(msg: str, frac: float) -> None:
        print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)

    try:
        run = open_run(args.run_dir)
        try:
            kind = kinds.get(run.config().model)
            params = kind.normalise_full_params(args.full_params)
            parallel = sharded.from_args(args, args.full and params == "all")
        except ValueError as exc:
            return _die(str(exc))
        with data_parallel(parallel):
            return _analyze(run, args, progress)
    except (FileNotFoundError, ValueError, CheckpointError, ShardError) as exc:
        return _die(str(exc))


def _analyze(run: Any, args: argparse.Namespace, progress: Any) -> int:
    """The analysis ``cmd_analyze`` asked for (inside its data-parallel block)."""
    from dufm_core import reports
    from dufm_core.store import atomic_write_json

    if args.all_steps:
        reports.analyze_series(run, full=args.full, full_params=args.full_params,
                               progress=progress)
        path = run.analysis_dir / "series.json"
    else:
        report = reports.analyze(run, args.step, full=args.full, full_params=args.full_params,
                                 progress=progress)
        path = reports.report_path(run, report.step)
        if args.out:
            atomic_write_json(args.out, report.to_json())
            path = Path(args.out)
    print(path)
    return 0


# --------------------------------------------------------------------------- landscape
def cmd_landscape(args: argparse.Namespace) -> int:
    """Loss landscape around a checkpoint (docs/design.md §8.4); prints the JSON's path last."""
    from dufm_core import landscape
    from dufm_core.checkpoints import CheckpointError

    def progress(msg: str, frac: float) -> None:
        print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)

    try:
        largs = landscape.LandscapeArgs(
            step=None if args.step is None else check_int("step", args.step, 0, 10**12),
            layer=None if args.layer is None else check_int("layer", args.layer, 1, 64),
            full=args.full, full_params=args.full_params, directions=args.directions,
            index=landscape.parse_index(args.index),
            radius=None if args.radius is None else check_float("radius", args.radius,
                                                                *landscape.RADIUS),
            points=check_int("points", args.points, *landscape.POINTS),
            seed=check_int("seed", args.seed, 0, 2**31 - 1))
        path, _ = landscape.run_landscape(args.run_dir, largs, args.out, progress)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        return _die(str(exc))
    print(path)
    return 0


# --------------------------------------------------------------------------- launcher
def cmd_launcher(args: argparse.Namespace) -> int:
    from dufm_core.process import worker
    from dufm_core.store import default_runs_dir

    return worker.serve_launcher(args.runs_dir or default_runs_dir())


# --------------------------------------------------------------------------- runs
def cmd_runs(args: argparse.Namespace) -> int:
    from dufm_core.store import default_runs_dir, list_runs

    root = Path(args.runs_dir) if args.runs_dir is not None else default_runs_dir()
    if root.exists() and not root.is_dir():
        return _die(f"runs-dir: {root} is a file, not a runs folder")
    rows = list_runs(root)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": r.id,
                        "path": str(r.path),
                        "state": r.state,
                        "step": r.step,
                        "total_steps": r.total_steps,
                        "loss": r.loss,
                        "error": r.error,
                        "config": r.config,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    if not rows:
        where = args.runs_dir or "the runs folder"
        print(f"no runs in {where}; start one with: python -m dufm_core train", file=sys.stderr)
        return 0
    header = f"{'run':<48} {'state':<11} {'step':>15} {'loss':>14}  config"
    print(header)
    for r in rows:
        c = r.config
        desc = (
            f"K={c.get('K')} n={c.get('n')} L={c.get('depth')} d={c.get('width')} "
            f"{c.get('activation')}/{c.get('loss')} λW={c.get('lam_w')} λH={c.get('lam_h')}"
        )
        loss = f"{r.loss:.10g}" if isinstance(r.loss, (int, float)) else "-"
        print(f"{r.id:<48} {r.state:<11} {f'{r.step}/{r.total_steps}':>15} {loss:>14}  {desc}")
    return 0


# --------------------------------------------------------------------------- sweep
def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a sweep spec; print the sweep folder last. Exit 0 when every member finished or
    diverged, 1 when one failed, the sweep was cancelled or its executor failed (the folder is
    still printed), 2 for a bad spec or option (nothing is started then)."""
    from dufm_core import sweeps

    try:
        spec = sweeps.load_spec(args.spec)
        result = sweeps.run_sweep(
            spec,
            runs_dir=args.runs_dir,
            executor=args.executor,
            jobs=args.jobs,
            address=args.address,
            progress=sweeps.main_progress,
        )
    except sweeps.SweepRunError as exc:  # it had started: the folder is still the last line
        print(f"error: {exc}", file=sys.stderr)
        print(exc.folder)
        return 1
    except (ConfigError, ValueError, RuntimeError) as exc:
        return _die(str(exc))
    print(result.folder)
    ok = not result.cancelled and set(result.counts) <= set(sweeps.DONE_STATES)
    return 0 if ok else 1


# --------------------------------------------------------------------------- main
def _prog_name() -> str:
    """How the user called us: ``dufm`` (the installed console script) or ``python -m
    dufm_core`` (the two are the same program)."""
    return "python -m dufm_core" if Path(sys.argv[0]).name == "__main__.py" else "dufm"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_prog_name(), description="DUFM Lab: deep unconstrained feature models."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a run; prints the run folder last")
    t.add_argument("--config", help="JSON or TOML file of config keys (command-line keys win)")
    t.add_argument(
        "--runs-dir", default=None, help="runs folder (default $DUFM_RUNS_DIR or ./runs)"
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its last checkpoint")
    t.add_argument("--run-dir", metavar="RUN_DIR", help=argparse.SUPPRESS)  # worker mode
    t.add_argument("--dry-run", action="store_true", help="validate and print the config; no run")
    _add_config_options(t)
    t.set_defaults(func=cmd_train)

    th = sub.add_parser("theory", help="closed-form predictions as JSON")
    th.add_argument("--K", required=True, help="classes, in [2, 10000]")
    th.add_argument("--n", required=True, help="samples per class, in [1, 10000000]")
    th.add_argument("--depth", required=True, help="number of weight matrices L, in [1, 64]")
    th.add_argument("--lam", default=None, help="one λ for every λ_W and λ_H")
    th.add_argument("--lam-h", dest="lam_h", default=None)
    th.add_argument("--lam-w", dest="lam_w", default=None, help="λ_W: one value or a,b,c per layer")
    th.add_argument(
        "--tau",
        default=None,
        help="also give the ReLU DNC-point eigenvalues with σ'(0) = τ, in [0, 1]",
    )
    th.set_defaults(func=cmd_theory)

    an = sub.add_parser("analyze", help="analysis report of a checkpoint; prints its path last")
    an.add_argument("run_dir", metavar="RUN_DIR")
    an.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last)")
    an.add_argument("--full", action="store_true", help="add the full fit-Hessian")
    an.add_argument("--full-params", default="weights",
                    help="UFM runs: weights (default) | weights+features; resnet20 runs: head "
                         "(= weights) | all (every network parameter, products over data batches)")
    an.add_argument("--out", default=None, help="also write the report to this file")
    an.add_argument("--all-steps", action="store_true",
                    help="analyse every checkpoint and write analysis/series.json")
    sharded.add_options(an)
    an.set_defaults(func=cmd_analyze)

    ls = sub.add_parser("landscape", help="loss landscape around a checkpoint (JSON, §8.4); "
                                          "prints its path last")
    ls.add_argument("run_dir", metavar="RUN_DIR")
    ls.add_argument("--step", default=None, help="checkpoint step (default: the last)")
    ls.add_argument("--layer", default=None, help="move W_l only, l in 1..L (default: L)")
    ls.add_argument("--full", action="store_true", help="move all weights (see --full-params)")
    ls.add_argument("--full-params", default="weights", help="with --full: weights (default) | "
                                                             "weights+features")
    ls.add_argument("--directions", default="eig", help="eig (default) | predicted | random | "
                                                        "pca | interp")
    ls.add_argument("--index", default="1", help="i (a line) or i,j (a plane); predicted: the "
                                                 "class pair c,c' (or c,c',e,e')")
    ls.add_argument("--radius", default=None, help="t in [-R, R] (interp: [0, R]); default 1, "
                                                   "pca: the path's extent")
    ls.add_argument("--points", default="41", help="points per axis, in [3, 201]")
    ls.add_argument("--seed", default="0", help="random directions' seed")
    ls.add_argument("--out", default=None, help="write the JSON here (default: the run's "
                                                "analysis/ folder, cached by arguments)")
    ls.set_defaults(func=cmd_landscape)

    lau = sub.add_parser("launcher", help="fork server that starts workers fast (dashboard)")
    lau.add_argument("--runs-dir", default=None)
    lau.set_defaults(func=cmd_launcher)

    sw = sub.add_parser("sweep", help="run a grid of runs from a TOML spec; prints its folder last")
    sw.add_argument("spec", metavar="SPEC_FILE", help="TOML sweep spec (docs/sweeps.md)")
    sw.add_argument("--executor", choices=("local", "ray"), default="local")
    sw.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    sw.add_argument(
        "--jobs", type=int, default=None, help="members at once (default: the number of cores)"
    )
    sw.add_argument(
        "--runs-dir", default=None, help="runs folder (default $DUFM_RUNS_DIR or ./runs)"
    )
    sw.set_defaults(func=cmd_sweep)

    from dufm_core import checklist  # the reproduction checklist (its command lives there)
    from dufm_core.inspection.command import add_parser as add_inspect

    checklist.add_parser(sub)
    add_inspect(sub)  # inspect: any classifier's checkpoint (docs/design.md §8.1)

    r = sub.add_parser("runs", help="table of runs and their states")
    r.add_argument("--runs-dir", default=None)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_runs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
