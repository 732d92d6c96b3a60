"""Real networks for docs/theory.md §5.3: a CIFAR-style ResNet-20 feature map h(x) and a head
W_1..W_L, plus a "head view" that the UFM analyses can run on.

**Backbone** (:class:`ResNet20`; He et al. 2016, §4.2, the CIFAR-10 ResNet with n = 3): a 3×3
convolution to 16 channels, BatchNorm, ReLU; three stages of three basic blocks with 16, 32 and
64 channels (the first block of stages 2 and 3 has stride 2); global average pooling. Every
convolution is bias-free and followed by BatchNorm. Shortcuts are **option A** of the paper:
the identity, and where the shape changes, the input subsampled with stride 2 and padded with
zero channels — parameter-free, as in the original 0.27 M-parameter ResNet-20. The output
h(x) ∈ R^64 (after the last block's ReLU, so h(x) ≥ 0) is what the head sees. Global pooling
makes the network independent of the input size: 8×8 digits (feature maps 8, 4, 2), 28×28
MNIST and 32×32 CIFAR-10 all work; the input channels follow the data set.

**Head**: L bias-free matrices W_l of shape (d_{l+1}, d_l) with d_1 = 64 (the feature
dimension: no projection layer is inserted; a config's ``width`` must start with 64, and the
hidden widths d_2..d_L may differ) and d_{L+1} = K. As in the ReLU UFM (docs/theory.md §1.2) σ is
applied after W_1..W_{L−1}, never to h(x) and never after W_L:

    z = W_L σ(W_{L−1} ⋯ σ(W_1 h(x)))      (σ = identity for a linear head)

**Layouts.** ``features(x)`` returns h(x) for a batch as rows, shape (batch, 64), the usual
PyTorch layout; :func:`extract_features` returns the UFM layout H_1 of shape (d_1, N), one
column per training sample, class-ordered.

**Head view.** :class:`HeadView` is a :class:`~dufm_core.models.DeepUFM` whose free features
are the network's extracted features H_1 (BatchNorm in eval mode, i.e. running statistics, over
the whole training set) and whose weights are copies of the head's W_l. Everything that works on
a DeepUFM (layer features, class means, NC metrics, Kronecker and autograd layer Hessians,
alignment, gradient coefficients) therefore works on the head of a trained network. For the
head parameters its fit term and Hessians are exactly those of the real network over the
training set, because h(x) does not depend on W_l.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from dufm_core.config import FEATURE_DIM, RunConfig
from dufm_core.models import DeepUFM, class_labels

__all__ = [
    "BasicBlock",
    "HeadView",
    "RealNetwork",
    "ResNet20",
    "build_network",
    "eval_mode",
    "extract_features",
]

BLOCKS_PER_STAGE = 3  # ResNet-20: 6·3 + 2 = 20 weighted layers


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers with a ReLU between them, an option-A shortcut, and a ReLU
    after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.stride = stride
        self.pad = out_ch - in_ch  # zero channels appended by the option-A shortcut

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, or stride-2 subsampling plus zero channels (no parameters)."""
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """The ResNet-20 feature map h: (batch, C, H, W) → (batch, 4·base_width) (64 by default).

    ``base_width`` (16 in ResNet-20) scales every stage; it exists for tests of tiny networks,
    run configs always use 16.
    """

    def __init__(self, in_channels: int, base_width: int = 16) -> None:
        super().__init__()
        w = base_width
        self.conv = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w)
        stages = []
        in_ch = w
        for i, out_ch in enumerate((w, 2 * w, 4 * w)):
            blocks = []
            for j in range(BLOCKS_PER_STAGE):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_ch, out_ch, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = 4 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.conv(x)))
        out = self.stages(out)
        return out.mean(dim=(2, 3))


