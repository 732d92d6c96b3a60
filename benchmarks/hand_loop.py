"""The training loop a researcher writes by hand for the deep linear UFM (the baseline of
bench_train.py): autograd + torch.optim.SGD, float64, full batch, N(0, 1/d) init, the loss of
docs/theory.md §1.3. Prints the final loss."""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--K", type=int, default=3)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--width", type=int, default=60)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--lam", type=float, default=1e-2)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    K, n, d, L, N = a.K, a.n, a.width, a.depth, a.K * a.n
    dt = torch.float64
    H = (torch.randn(d, N, dtype=dt) / d**0.5).requires_grad_()
    Ws = [(torch.randn(d, d, dtype=dt) / d**0.5).requires_grad_() for _ in range(L - 1)]
    Ws.append((torch.randn(K, d, dtype=dt) / d**0.5).requires_grad_())
    Y = torch.eye(K, dtype=dt).repeat_interleave(n, dim=1)
    params = [H, *Ws]
    opt = torch.optim.SGD(params, lr=a.lr)
    for _ in range(a.steps):
        opt.zero_grad()
        Z = H
        for W in Ws:
            Z = W @ Z
        fit = (Z - Y).square().sum() / (2 * N)
        reg = a.lam / 2 * sum(p.square().sum() for p in params)
        loss = fit + reg
        loss.backward()
        opt.step()
    print(f"{loss.item():.17g}")


if __name__ == "__main__":
    main()
