"""The deep unconstrained feature model (docs/theory.md §1) and its initialisations.

``DeepUFM`` holds free features H_1 (d_1 × N) and weights W_1..W_L (W_l of shape d_{l+1} × d_l,
d_{L+1} = K), no bias. The linear model computes Z = W_L ⋯ W_1 H_1; the ReLU model applies
σ = ReLU after W_1..W_{L-1} (never to H_1, never after W_L):

    H_2 = W_1 H_1,  H̃_l = σ(H_l) (l = 2..L),  H_{l+1} = W_l H̃_l,  Z = H_{L+1}.

Columns are ordered by class (n samples of class 1, then class 2, ...), so the labels are
``arange(K).repeat_interleave(n)``. The contract of docs/design.md §3: ``forward(idx)`` returns the
logits of the samples ``idx`` as an (len(idx), K) tensor; ``.features`` is H_1; ``.weights`` are
W_1..W_L in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dufm_core.config import RunConfig


@dataclass
class LayerFeatures:
    """Per-layer features of every sample: ``pre[l-1]`` = H_l (l = 1..L+1, the last is Z) and
    ``post[l-1]`` = what W_l multiplies (H_1, then σ(H_l) in the ReLU model; equal to ``pre``
    for the linear model). Shapes (d_l, N)."""

    pre: list[torch.Tensor]
    post: list[torch.Tensor]


def class_labels(K: int, n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Class index of every column: n zeros, n ones, ..., (N,) LongTensor."""
    return torch.arange(K, device=device).repeat_interleave(n)


