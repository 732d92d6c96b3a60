"""Architectures a user's state dict can be loaded into (docs/inspect.md, docs/design.md §8.1).

Every architecture is seen the same way by the inspection: a **stem** that maps an input batch
to rows z_0 (and, on the way, named intermediate representations worth a collapse measurement),
followed by a **chain of linear layers** (W_1, b_1), …, (W_M, b_M) with an activation σ between
consecutive ones:

    z_1 = W_1 z_0 + b_1,   z_{j+1} = W_{j+1} σ(z_j) + b_{j+1},   logits = z_M.

The **head** of ``--head H`` is the last H layers of the chain; whatever enters it plays the
role of the UFM's features H_1. Names and the registry:

* ``mlp:D0-D1-…-K`` — a plain ``nn.Sequential(Linear(D0, D1), ReLU(), …, Linear(·, K))`` with
  exactly Sequential's state-dict keys (``0.weight``, ``0.bias``, ``2.weight``, …); inputs are
  flattened; the stem is the flattening (its output, the raw input, is not a feature layer).
* ``resnet20`` (linear head) and ``resnet20:relu`` — :class:`dufm_core.networks.RealNetwork` as
  trained here (keys ``backbone.*``, ``head_weights.0``, …, bias-free head); the input channels,
  the base width and the head widths are read from the file's shapes.
* ``resnet18`` — the CIFAR ResNet-18 (3×3 stem convolution with 64 channels and no max-pool,
  four stages of two basic blocks with 64, 128, 256, 512 channels, 1×1 convolution + BatchNorm
  shortcuts where the shape changes, global average pooling, ``linear`` to K classes), with the
  key names of the widely used CIFAR implementation (``conv1``, ``bn1``, ``layer1.0.conv1``, …,
  ``layer2.0.shortcut.0``, ``linear``); K and the input channels come from the file.

The free sizes of an architecture are read from the *declared* shapes of a file (no tensor data
needed), then :meth:`Architecture.expected` lists every tensor the architecture has, so that a
file whose names or shapes differ is refused before anything is allocated; :meth:`build` makes
the module on the ``meta`` device, to be filled by ``load_state_dict(assign=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dufm_core.networks import RealNetwork

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ArchitectureError",
    "Inspectable",
    "parse_architecture",
]

Shapes = Mapping[str, tuple[int, ...]]
Rep = tuple[str, torch.Tensor]  # a named representation, rows (batch, d)


class ArchitectureError(ValueError):
    """An unknown architecture name, or a file whose tensors do not fit the architecture."""


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Rows of a representation: global average pooling of maps, flattening of anything else."""
    return x.mean(dim=(2, 3)) if x.ndim == 4 else x.reshape(x.shape[0], -1)


class Inspectable(nn.Module):
    """A classifier as the inspection sees it (module docstring): ``stem(x)`` gives (z_0, the
    named stem representations); ``chain()`` the linear layers (W, b or None) in order;
    ``activation`` is σ between them; ``stem_is_features`` whether z_0 is a feature layer (False
    for an MLP, whose z_0 is the flattened input)."""

    activation = "relu"
    stem_is_features = True
    feature_name = "features"  # the name of z_0 as a feature layer

    def stem(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Rep]]:
        raise NotImplementedError

    def chain(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        raise NotImplementedError

    @property
    def K(self) -> int:
        """Number of classes (rows of the last linear layer)."""
        return int(self.chain()[-1][0].shape[0])

    @property
    def depth(self) -> int:
        """Number of linear layers in the chain."""
        return len(self.chain())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (batch, K)."""
        z, _ = self.stem(x)
        for j, (W, b) in enumerate(self.chain()):
            if j > 0 and self.activation == "relu":
                z = torch.relu(z)
            z = z @ W.T + (b if b is not None else 0.0)
        return z


# --------------------------------------------------------------------------- MLP
class MLP(Inspectable):
    """``nn.Sequential`` of Linear/ReLU under the name ``net``'s keys (see the module docstring);
    the state dict is the Sequential's own (no prefix)."""

    stem_is_features = False

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(dims[i], dims[i + 1]))
        self.net = nn.Sequential(*layers)

    def state_dict_prefix(self) -> str:
        return "net."

    def stem(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Rep]]:
        return x.reshape(x.shape[0], -1), []

    def chain(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(m.weight, m.bias) for m in self.net if isinstance(m, nn.Linear)]


# --------------------------------------------------------------------------- ResNet-20
class ResNet20Classifier(Inspectable):
    """:class:`~dufm_core.networks.RealNetwork` seen as an inspectable classifier; the stem
    reports the pooled output of each of its three stages (the last is h(x))."""

    feature_name = "stage3 = h(x)"

    def __init__(self, net: RealNetwork) -> None:
        super().__init__()
        self.net = net
        self.activation = net.activation

    def state_dict_prefix(self) -> str:
        return "net."

    def stem(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Rep]]:
        b = self.net.backbone
        out = torch.relu(b.bn(b.conv(x)))
        reps = []
        for i, stage in enumerate(b.stages):
            out = stage(out)
            reps.append((f"stage{i + 1}", _pool(out)))
        return reps[-1][1], reps[:-1]

    def chain(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(W, None) for W in self.net.head_weights]