class RealNetwork(nn.Module):
    """ResNet-20 feature map followed by the head W_1..W_L (see the module docstring).

    Attributes mirror :class:`~dufm_core.models.DeepUFM` where they make sense: ``K``,
    ``dims`` = [d_1, …, d_L, K], ``depth`` = L, ``activation``; ``head_weights`` (also
    available as ``weights``) are W_1..W_L in order, W_l of shape (d_{l+1}, d_l).
    """

    def __init__(
        self,
        in_channels: int,
        dims: Sequence[int],
        activation: str = "linear",
        base_width: int = 16,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("linear", "relu"):
            raise ValueError(f"activation must be linear | relu (got {activation!r})")
        self.backbone = ResNet20(in_channels, base_width)
        dims = [int(d) for d in dims]
        if dims[0] != self.backbone.feature_dim:
            raise ValueError(
                f"dims must start with the feature dimension {self.backbone.feature_dim} "
                f"(got {dims})"
            )
        self.dims = dims
        self.K = dims[-1]
        self.depth = len(dims) - 1
        self.activation = activation
        self.in_channels = in_channels
        self.head_weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(dims[i + 1], dims[i])) for i in range(self.depth)]
        )
        self.to(dtype=dtype, device=device)

    @property
    def weights(self) -> nn.ParameterList:
        """W_1..W_L (the same Parameters as ``head_weights``; DeepUFM's name)."""
        return self.head_weights

    @property
    def feature_dim(self) -> int:
        """d_1, the dimension of h(x)."""
        return self.backbone.feature_dim

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the feature map (convolutions and BatchNorm scales/shifts)."""
        return list(self.backbone.parameters())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """h(x) for a batch of inputs (batch, C, H, W), as rows: shape (batch, d_1).

        BatchNorm uses batch statistics in training mode and running statistics in eval mode,
        as usual; wrap the call in :func:`eval_mode` for the features of a trained network.
        """
        return self.backbone(x)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits (batch, K) of features h given as rows (batch, d_1)."""
        z = h
        for i, W in enumerate(self.head_weights):
            if i > 0 and self.activation == "relu":
                z = torch.relu(z)
            z = z @ W.T
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (batch, K) of inputs (batch, C, H, W)."""
        return self.head(self.features(x))


# --------------------------------------------------------------------------- construction
def init_network(model: RealNetwork, init_scale: float, generator: torch.Generator) -> None:
    """Seeded initialisation, drawn in float64 on the CPU so a seed gives the same start on
    every device and dtype: convolutions He-normal N(0, 2/fan_in) (fan_in = C_in·3·3),
    BatchNorm scale 1 and shift 0, head W_l ~ N(0, init_scale²/d_l) (the UFM's init_random)."""
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                draw = torch.randn(m.weight.shape, generator=generator, dtype=torch.float64)
                m.weight.copy_((draw * (2.0 / fan_in) ** 0.5).to(m.weight.dtype))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.reset_running_stats()
        for W in model.head_weights:
            draw = torch.randn(W.shape, generator=generator, dtype=torch.float64)
            W.copy_((draw * (init_scale / W.shape[1] ** 0.5)).to(W.dtype))


def build_network(
    cfg: RunConfig, device: torch.device | str | None = None, init: bool = True
) -> RealNetwork:
    """The network of a ``model = "resnet20"`` config: input channels from ``cfg.dataset``,
    head dims ``cfg.dims``, dtype ``cfg.dtype``; seeded with ``cfg.seed`` unless ``init`` is
    False (then the tensors are left as PyTorch made them, e.g. to load a state dict)."""
    from dufm_core.data import dataset_info

    if cfg.model != "resnet20":
        raise ValueError(f"build_network needs model resnet20 (got {cfg.model!r})")
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    model = RealNetwork(
        dataset_info(cfg.dataset).channels,
        cfg.dims,
        cfg.activation,
        base_width=FEATURE_DIM // 4,
        dtype=dtype,
        device=device,
    )
    if init:
        init_network(model, cfg.init_scale, torch.Generator().manual_seed(cfg.seed))
    return model


# --------------------------------------------------------------------------- features
@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (BatchNorm uses its running statistics) for the block, then
    restore every submodule's previous training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _inputs_and_labels(
    data: object, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = getattr(data, "x_train", data)
    if labels is None:
        labels = getattr(data, "y_train", None)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("data must be a RealData or an input tensor of shape (N, C, H, W)")
    return x, labels


@torch.no_grad()
def extract_features(
    model: RealNetwork,
    data: object,
    batch_size: int = 1024,
    labels: torch.Tensor | None = None,
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """H_1 = [h(x_1) … h(x_N)] of shape (d_1, N) over the whole training set, and its labels.

    ``data`` is a :class:`~dufm_core.data.RealData` (its class-ordered training set is used)
    or an input tensor (N, C, H, W) with ``labels`` given. BatchNorm is in eval mode (running
    statistics), so the result does not depend on ``batch_size``, which only bounds memory.
    The features have the model's dtype and device (``amp``: bf16 autocast on CUDA, then cast
    back).
    """
    x, labels = _inputs_and_labels(data, labels)
    param = next(model.parameters())
    out = []
    step = max(1, int(batch_size))
    with eval_mode(model):
        for a in range(0, x.shape[0], step):
            xb = x[a : a + step].to(device=param.device, dtype=param.dtype)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                h = model.features(xb)
            out.append(h.to(param.dtype))
    H = torch.cat(out).T.contiguous() if out else x.new_zeros(model.feature_dim, 0)
    return H, labels


class HeadView(DeepUFM):
    """The head of a real network as a deep UFM: ``.features`` = H_1 (d_1 × N, the extracted
    features, BatchNorm in eval mode), ``.weights`` = copies of W_1..W_L, ``.labels`` =
    ``arange(K).repeat_interleave(n)``; ``forward(idx)``, ``layer_features()``, ``targets()``
    as for any DeepUFM (see :mod:`dufm_core.models`).

    The training set must be class-ordered with n samples per class (as
    :func:`~dufm_core.data.load_data` makes it). The view is a snapshot: it does not follow
    later changes of the network. ``bn_mode`` records how the features were computed.

    Regularisation: the inherited ``reg_term`` is the UFM's (λ_H/2)‖H_1‖_F², whereas a
    real-network run penalises (λ_H/2)·mean_i ‖h(x_i)‖² = (λ_H/(2N))‖H_1‖_F²; compare with
    UFM predictions at λ_H,UFM = λ_H / N (:meth:`ufm_lam_h`). Head-weight Hessians and
    gradients of the fit term are unaffected.
    """

    bn_mode = "eval (running statistics)"

    def __init__(
        self,
        features: torch.Tensor,
        weights: Sequence[torch.Tensor],
        labels: torch.Tensor,
        activation: str = "linear",
    ) -> None:
        if features.ndim != 2 or not weights:
            raise ValueError("features must be (d_1, N) and weights non-empty")
        K = int(weights[-1].shape[0])
        N = int(features.shape[1])
        n = N // K if K else 0
        labels = labels.to(device=features.device, dtype=torch.long)
        if (
            n * K != N
            or labels.shape != (N,)
            or not torch.equal(labels, class_labels(K, n, features.device))
        ):
            raise ValueError(
                f"HeadView needs class-ordered labels with the same count per class "
                f"(arange({K}).repeat_interleave(n)) for N = {N} features"
            )
        dims = [int(features.shape[0]), *[int(w.shape[0]) for w in weights]]
        for i, w in enumerate(weights):
            if int(w.shape[1]) != dims[i]:
                raise ValueError(f"W_{i + 1} has shape {tuple(w.shape)}; expected (*, {dims[i]})")
        super().__init__(K, n, dims, activation, dtype=features.dtype, device=features.device)
        with torch.no_grad():
            self.features.copy_(features)
            for p, w in zip(self.weights, weights, strict=True):
                p.copy_(w.to(device=features.device, dtype=features.dtype))

    @classmethod
    def from_network(
        cls,
        model: RealNetwork,
        data: object,
        batch_size: int = 1024,
        dtype: torch.dtype | None = None,
        labels: torch.Tensor | None = None,
    ) -> HeadView:
        """Extract H_1 over ``data``'s training set (eval-mode BatchNorm) and wrap it with
        copies of the head weights; ``dtype`` (e.g. torch.float64 for analyses) converts both."""
        H, y = extract_features(model, data, batch_size, labels)
        if y is None:
            raise ValueError("labels are needed (give a RealData or labels=)")
        weights = [w.detach() for w in model.head_weights]
        if dtype is not None:
            H = H.to(dtype)
            weights = [w.to(dtype) for w in weights]
        return cls(H, weights, y, model.activation)

    def ufm_lam_h(self, lam_h: float) -> float:
        """The UFM λ_H equivalent to a real-network λ_H on the mean squared feature norm."""
        return float(lam_h) / self.N
