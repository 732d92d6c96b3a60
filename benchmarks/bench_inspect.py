"""Time to the first inspection report (issue #15), on the CPU or a GPU.

Cases, each from a state-dict file on disk to the written report (docs/inspect.md):

* ``resnet20-digits``: this project's ResNet-20 (random weights, linear head) on the bundled
  digits (``--dataset digits``: every training image);
* ``resnet18-cifar``: the CIFAR ResNet-18 on ``--n`` synthetic 3×32×32 images (10 classes,
  balanced; the real CIFAR files are not needed), no test set.

Each row splits the time into reading the file, the forward passes (``--stem-dtype``, float32
by default for speed; the features are taken to float64 for the analyses) and the analyses
(head spectra, alignment, gradients, collapse, weight spectra). Prints one JSON line per case
and a side-by-side table.

    python -m benchmarks.bench_inspect --device cpu --n 10000
    python -m benchmarks.bench_inspect --device cuda --n 10000
    python -m benchmarks.bench_inspect --quick          # seconds: tiny sizes, for tests
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dufm_core.inspection.architectures import ResNet18
from dufm_core.inspection.command import load_dataset_data
from dufm_core.inspection.loading import load_model
from dufm_core.inspection.report import inspect_model
from dufm_core.networks import RealNetwork


def _case(name: str, path: Path, arch: str, x: torch.Tensor, y: torch.Tensor,
          xt: torch.Tensor, yt: torch.Tensor, device: str, dtype: torch.dtype) -> dict[str, Any]:
    marks: dict[str, float] = {}

    def progress(msg: str, frac: float) -> None:
        marks.setdefault(msg.split(" ")[0], time.perf_counter())

    t0 = time.perf_counter()
    model = load_model(path, arch)
    t_load = time.perf_counter()
    rep = inspect_model(model, x, y, xt, yt, head=1, dtype=dtype, device=device, loss="ce",
                        progress=progress)
    t_end = time.perf_counter()
    t_fwd_end = marks.get("layer", t_end)
    return {
        "case": name, "N": int(y.numel()), "N_test": int(yt.numel()), "device": device,
        "stem_dtype": str(dtype).replace("torch.", ""),
        "load_s": t_load - t0, "forward_s": t_fwd_end - t_load, "analysis_s": t_end - t_fwd_end,
        "total_s": t_end - t0,
        "train_acc": rep.get("accuracy")["train"],
        "hessian_method": rep.layers[0].hessian_method,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=10000, help="synthetic CIFAR-sized images")
    ap.add_argument("--stem-dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--cases", default="resnet20-digits,resnet18-cifar")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    dtype = torch.float32 if args.stem_dtype == "float32" else torch.float64
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        torch.manual_seed(0)
        if "resnet20-digits" in args.cases:
            width = 2 if args.quick else 16
            net = RealNetwork(1, [4 * width, 10], "linear", base_width=width)
            with torch.no_grad():
                net.head_weights[0].normal_(0, 0.1)
            torch.save(net.state_dict(), tmpd / "r20.pt")
            d = load_dataset_data("digits", "")
            if args.quick:
                d.x, d.y = d.x[::10], d.y[::10]
            rows.append(_case("resnet20-digits", tmpd / "r20.pt", "resnet20", d.x, d.y,
                              d.x_test, d.y_test, args.device, dtype))
            print(json.dumps(rows[-1]), flush=True)
        if "resnet18-cifar" in args.cases:
            n = 100 if args.quick else args.n
            net18 = ResNet18(3, 10, width=4 if args.quick else 64)
            torch.save(net18.state_dict(), tmpd / "r18.pt")
            y = torch.arange(10).repeat_interleave(n // 10)
            x = torch.randn(y.numel(), 3, 32, 32)
            rows.append(_case("resnet18-cifar", tmpd / "r18.pt", "resnet18", x, y,
                              x[:0], y[:0], args.device, dtype))
            print(json.dumps(rows[-1]), flush=True)
    head = f"{'case':<18}{'N':>7}{'device':>8}{'load s':>9}{'forward s':>11}{'analysis s':>12}" \
           f"{'total s':>10}"
    print(head)
    for r in rows:
        print(f"{r['case']:<18}{r['N']:>7}{r['device']:>8}{r['load_s']:>9.2f}"
              f"{r['forward_s']:>11.2f}{r['analysis_s']:>12.2f}{r['total_s']:>10.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