# --------------------------------------------------------------------------- ResNet-18
class _Block18(nn.Module):
    """The basic block of the CIFAR ResNet-18: conv–BN–ReLU–conv–BN plus a shortcut (identity,
    or a 1×1 strided convolution with BatchNorm when the shape changes), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(Inspectable):
    """The CIFAR ResNet-18 (module docstring); ``width`` scales the stages (64 in ResNet-18;
    smaller values exist for tests). The stem reports the pooled output of each stage."""

    feature_name = "layer4 (pooled)"

    def __init__(self, in_channels: int, K: int, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_ch = width
        for i, mult in enumerate((1, 2, 4, 8)):
            out_ch = width * mult
            blocks = [_Block18(in_ch, out_ch, 1 if i == 0 else 2), _Block18(out_ch, out_ch, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.linear = nn.Linear(in_ch, K)

    def state_dict_prefix(self) -> str:
        return ""

    def stem(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Rep]]:
        out = torch.relu(self.bn1(self.conv1(x)))
        reps = []
        for i in range(4):
            out = getattr(self, f"layer{i + 1}")(out)
            reps.append((f"layer{i + 1}", _pool(out)))
        return reps[-1][1], reps[:-1]

    def chain(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(self.linear.weight, self.linear.bias)]


# --------------------------------------------------------------------------- registry
def _shape(shapes: Shapes, name: str, ndim: int, arch: str) -> tuple[int, ...]:
    """The declared shape of ``name``, which ``arch`` needs to size itself."""
    if name not in shapes:
        raise ArchitectureError(f"the file has no tensor {name!r}, which {arch} needs "
                                "(is this the right --arch?)")
    shape = tuple(shapes[name])
    if len(shape) != ndim:
        raise ArchitectureError(f"tensor {name!r} has shape {list(shape)}; {arch} needs "
                                f"{ndim} dimensions there")
    return shape


@dataclass(frozen=True)
class Architecture:
    """A parsed architecture name: ``kind`` (mlp | resnet20 | resnet18), the MLP's dims, the
    ResNet-20 head activation. :meth:`sizes` reads the free sizes from a file's declared shapes,
    :meth:`build` makes the module (on the meta device by default), :meth:`expected` gives its
    state-dict shapes (the keys of the user's file)."""

    name: str
    kind: str
    dims: tuple[int, ...] = ()
    activation: str = "linear"

    def build(self, shapes: Shapes, device: str = "meta") -> Inspectable:
        """The module sized from ``shapes`` (:meth:`sizes`), built on ``device``."""
        with torch.device(device):
            if self.kind == "mlp":
                return MLP(self.dims)
            if self.kind == "resnet20":
                conv = _shape(shapes, "backbone.conv.weight", 4, self.name)
                n_head = sum(1 for k in shapes if k.startswith("head_weights."))
                if n_head == 0:
                    raise ArchitectureError(f"the file has no head_weights.0, which {self.name} "
                                            "needs (is this the right --arch?)")
                dims = [4 * conv[0]] + [
                    _shape(shapes, f"head_weights.{i}", 2, self.name)[0] for i in range(n_head)]
                act = self.activation if n_head > 1 else "linear"
                net = RealNetwork(conv[1], dims, act, base_width=conv[0], device=device)
                return ResNet20Classifier(net)
            conv = _shape(shapes, "conv1.weight", 4, self.name)
            K = _shape(shapes, "linear.weight", 2, self.name)[0]
            return ResNet18(conv[1], K, conv[0])

    def expected(self, model: Inspectable) -> dict[str, tuple[int, ...]]:
        """Every tensor of the user's state dict for ``model``: name → shape."""
        prefix = model.state_dict_prefix()  # type: ignore[attr-defined]
        return {k.removeprefix(prefix): tuple(v.shape) for k, v in model.state_dict().items()}

    def load(self, model: Inspectable, state: Mapping[str, torch.Tensor]) -> Inspectable:
        """Fill a meta-device ``model`` with the checked tensors of ``state`` (float64)."""
        prefix = model.state_dict_prefix()  # type: ignore[attr-defined]
        full = {prefix + k: v for k, v in state.items()}
        model.load_state_dict(full, strict=True, assign=True)
        return model.double().eval()


ARCHITECTURES = ("mlp:D0-D1-…-K", "resnet20", "resnet20:relu", "resnet18")


def parse_architecture(name: str) -> Architecture:
    """The :class:`Architecture` of ``name``; ArchitectureError (one line listing the known
    names) for anything else."""
    text = (name or "").strip()
    known = f"known: {', '.join(ARCHITECTURES)}"
    if text.startswith("mlp:"):
        parts = text[4:].split("-")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            dims = ()
        if len(dims) < 2 or not all(1 <= d <= 1_000_000 for d in dims):
            raise ArchitectureError(f"arch: {text[:60]!r} is not mlp:D0-D1-…-K with at least two "
                                    "sizes, each in [1, 1000000]")
        if dims[-1] < 2:
            raise ArchitectureError(f"arch: the last size of {text[:60]!r} is K, the number of "
                                    "classes: at least 2")
        return Architecture(text, "mlp", dims)
    if text in ("resnet20", "resnet20:linear"):
        return Architecture(text, "resnet20", activation="linear")
    if text == "resnet20:relu":
        return Architecture(text, "resnet20", activation="relu")
    if text == "resnet18":
        return Architecture(text, "resnet18")
    raise ArchitectureError(f"arch: unknown architecture {text[:60]!r}; {known}")
