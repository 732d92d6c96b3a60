"""Time per training step / epoch of ResNet-20 + head (issue #5), on the CPU or a GPU.

Two loops are timed side by side on the same network, data and device:

* ``ours``: one step of ``dufm_core.training.real`` — ``batch_gradient`` (the objective: fit
  + λ_H mean feature norm + λ_W on the head; ``torch.autograd.grad``; loss and gradient norm
  in one host sync) and the engine's foreach momentum ``Optimizer``;
* ``plain``: the loop people would otherwise write — MSE on one-hot targets, the same penalty
  terms, ``loss.backward()`` and ``torch.optim.SGD(momentum=0.9, foreach=True)``.

Cases: ``digits`` (the bundled 8×8 digits, full batch of N = 10·n images: one step = one
epoch) and ``cifar`` (synthetic 3×32×32 batches of the given sizes; a CIFAR-10 epoch of
50 000 images is extrapolated from the time per image). ``--amp`` adds bf16-autocast rows on
CUDA. Prints one JSON line per case and a summary table.

    python -m benchmarks.bench_real_epoch --device cpu --cases digits,cifar --cifar-batches 128
    python -m benchmarks.bench_real_epoch --device cuda --amp --cifar-batches 128,512,2048,10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from dufm_core.config import RunConfig
from dufm_core.data import load_data
from dufm_core.networks import build_network
from dufm_core.training import Optimizer
from dufm_core.training.real import batch_gradient


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Any, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def make_steps(cfg: RunConfig, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """The two step functions (ours, plain) on fresh copies of the same network."""
    model = build_network(cfg, device=device)
    params = list(model.parameters())
    opt = Optimizer([p.data for p in params], cfg)

    def ours() -> None:  # the body of RealTrainer's loop, without logging
        grads, _, _ = batch_gradient(model, params, x, y, cfg)
        opt.step(list(grads))

    plain_model = build_network(cfg, device=device)
    sgd = torch.optim.SGD(plain_model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          foreach=True)
    Y = torch.nn.functional.one_hot(y, cfg.K).to(plain_model.head_weights[0].dtype)

    def plain() -> None:
        sgd.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp):
            h = plain_model.features(x)
        h = h.float() if h.dtype == torch.bfloat16 else h
        z = plain_model.head(h)
        loss = 0.5 * (z - Y).square().sum(dim=1).mean()
        loss = loss + 0.5 * cfg.lam_h * h.square().sum(dim=1).mean()
        loss = loss + sum(0.5 * lam * W.square().sum()
                          for lam, W in zip(cfg.lam_ws, plain_model.head_weights, strict=True))
        loss.backward()
        sgd.step()
        loss.item()

    return {"ours": ours, "plain": plain}


def run_case(name: str, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor,
             device: torch.device, warmup: int, repeats: int, epoch_images: int) -> list[dict]:
    rows = []
    for loop, fn in make_steps(cfg, x, y, device).items():
        times = _time(fn, device, warmup, repeats)
        med = statistics.median(times)
        rows.append({
            "case": name, "loop": loop, "device": str(device), "amp": cfg.amp,
            "batch": int(x.shape[0]), "step_s_median": med, "step_s_min": min(times),
            "ms_per_image": 1e3 * med / x.shape[0],
            "epoch_s": med * epoch_images / x.shape[0], "epoch_images": epoch_images,
            "threads": torch.get_num_threads(), "repeats": repeats,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", default="digits,cifar")
    ap.add_argument("--n", type=int, default=139, help="digits images per class (N = 10·n)")
    ap.add_argument("--cifar-batches", default="128")
    ap.add_argument("--amp", action="store_true", help="also time bf16 autocast (CUDA only)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--out", default="", help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amps = [False, True] if args.amp and device.type == "cuda" else [False]
    rows: list[dict] = []
    for case in args.cases.split(","):
        for amp in amps:
            if case == "digits":
                cfg = RunConfig.from_dict({"model": "resnet20", "n": args.n, "amp": amp,
                                           "device": args.device})
                data = load_data(cfg).to(device)
                rows += run_case("digits", cfg, data.x_train, data.y_train, device,
                                 args.warmup, args.repeats, data.N)
            elif case == "cifar":
                cfg = RunConfig.from_dict({"model": "resnet20", "dataset": "cifar10",
                                           "amp": amp, "device": args.device,
                                           "data_dir": "/synthetic"})
                for B in (int(b) for b in args.cifar_batches.split(",")):
                    g = torch.Generator().manual_seed(B)
                    x = torch.randn(B, 3, 32, 32, generator=g).to(device)
                    y = torch.randint(0, 10, (B,), generator=g).to(device)
                    rows += run_case("cifar", cfg, x, y, device, args.warmup,
                                     max(3, args.repeats if B <= 2048 else args.repeats // 2),
                                     50_000)
            else:
                raise SystemExit(f"--cases: unknown case {case!r} (digits, cifar)")
    print(f"\n{'case':7} {'amp':5} {'batch':>6} {'ours s/step':>12} {'plain s/step':>13} "
          f"{'ours/plain':>10} {'epoch s (ours)':>15}")
    for a, b in zip(rows[::2], rows[1::2], strict=True):
        print(f"{a['case']:7} {a['amp']!s:5} {a['batch']:>6} {a['step_s_median']:>12.4f} "
              f"{b['step_s_median']:>13.4f} {a['step_s_median'] / b['step_s_median']:>10.2f} "
              f"{a['epoch_s']:>15.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
