"""``python -m dufm_core inspect`` (docs/design.md §8.1): load a user's model (or features
file) and data, write the report, print its path last. Progress goes to standard error; every
refusal is one line (exit 2)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dufm_core.config import ConfigError
from dufm_core.config_values import check_float

# torch and the readers are imported by the functions that need them, so that building the
# CLI's parser (every command's --help) stays light

__all__ = ["add_parser", "cmd_inspect", "load_dataset_data", "run_inspect"]


def add_parser(sub: Any) -> None:
    """The ``inspect`` subcommand's options (called by :func:`dufm_core.cli.build_parser`)."""
    p = sub.add_parser("inspect",
                       help="report of any classifier's checkpoint; prints its path last")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help=".safetensors / .pt state dict (with --arch) or .onnx graph")
    p.add_argument("--arch", default=None, help="mlp:D0-D1-…-K | resnet20 | resnet20:relu | "
                                                "resnet18 (for a state dict)")
    p.add_argument("--head", default="1", help="number of final linear layers in the head "
                                               "(default 1)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", default=None, help=".npz with x, y (and x_test, y_test)")
    src.add_argument("--dataset", default=None, help="digits | mnist | fashion-mnist | cifar10 "
                                                     "(local files)")
    src.add_argument("--features", default=None, help=".npz with features, labels, W1..WH "
                                                      "(b1..bH, features_test, labels_test)")
    p.add_argument("--data-dir", default="", help="folder of the --dataset files")
    p.add_argument("--loss", choices=("mse", "ce"), default="ce",
                   help="fit term of the Hessians (default ce)")
    p.add_argument("--lam-w", default=None, help="λ_W for the predictions: one value or one per "
                                                 "head layer (default 5e-4)")
    p.add_argument("--lam-h", default=None, help="λ_H for the predictions (default 5e-4)")
    p.add_argument("--full", action="store_true",
                   help="add the top of the Hessian over every parameter of the network "
                        "(a features file: over all head weights)")
    p.add_argument("--out", default=None, help="report file (default inspect_report.json)")
    from dufm_core.curvature import sharded

    sharded.add_options(p)  # --workers: the --full products over data shards
    p.set_defaults(func=cmd_inspect)


def load_dataset_data(name: str, data_dir: str) -> Any:
    """A named data set from its local files (:func:`dufm_core.data.load_dataset`: every training
    sample of the smallest class count per class, standardised with the training statistics)."""
    import torch

    from dufm_core.data import dataset_info, load_dataset, train_class_counts
    from dufm_core.inspection.loading import Data

    info = dataset_info(name)
    n = min(train_class_counts(name, data_dir))
    d = load_dataset(name, n, info.classes, data_dir=data_dir, dtype=torch.float64)
    return Data(d.x_train, d.y_train, d.x_test, d.y_test, f"dataset {name} ({d.source})")


def _lams(text: str | None, field: str) -> list[float] | None:
    if text is None:
        return None
    return [check_float(field, v.strip(), 0.0, 1e6) for v in str(text).split(",")]


def run_inspect(model_path: str | None, arch: str | None, head: int, data: str | None,
                dataset: str | None, data_dir: str, features: str | None, loss: str,
                lam_w: list[float] | None, lam_h: float | None, full: bool,
                progress: Any = None) -> Any:
    """The report (a :class:`~dufm_core.report_types.Report`) for the CLI's options; raises
    InspectError / ConfigError / CheckpointError / ValueError with one line."""
    from dufm_core.inspection.loading import (
        InspectError,
        load_data_file,
        load_features,
        load_model,
    )
    from dufm_core.inspection.report import inspect_features, inspect_model

    kw = {"loss": loss, "lam_w": lam_w, "lam_h": lam_h, "full": full, "progress": progress}
    if features:
        if model_path:
            raise InspectError("MODEL: give a model file or --features, not both")
        f = load_features(features)
        if not 1 <= head <= len(f.head) or head != len(f.head):
            raise InspectError(f"head: the features file holds {len(f.head)} head layers "
                               f"(W1..W{len(f.head)}); --head must be {len(f.head)}")
        src = {"model_file": None, "architecture": "features file",
               "data": f"features file {Path(features).name}"}
        return inspect_features(f.features, f.labels, f.head, f.features_test, f.labels_test,
                                name=Path(features).name, source=src, **kw)
    if not model_path:
        raise InspectError("MODEL: a model file is needed (or --features)")
    if Path(model_path).suffix.lower() == ".onnx":
        from dufm_core.inspection.onnx_graph import load_onnx

        model = load_onnx(model_path)
    else:
        model = load_model(model_path, arch)
    K = int(model.chain()[-1][0].shape[0])
    d = load_data_file(data, K) if data else load_dataset_data(str(dataset), data_dir)
    src = {"model_file": Path(model_path).name, "architecture": arch or "onnx",
           "data": d.source}
    return inspect_model(model, d.x, d.y, d.x_test, d.y_test, head=head,
                         name=Path(model_path).name, source=src, **kw)


def cmd_inspect(args: argparse.Namespace) -> int:
    from dufm_core.checkpoints import CheckpointError
    from dufm_core.config_values import check_int
    from dufm_core.curvature import sharded
    from dufm_core.inspection.loading import InspectError
    from dufm_core.store import atomic_write_json

    def progress(msg: str, frac: float) -> None:
        print(f"[{frac:4.0%}] {msg}", file=sys.stderr, flush=True)

    try:
        head = check_int("head", args.head, 1, 64)
        lam_w = _lams(args.lam_w, "lam_w")
        lam_h = _lams(args.lam_h, "lam_h")
        if lam_h is not None and len(lam_h) != 1:
            raise ConfigError("lam_h", "must be one number")
        parallel = sharded.from_args(args, args.full and args.features is None)
        with sharded.data_parallel(parallel):
            report = run_inspect(args.model, args.arch, head, args.data, args.dataset,
                                 args.data_dir, args.features, args.loss, lam_w,
                                 lam_h[0] if lam_h else None, args.full, progress)
        out = Path(args.out or "inspect_report.json")
        atomic_write_json(out, report.to_json())
    except (InspectError, ConfigError, CheckpointError, ValueError, FileNotFoundError,
            sharded.ShardError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 2
    print(out)
    return 0
