"""The report of a user's classifier (docs/design.md §8.1): the §5 schema on the head's layers,
plus collapse per feature layer on train and test data, accuracy and each head layer's weight
spectrum.

**Head analysis.** The head's layers are analysed by the same code as a real network's head
(:func:`dufm_core.analysis.analyze_model` on a :class:`~dufm_core.networks.HeadView`): the
fixed head input of every training sample plays the role of H_1, so the fit-term Hessians of
the head weights, their alignment, gradient coefficients and Papyan's split are exactly the
network's over those samples. A head with biases uses :class:`BiasedHeadView`: the biases are
held fixed (buffers, not parameters), so the layer Hessians are still over one weight matrix
at a time, and the bias-free closed-form operator is never used for it. The UFM's predictions
are those of the same K, depth and λ with λ_H,UFM = λ_H/N, as for ResNet-20 runs
(:mod:`dufm_core.network_report`); they assume a bias-free head, which the report notes.

The view needs the same number of samples in every class, in class order (a UFM's columns).
The training set is therefore sorted by class and, where the classes are unbalanced, the first
n = (smallest class count) samples of each class enter the head analysis
(``inspection.head_samples``); collapse and accuracy use every sample.

**Collapse** (``collapse.train`` / ``collapse.test``): one record per feature layer (the pooled
output of each stage of a ResNet, the input of every linear layer after the first of an MLP,
the head's input and its inner layers), with NC1 (Papyan's tr(Σ_W Σ_B^†)/K), NC2 (the Gram of
the class means against the frame: the simplex ETF, or the orthogonal frame for a bias-free MSE
head), NC3 (against the next linear layer's weight, where it is one), NC4 (agreement of the
network's prediction with the nearest *training* class centre) and CDNV; each set is measured
with its own class means (NC4 excepted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dufm_core import collapse, resources, weights
from dufm_core.analysis import _f, analyze_model
from dufm_core.config import RunConfig
from dufm_core.curvature.spectrum import DENSE_MAX
from dufm_core.inspection.architectures import Inspectable
from dufm_core.models import LayerFeatures
from dufm_core.networks import HeadView
from dufm_core.report_types import FullHessian, Report

__all__ = ["BiasedHeadView", "ChainPass", "inspect_features", "inspect_model"]

Progress = Callable[[str, float], None] | None
Head = list[tuple[torch.Tensor, torch.Tensor | None]]
BATCH = 512  # samples per forward pass through the stem (memory only)
LAM_DEFAULT = 5e-4  # λ_W and λ_H the predictions assume when the user gives none


class BiasedHeadView(HeadView):
    """A :class:`HeadView` whose layers add fixed biases: H_{l+1} = W_l H̃_l + b_l 1ᵀ. The biases
    are buffers, so every Hessian and gradient is over the weights only; ``has_biases`` keeps
    the bias-free closed-form operator away
    (:func:`dufm_core.curvature.spectrum.hessian_operator`)."""

    has_biases = True

    def __init__(self, features: torch.Tensor, head: Head, labels: torch.Tensor,
                 activation: str) -> None:
        super().__init__(features, [W for W, _ in head], labels, activation)
        for i, (W, b) in enumerate(head):
            value = (b if b is not None else W.new_zeros(W.shape[0])).to(features)
            self.register_buffer(f"bias{i}", value.detach().clone().reshape(-1, 1))

    def _bias(self, i: int) -> torch.Tensor:
        return getattr(self, f"bias{i}")

    def forward(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features if idx is None else self.features[:, idx]
        for i, W in enumerate(self.weights):
            if i > 0:
                h = self._act(h)
            h = W @ h + self._bias(i)
        return h.T

    def layer_features(self) -> LayerFeatures:
        with torch.no_grad():
            pre, post = [self.features.detach()], [self.features.detach()]
            for i, W in enumerate(self.weights):
                h = W.detach() @ post[-1] + self._bias(i)
                pre.append(h)
                if i < self.depth - 1:
                    post.append(self._act(h))
            post.append(pre[-1])
            return LayerFeatures(pre=pre, post=post)


# --------------------------------------------------------------------------- forward passes
@dataclass
class ChainPass:
    """One data set through a classifier: ``layers`` = (name, rows, next weight or None) for
    every feature layer in order; ``head_input`` rows (N, d_1); ``logits`` (N, K)."""

    layers: list[tuple[str, torch.Tensor, torch.Tensor | None]]
    head_input: torch.Tensor
    logits: torch.Tensor


def chain_pass(z0: torch.Tensor, z0_name: str | None, chain: Head, head: int, activation: str,
               stem_layers: Sequence[tuple[str, torch.Tensor]] = ()) -> ChainPass:
    """The linear chain on rows z0 (module docstring of :mod:`.architectures`); ``z0_name``
    None when z0 is not a feature layer (an MLP's flattened input)."""
    M = len(chain)
    layers: list[tuple[str, torch.Tensor, torch.Tensor | None]] = [
        (name, rows, None) for name, rows in stem_layers]
    z = z0
    head_input = z0
    for j, (W, b) in enumerate(chain):
        if j > 0 and activation == "relu":
            z = torch.relu(z)
        name = z0_name if j == 0 else f"linear{j} output" + (" (ReLU)" if activation == "relu"
                                                              else "")
        if name is not None:
            tag = f" = head input of W{j - (M - head) + 1}" if j >= M - head else ""
            layers.append((name + tag, z, W.detach()))
        if j == M - head:
            head_input = z
        z = z @ W.T + (b if b is not None else 0.0)
    return ChainPass(layers, head_input, z)


@torch.no_grad()
def model_pass(model: Inspectable, x: torch.Tensor, head: int, dtype: torch.dtype,
               device: str = "cpu") -> ChainPass:
    """``x`` through ``model`` in batches (eval mode: BatchNorm's running statistics)."""
    stems, reps = [], []
    model = model.to(device=device, dtype=dtype).eval()
    for a in range(0, x.shape[0], BATCH):
        z0, stem = model.stem(x[a:a + BATCH].to(device=device, dtype=dtype))
        stems.append(z0.double().cpu())
        reps.append([r.double().cpu() for _, r in stem])
    names = [n for n, _ in model.stem(x[:1].to(device=device, dtype=dtype))[1]]
    z0 = torch.cat(stems)
    stem_layers = [(n, torch.cat([r[i] for r in reps])) for i, n in enumerate(names)]
    chain = [(W.detach().double().cpu(), None if b is None else b.detach().double().cpu())
             for W, b in model.chain()]
    z0_name = model.feature_name if model.stem_is_features else None
    return chain_pass(z0, z0_name, chain, head, model.activation, stem_layers)


# --------------------------------------------------------------------------- collapse
def collapse_records(pass_: ChainPass, y: torch.Tensor, K: int, frame: str,
                     train_means: list[torch.Tensor] | None) -> list[dict[str, Any]]:
    """One record per feature layer of ``pass_`` (module docstring)."""
    pred = pass_.logits.argmax(dim=1)
    out = []
    for i, (name, rows, W) in enumerate(pass_.layers):
        H = rows.T.double()
        M = collapse.class_means(H, y, K)
        centres = train_means[i] if train_means is not None else M
        out.append({
            "layer": name, "dim": int(H.shape[0]),
            "nc1": _f(collapse.nc1(H, y, K, M)["nc1"]),
            "nc2": _f(collapse.nc2(M, frame)),
            "nc3": _f(collapse.nc3(W.double(), M, frame)) if W is not None else None,
            "nc4": _f(collapse.nc4(H, pred, centres)),
            "cdnv": _f(collapse.cdnv(H, y, K)),
        })
    return out


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float | None:
    return float((logits.argmax(dim=1) == y).double().mean()) if y.numel() else None


def _balanced(y: torch.Tensor, K: int) -> tuple[torch.Tensor, int]:
    """(indices of the first n samples of each class, in class order; n = the smallest count)."""
    counts = torch.bincount(y, minlength=K)
    n = int(counts.min())
    if n == 0:
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"labels: every class 0..{K - 1} needs a training sample; "
                         f"class(es) {empty[:5]} have none")
    order = torch.argsort(y, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    idx = torch.cat([order[int(s):int(s) + n] for s in starts])
    return idx, n


# --------------------------------------------------------------------------- the report
def _check_memory(head: Head, K: int, N: int) -> None:
    """MemoryCapError (one line) when the head analysis would need more than the memory cap:
    per layer its top K² + K eigenvectors (or its dense Hessian) and the per-sample Jacobian
    rows of the Gauss–Newton split, in float64; e.g. an ImageNet head (K = 1000) is refused
    rather than left to run out of memory."""
    parts = []
    for l, (W, _) in enumerate(head, start=1):
        dim = int(W.numel())
        m = min(K * K + K, dim)
        size = dim * dim if dim <= DENSE_MAX else 3 * dim * m
        parts.append(resources.Part(f"W{l} Hessian", 8 * size, "head"))
        parts.append(resources.Part(f"W{l} Jacobian rows", 8 * N * K * int(W.shape[0]), "head"))
    resources.check(resources.MemoryEstimate("the head analysis", tuple(parts)))


def _head_report(train: ChainPass, y: torch.Tensor, head: Head, activation: str, loss: str,
                 lam_w: Sequence[float], lam_h: float, full: bool, name: str,
                 progress: Progress) -> dict[str, Any]:
    K = int(head[-1][0].shape[0])
    _check_memory(head, K, int(y.numel()))
    idx, n = _balanced(y, K)
    H1 = train.head_input[idx].T.contiguous().double()
    labels = y[idx]
    ws = [(W.double(), None if b is None else b.double()) for W, b in head]
    act = activation if len(head) > 1 else "linear"
    if any(b is not None for _, b in ws):
        view: HeadView = BiasedHeadView(H1, ws, labels, act)
    else:
        view = HeadView(H1, [W for W, _ in ws], labels, act)
    dims = view.dims
    ucfg = RunConfig(model="ufm", K=K, n=n, width=list(dims[:-1]), depth=len(head),
                     activation=act, loss=loss, lam_w=list(lam_w), lam_h=lam_h / view.N,
                     dtype="float64")
    ucfg.validate()
    report = analyze_model(view, ucfg, 0, name, full=full, full_params="weights",
                           progress=progress)
    for rec, (W, _) in zip(report["layers"], ws, strict=True):
        rec["weights_esd"] = weights.weight_esd(W, K)
    report["ufm_config"] = ucfg.to_dict()
    report["hessian"] = ("fit-term Hessian of the head layers (one weight matrix at a time, "
                         "biases held fixed) over the head's training samples")
    report["_view"] = view
    return report


def build_report(train: ChainPass, y: torch.Tensor, test: ChainPass | None, y_test: torch.Tensor,
                 head: Head, activation: str, loss: str = "mse",
                 lam_w: float | Sequence[float] | None = None, lam_h: float | None = None,
                 full: bool = False, name: str = "model", source: dict[str, Any] | None = None,
                 progress: Progress = None) -> Report:
    """The report (module docstring) from the forward passes over train (and test) data."""
    t0 = time.perf_counter()
    H = len(head)
    K = int(head[-1][0].shape[0])
    lam_ws = ([float(lam_w)] * H if isinstance(lam_w, (int, float)) else
              [LAM_DEFAULT] * H if lam_w is None else [float(v) for v in lam_w])
    if len(lam_ws) == 1:
        lam_ws = lam_ws * H
    if len(lam_ws) != H:
        raise ValueError(f"lam-w: give one value or one per head layer ({H}); got {len(lam_ws)}")
    lam_h = LAM_DEFAULT if lam_h is None else float(lam_h)
    biased = any(b is not None for _, b in head)
    frame = "orthogonal" if loss == "mse" and not biased else "etf"
    report = _head_report(train, y, head, activation, loss, lam_ws, lam_h, full, name, progress)
    view = report.pop("_view")
    train_means = [collapse.class_means(r.T.double(), y, K) for _, r, _ in train.layers]
    report["collapse"] = {"frame": frame,
                          "train": collapse_records(train, y, K, frame, None)}
    if test is not None and y_test.numel():
        report["collapse"]["test"] = collapse_records(test, y_test, K, frame, train_means)
    acc = {"train": _accuracy(train.logits, y),
           "test": _accuracy(test.logits, y_test) if test is not None else None}
    report["accuracy"] = acc
    feats = train.head_input.T.double()
    report["network"] = {
        "model": (source or {}).get("architecture", "user model"),
        "dataset": (source or {}).get("data", ""), "N": int(y.numel()), "n": view.n,
        "feature_dim": int(feats.shape[0]), "bn_mode": "eval (running statistics)",
        "lam_h_run": lam_h, "lam_h_ufm": lam_h / view.N,
        "lam_h_note": "the UFM predictions use λ_H,UFM = λ_H/N (N = the head's samples), as for "
                      "ResNet-20 runs; they assume a bias-free head",
        "backbone_reg": 0.0, "train_acc": acc["train"], "test_acc": acc["test"],
        "feature_nc1": _f(collapse.nc1(feats, y, K)["nc1"]),
        "feature_nc2": _f(collapse.nc2(collapse.class_means(feats, y, K), frame)),
        "feature_norm_mean": float(feats.square().sum(0).mean().sqrt()),
    }
    report["inspection"] = {
        **(source or {}), "head": H, "K": K, "loss": loss, "biases": biased,
        "head_samples": view.N, "train_samples": int(y.numel()),
        "test_samples": int(y_test.numel()),
        "note": ("the head analysis uses the first n samples of each class (n = the smallest "
                 "class count), in class order; collapse and accuracy use every sample"),
    }
    report["seconds"] = time.perf_counter() - t0  # the head analysis and the collapse
    return Report.from_json(report)


def inspect_model(model: Inspectable, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor,
                  y_test: torch.Tensor, head: int = 1, dtype: torch.dtype = torch.float64,
                  device: str = "cpu", **kw: Any) -> Report:
    """The report of ``model`` on inputs ``x`` (and test inputs), ``head`` final linear layers;
    keyword arguments as :func:`build_report`."""
    chain = model.chain()
    if not 1 <= head <= len(chain):
        raise ValueError(f"head: must be in 1..{len(chain)} (the model's linear layers) "
                         f"(got {head})")
    head_layers = [(W.detach().double().cpu().clone(),
                    None if b is None else b.detach().double().cpu().clone())
                   for W, b in chain[len(chain) - head:]]  # before a float32 pass casts them
    progress = kw.get("progress")
    if progress:
        progress("features of the training data", 0.0)
    try:
        train = model_pass(model, x, head, dtype, device)
        test = model_pass(model, x_test, head, dtype, device) if x_test.shape[0] else None
    except (RuntimeError, IndexError, TypeError) as exc:  # inputs the model cannot take
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"data: the model cannot take inputs of shape "
                         f"{list(x.shape[1:])[:8]}: {first}") from None
    K = int(train.logits.shape[1])
    if y.numel() and int(y.max()) >= K:
        raise ValueError(f"labels: must be in 0..{K - 1} (the model has K = {K} outputs); "
                         f"found {int(y.max())}")
    full = bool(kw.pop("full", False))
    report = build_report(train, y, test, y_test, head_layers, model.activation, **kw)
    if full:
        if progress:
            progress("full Hessian (every parameter of the network)", 0.95)
        report.full_hessian = FullHessian.from_json(
            whole_network_top(model, x, y, kw.get("loss", "mse"), progress))
    return report


