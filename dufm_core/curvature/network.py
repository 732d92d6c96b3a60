"""Fit-term Hessian of a real network (ResNet-20 + head) over its whole training set.

The operator is H = ∇²_θ fit(θ) with

    fit(θ) = (1/N) Σ_i ℓ(z_θ(x_i), y_i),     ℓ = ½‖z − e_y‖² (MSE) or cross-entropy,

over the N training samples, BatchNorm in **eval mode** (running statistics, so the network is
a fixed function of θ and the Hessian does not depend on how the data is batched), and θ either
the head weights W_1..W_L (``params="head"``) or every parameter (``params="all"``: the
convolutions, the BatchNorm scales and shifts, then the head). The sum over samples is taken
batch by batch, each batch weighted by |B|/N, so the products are exact, not a subsample.

Products use forward-over-reverse differentiation (``torch.func.jvp`` of ``torch.func.grad``),
vmapped over a chunk of directions: one pass over the data per chunk of vectors. Vectors are
flat in the order of :attr:`NetworkHessianOperator.names`, each tensor row-major (the layout of
:mod:`dufm_core.curvature.params`), so a head-only operator agrees entry for entry with the
``"weights"`` operator of the :class:`~dufm_core.networks.HeadView` of the same network.

The regulariser is not included: as in the rest of the engine this is the *fit* Hessian. The
head's λ_W adds λ_W·I; the feature penalty λ_H·mean‖h‖² is a function of the backbone and has
a non-trivial Hessian there, which is why "total" is not offered for ``params="all"``.

Where a product spends its time (``benchmarks/bench_products.py``, docs/benchmarks.md §13): on a
CPU in float64, ~80 % in PyTorch's im2col convolutions (``_slow_conv2d`` forward and backward;
float64 has no oneDNN kernels), the rest in element-wise passes. Two layout choices pay there and
change products only by rounding (~1e-16 relative): the network's 4-D weights and the images in
**channels-last** memory format, and small vmapped passes: at most ``CPU_CHUNK`` directions
(a vmapped convolution over many weight tangents is slow) and ``PASS_ROWS`` directions × samples
(the batch is split to stay in cache). Together ~1.5× on ResNet-20 / digits (§13).
They are applied on the CPU in float64 only (where they were measured). Forward-over-reverse
stays: reverse-over-reverse through a retained gradient graph was within ±15 % of it. float32
products are an explicit ``dtype`` choice (~6× faster on the CPU, oneDNN), not a default: they
agree with float64 to ~6e-7 relative (digits, ResNet-20; tested to 1e-5 on a tiny network).

The operator is a :class:`~dufm_core.curvature.base.CurvatureOperator` (``matmat`` here; ``@``,
``dense`` for small networks and the rest inherited), so the block eigensolver takes it as it
takes the UFM's operators.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch.func import functional_call, grad, jvp, vmap

from dufm_core.curvature.base import CurvatureOperator
from dufm_core.curvature.params import unflatten
from dufm_core.models import fit_term
from dufm_core.networks import eval_mode

__all__ = ["NETWORK_PARAMS", "NetworkHessianOperator"]

NETWORK_PARAMS = ("head", "all")
PASS_ROWS = 512  # CPU float64: most directions × samples in one vmapped pass (cache-sized)
CPU_CHUNK = 4  # CPU float64: most directions in one vmapped pass (vmapped convolutions)


class NetworkHessianOperator(CurvatureOperator):
    """H·V for the fit Hessian of ``model`` over (x, y) (see the module docstring).

    Args:
        model: a :class:`~dufm_core.networks.RealNetwork`; its parameters are read once (a
            snapshot) and it is evaluated in eval mode through ``functional_call``.
        x, y: the whole training set (inputs (N, C, H, W), labels (N,)).
        loss: "mse" | "ce".
        params: "head" (W_1..W_L) or "all" (every parameter, backbone first).
        batch_size: samples per pass (memory only; the result does not depend on it). On the
            CPU in float64 a pass holds at most ``PASS_ROWS`` directions × samples (module
            docstring), so the batch may be split further.
        chunk: directions per vmapped pass (memory ∝ chunk · batch_size activations); at most
            ``CPU_CHUNK`` on the CPU in float64.
        dtype: computation dtype (default float64, as every analysis).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: str = "mse",
        params: str = "all",
        batch_size: int = 512,
        chunk: int = 16,
        dtype: torch.dtype = torch.float64,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if params not in NETWORK_PARAMS:
            raise ValueError(f"params must be one of {' | '.join(NETWORK_PARAMS)} (got {params!r})")
        if loss not in ("mse", "ce"):
            raise ValueError(f"loss must be mse | ce (got {loss!r})")
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must hold the same N > 0 samples (got {x.shape[0]}, "
                             f"{y.shape[0]})")
        self.model = model
        self.loss, self.params = loss, params
        self.K = int(model.K)
        device = next(model.parameters()).device
        head = {f"head_weights.{i}" for i in range(model.depth)}
        named = dict(model.named_parameters())
        self.names = tuple(n for n in named if params == "all" or n in head)
        # CPU float64: channels-last 4-D weights and images (module docstring: measured there)
        self.cpu_f64 = device.type == "cpu" and dtype == torch.float64
        self.frozen = {n: self._layout(p.detach().to(dtype)) for n, p in named.items()
                       if n not in self.names}
        self.theta = {n: self._layout(named[n].detach().to(dtype)) for n in self.names}
        self.buffers = {n: b.detach().to(dtype) if b.is_floating_point() else b.detach()
                        for n, b in model.named_buffers()}
        self.shapes = tuple(tuple(self.theta[n].shape) for n in self.names)
        super().__init__(int(sum(math.prod(s) for s in self.shapes)), dtype, device)
        self.x = self._layout(x.to(device=device, dtype=dtype))
        self.y = y.to(device=device, dtype=torch.long)
        self.N = int(x.shape[0])
        self.batch_size = max(1, int(batch_size))
        self.chunk = max(1, int(chunk))
        if self.cpu_f64:
            self.chunk = min(self.chunk, CPU_CHUNK)
        self.progress = progress

    # ------------------------------------------------------------------ helpers
    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in channels-last memory format where that pays (4-D, CPU float64), else as is;
        the values and the logical (row-major) indexing are unchanged."""
        if self.cpu_f64 and t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        return t

    def _rows(self, m: int) -> int:
        """Samples per pass for a chunk of m directions (see ``batch_size``)."""
        if self.cpu_f64:
            return max(1, min(self.batch_size, PASS_ROWS // max(1, m)))
        return self.batch_size

    def _batch_fit(self, theta: dict[str, torch.Tensor], xb: torch.Tensor,
                   yb: torch.Tensor) -> torch.Tensor:
        """|B|/N · fit over the batch = the batch's share of the full-set fit."""
        state = {**self.frozen, **theta, **self.buffers}
        z = functional_call(self.model, state, (xb,))
        return fit_term(z, yb, self.loss) * (xb.shape[0] / self.N)

    def _eval(self) -> contextlib.AbstractContextManager:
        return eval_mode(self.model)

    # ------------------------------------------------------------------ products
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V for V of shape (dim, m), in ``self.dtype``."""
        self._check_block(V)
        V = V.to(device=self.device, dtype=self.dtype)
        out = torch.zeros_like(V)
        with self._eval():
            for c in range(0, V.shape[1], self.chunk):
                block = unflatten(V[:, c : c + self.chunk], self.shapes)  # (m, *shape) each
                tang = {n: t.contiguous() for n, t in zip(self.names, block, strict=True)}
                acc = None
                rows = self._rows(block[0].shape[0])
                for a in range(0, self.N, rows):
                    xb, yb = self.x[a : a + rows], self.y[a : a + rows]

                    def g(theta: dict[str, torch.Tensor], xb: torch.Tensor = xb,
                          yb: torch.Tensor = yb) -> dict[str, torch.Tensor]:
                        return grad(self._batch_fit)(theta, xb, yb)

                    def hvp(t: dict[str, torch.Tensor], g=g) -> dict[str, torch.Tensor]:
                        return jvp(g, (self.theta,), (t,))[1]

                    part = vmap(hvp)(tang)
                    flat = torch.cat([part[n].reshape(part[n].shape[0], -1)
                                      for n in self.names], dim=1)
                    acc = flat if acc is None else acc + flat
                out[:, c : c + self.chunk] = acc.T
                self.matvecs += min(self.chunk, V.shape[1] - c)
                if self.progress:
                    self.progress(self.matvecs)
        return out