class DeepUFM(nn.Module):
    """Deep UFM with free features; see the module docstring for the forward map."""

    def __init__(
        self,
        K: int,
        n: int,
        dims: list[int],
        activation: str = "linear",
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        """``dims`` = [d_1, ..., d_L, K]: the feature dimension entering each layer, then K."""
        super().__init__()
        if dims[-1] != K:
            raise ValueError(f"dims must end with K = {K} (got {dims})")
        if activation not in ("linear", "relu"):
            raise ValueError(f"activation must be linear | relu (got {activation!r})")
        self.K, self.n, self.N = K, n, K * n
        self.dims = list(dims)
        self.depth = len(dims) - 1
        self.activation = activation
        kw = {"dtype": dtype, "device": device}
        self.features = nn.Parameter(torch.zeros(dims[0], self.N, **kw))
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(dims[i + 1], dims[i], **kw)) for i in range(self.depth)]
        )
        self.register_buffer("labels", class_labels(K, n, device), persistent=False)

    @classmethod
    def from_config(cls, cfg: RunConfig, device: torch.device | str | None = None) -> DeepUFM:
        """An all-zero model with the shapes of ``cfg``; call an ``init_*`` function next."""
        dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        return cls(cfg.K, cfg.n, cfg.dims, cfg.activation, dtype=dtype, device=device)

    # ------------------------------------------------------------------ forward
    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.activation == "relu" else x

    def forward(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of samples ``idx`` (all N when None), shape (len(idx), K)."""
        h = self.features if idx is None else self.features[:, idx]
        for i, W in enumerate(self.weights):
            if i > 0:
                h = self._act(h)
            h = W @ h
        return h.T

    def layer_features(self) -> LayerFeatures:
        """All H_l (pre-activation) and the inputs of every W_l (post-activation), no grad."""
        with torch.no_grad():
            pre = [self.features.detach()]
            post = [self.features.detach()]
            for i, W in enumerate(self.weights):
                h = W.detach() @ post[-1]
                pre.append(h)
                if i < self.depth - 1:
                    post.append(self._act(h))
            post.append(pre[-1])
            return LayerFeatures(pre=pre, post=post)

    # ------------------------------------------------------------------ loss
    def targets(self) -> torch.Tensor:
        """One-hot label matrix Y = I_K ⊗ 1_nᵀ of shape (K, N)."""
        eye = torch.eye(self.K, dtype=self.features.dtype, device=self.features.device)
        return eye.repeat_interleave(self.n, dim=1)

    def reg_term(self, lam_w: list[float], lam_h: float) -> torch.Tensor:
        """Σ_l (λ_{W_l}/2)‖W_l‖_F² + (λ_H/2)‖H_1‖_F²."""
        reg = 0.5 * lam_h * self.features.square().sum()
        for lam, W in zip(lam_w, self.weights, strict=True):
            reg = reg + 0.5 * lam * W.square().sum()
        return reg


def fit_term(logits: torch.Tensor, labels: torch.Tensor, loss: str) -> torch.Tensor:
    """Fit term of docs/theory.md §1.3/§1.5 for logits (N, K): MSE is ‖Z − Y‖²/(2N), CE is the mean
    cross-entropy."""
    if loss == "mse":
        onehot = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return (logits - onehot).square().sum() / (2 * logits.shape[0])
    return torch.nn.functional.cross_entropy(logits, labels)


# ---------------------------------------------------------------------- initialisation
def init_random(model: DeepUFM, scale: float, generator: torch.Generator) -> None:
    """i.i.d. N(0, scale²/d_in) for every W_l and N(0, scale²/d_1) for H_1 (the reproduction's
    N(0, 1/d) at scale 1). Drawn on the CPU so a seed gives the same start on every device."""
    with torch.no_grad():
        for p in [model.features, *model.weights]:
            fan_in = p.shape[1] if p is not model.features else p.shape[0]
            draw = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.copy_((draw * (scale / fan_in**0.5)).to(p.dtype))


def _orthonormal_frame(d: int, K: int, generator: torch.Generator) -> torch.Tensor:
    """A random d×K matrix with orthonormal columns (QR of a Gaussian, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(d, K, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def _coordinate_frame(d: int, K: int, generator: torch.Generator) -> torch.Tensor:
    """K distinct random standard basis vectors of R^d (non-negative, disjoint supports)."""
    cols = torch.randperm(d, generator=generator)[:K]
    frame = torch.zeros(d, K, dtype=torch.float64)
    frame[cols, torch.arange(K)] = 1.0
    return frame


def optimum_factors(
    cfg: RunConfig, generator: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Closed-form collapsed point (float64, CPU) for ``cfg``: (H_1, [W_1..W_L]).

    * MSE (linear or ReLU): the global minimiser of docs/theory.md §3.3 — orthonormal K-frames U_l,
      H_1 = s·U_1 ⊗ 1_nᵀ, W_l = σ_l U_{l+1}U_lᵀ, U_{L+1} = I_K. For ReLU all U_l are coordinate
      frames (non-negative, disjoint supports) so every ReLU acts as the identity (§4.6) and the
      zero pre-activations are exact zeros.
    * CE: the DNC point with simplex-ETF means at the stationary scale α* of docs/theory.md §4.7:
      every factor has K−1 singular values x = (α√n)^{1/(L+1)}; W_l = x·U_{l+1} S U_lᵀ,
      M_1 = (x/√n)·U_1 S with S = I − 11ᵀ/K (so Z = α(e_c − 1/K) per class).
    Above λ_crit (MSE) the optimum is zero, and so is what this returns.
    """
    from dufm_core import theory

    K, n, L = cfg.K, cfg.n, cfg.depth
    dims = cfg.dims
    # ReLU: coordinate frames everywhere (H_1 too), so that every pre-activation that should be
    # exactly 0 at the kink is exactly 0 (a general frame for H_1 leaves ±1e-17 there, which
    # autograd's σ'(0) = 0 convention would read as "on" or "off" at random)
    maker = _coordinate_frame if cfg.activation == "relu" else _orthonormal_frame
    frames = [maker(dims[l], K, generator) for l in range(L)]
    frames.append(torch.eye(K, dtype=torch.float64))
    if cfg.loss == "mse":
        pred = theory.predict(K, n, cfg.lam_ws, cfg.lam_h)
        means = frames[0] * pred.s
        weights = [sig * frames[l + 1] @ frames[l].T for l, sig in enumerate(pred.sigma)]
    else:
        lam = cfg.lam_ws
        if len(set(lam)) != 1 or lam[0] != cfg.lam_h:
            raise ValueError("init=optimum with loss=ce needs one common λ (λ_W = λ_H)")
        alpha = theory.ce_optimal_alpha(K, n, L, lam[0])
        x = (alpha * n**0.5) ** (1.0 / (L + 1))
        S = torch.eye(K, dtype=torch.float64) - 1.0 / K
        means = (x / n**0.5) * frames[0] @ S
        weights = [x * frames[l + 1] @ S @ frames[l].T for l in range(L)]
    H1 = means.repeat_interleave(n, dim=1)  # column (c, i) = μ_c
    return H1, weights


def init_optimum(model: DeepUFM, cfg: RunConfig, generator: torch.Generator) -> None:
    """Set the model to the closed-form collapsed point plus N(0, init_noise²) noise per entry."""
    H1, weights = optimum_factors(cfg, generator)
    with torch.no_grad():
        for p, value in zip([model.features, *model.weights], [H1, *weights], strict=True):
            if cfg.init_noise > 0:
                value = value + cfg.init_noise * torch.randn(
                    value.shape, generator=generator, dtype=torch.float64
                )
            p.copy_(value.to(p.dtype))


def build_model(cfg: RunConfig, device: torch.device | str | None = None) -> DeepUFM:
    """Model for ``cfg`` with its initialisation (seeded; identical on every device)."""
    model = DeepUFM.from_config(cfg, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.init == "optimum":
        init_optimum(model, cfg, gen)
    else:
        init_random(model, cfg.init_scale, gen)
    return model