def whole_network_top(model: Inspectable, x: torch.Tensor, y: torch.Tensor, loss: str,
                      progress: Progress = None) -> dict[str, Any]:
    """The top K² + K eigenvalues of the fit Hessian over every parameter of ``model`` on the
    training data (float64, BatchNorm in eval mode), by the real network's whole-network
    routine (:func:`dufm_core.network_report.network_full`). For an ONNX graph the parameters
    are the linear chain's and the stem's weights (``OnnxClassifier._stem_weights``); running
    statistics and other constants are data."""
    from types import SimpleNamespace

    from dufm_core.network_report import network_full

    model = model.double()
    cfg = RunConfig(K=model.K, loss=loss)
    data = SimpleNamespace(x_train=x.double(), y_train=y)
    tick = (lambda msg, f: progress(msg, 0.95)) if progress else None
    out = network_full(model, cfg, data, progress=tick)  # type: ignore[arg-type]
    out["note"] = ("fit-term Hessian over every parameter of the network, BatchNorm in eval "
                   "mode, all training samples; no closed form exists for it")
    return out


def inspect_features(features: torch.Tensor, labels: torch.Tensor, head: Head,
                     features_test: torch.Tensor, labels_test: torch.Tensor,
                     activation: str = "relu", **kw: Any) -> Report:
    """The report of a features file: the head applied to the given features (rows)."""
    train = chain_pass(features.double(), "features", head, len(head), activation)
    test = (chain_pass(features_test.double(), "features", head, len(head), activation)
            if features_test.shape[0] else None)
    return build_report(train, labels, test, labels_test, head, activation, **kw)
