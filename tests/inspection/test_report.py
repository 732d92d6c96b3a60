"""The inspection report against dense float64 autograd and direct numpy computations, and the
same network given as a state dict, a safetensors file and a features file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dufm_core.inspection.command import run_inspect
from dufm_core.inspection.loading import load_model
from dufm_core.inspection.report import inspect_model
from tests.inspection.conftest import K, write_safetensors


def _fit(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "mse":
        return (logits - torch.nn.functional.one_hot(y, K).double()).square().sum() / (2 * len(y))
    return torch.nn.functional.cross_entropy(logits, y)


def _dense_head_eigs(net: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor, idx: int,
                     loss: str) -> np.ndarray:
    """Eigenvalues (descending) of the fit Hessian in net[idx].weight, every other tensor fixed."""
    layer = net[idx]
    W0 = layer.weight.detach().clone()

    def f(W: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(net, {f"{idx}.weight": W}, (x,))
        return _fit(out, y, loss)

    Hs = torch.autograd.functional.hessian(f, W0).reshape(W0.numel(), W0.numel())
    return np.sort(np.linalg.eigvalsh(0.5 * (Hs + Hs.T).numpy()))[::-1]


@pytest.fixture(scope="module")
def pt_file(tmp_path_factory, mlp) -> Path:
    p = tmp_path_factory.mktemp("m") / "mlp.pt"
    torch.save({"state_dict": mlp.state_dict()}, p)
    return p


@pytest.mark.parametrize(("loss", "head"), [("ce", 2), ("mse", 1)])
def test_head_spectra_match_dense_autograd(digits, mlp, pt_file: Path, loss: str,
                                           head: int) -> None:
    model = load_model(pt_file, "mlp:64-12-10-10")
    rep = inspect_model(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                        head=head, loss=loss).to_json()
    x = digits.x_train.reshape(digits.N, -1)
    linear_idx = [0, 2, 4][3 - head:]
    assert len(rep["layers"]) == head
    for rec, idx in zip(rep["layers"], linear_idx, strict=True):
        ref = _dense_head_eigs(mlp, x, digits.y_train, idx, loss)
        top = np.array(rec["hessian_top"])
        assert top.size == min(K * K + K, ref.size)
        assert np.max(np.abs(top - ref[: top.size])) < 1e-10 * ref[0]
        s = np.linalg.svd(mlp[idx].weight.detach().numpy(), compute_uv=False)
        assert np.allclose(rec["weights_esd"]["singular_values"], s, atol=1e-12)
    # accuracy as the network computes it
    with torch.no_grad():
        acc = float((mlp(x).argmax(1) == digits.y_train).double().mean())
        xt = digits.x_test.reshape(len(digits.y_test), -1)
        acc_t = float((mlp(xt).argmax(1) == digits.y_test).double().mean())
    assert rep["accuracy"] == {"train": acc, "test": acc_t}
    assert acc > 0.5 and acc_t < 1.0
    assert rep["inspection"]["head_samples"] == digits.N


def _np_nc1(H: np.ndarray, y: np.ndarray) -> float:
    means = np.stack([H[:, y == c].mean(1) for c in range(K)], 1)
    Mc = means - means.mean(1, keepdims=True)
    Hc = H - means[:, y]
    Sw = Hc @ Hc.T / H.shape[1]
    Sb = Mc @ Mc.T / K
    return float(np.trace(Sw @ np.linalg.pinv(Sb, rcond=1e-10)) / K)


def test_collapse_matches_numpy(digits, mlp, pt_file: Path) -> None:
    model = load_model(pt_file, "mlp:64-12-10-10")
    rep = inspect_model(model, digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                        head=1, loss="ce").to_json()
    x = digits.x_train.reshape(digits.N, -1)
    y = digits.y_train.numpy()
    with torch.no_grad():
        h1 = torch.relu(mlp[0](x))
        h2 = torch.relu(mlp[2](h1))
        pred = mlp(x).argmax(1).numpy()
    recs = rep["collapse"]["train"]
    assert [r["dim"] for r in recs] == [12, 10]
    for rec, h in zip(recs, (h1, h2), strict=True):
        H = h.T.numpy()
        assert abs(rec["nc1"] - _np_nc1(H, y)) < 1e-9 * _np_nc1(H, y)
        means = np.stack([H[:, y == c].mean(1) for c in range(K)], 1)
        nearest = np.argmin(((H[:, :, None] - means[:, None, :]) ** 2).sum(0), 1)
        assert rec["nc4"] == float(np.mean(nearest == pred))
    assert len(rep["collapse"]["test"]) == 2
    assert rep["network"]["train_acc"] == rep["accuracy"]["train"]


def _numbers(rep: dict) -> dict:
    """What must agree between two sources of one network."""
    keys = ("hessian_top", "gradient_norm", "gradient_coefficients", "alignment_f",
            "weight_singular_values", "nc1", "nc2", "nc3")
    out = {f"{i}.{k}": rec[k] for i, rec in enumerate(rep["layers"]) for k in keys}
    out["acc"] = [rep["accuracy"]["train"], rep["accuracy"]["test"]]
    out["loss"] = rep["loss"]["fit"]
    out["collapse"] = [[r[k] for k in ("nc1", "nc2", "nc3", "nc4", "cdnv")]
                       for r in rep["collapse"]["train"][-2:] + rep["collapse"]["test"][-2:]]
    return out


def _close(a, b, tol: float = 1e-10) -> None:
    fa = np.array(a, dtype=float).ravel() if not isinstance(a, dict) else None
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k], tol)
        return
    fb = np.array(b, dtype=float).ravel()
    assert fa.shape == fb.shape
    assert np.all(np.abs(fa - fb) <= tol * np.maximum(1.0, np.abs(fa))), (fa, fb)


def test_same_report_from_state_dict_safetensors_and_features(tmp_path: Path, digits, mlp,
                                                              pt_file: Path, data_npz) -> None:
    args = {"head": 2, "dataset": None, "data_dir": "", "loss": "ce", "lam_w": [1e-3],
            "lam_h": 1e-3, "full": False}
    a = run_inspect(str(pt_file), "mlp:64-12-10-10", data=str(data_npz), features=None,
                    **args).to_json()
    st = write_safetensors(tmp_path / "m.safetensors", mlp.state_dict())
    b = run_inspect(str(st), "mlp:64-12-10-10", data=str(data_npz), features=None,
                    **args).to_json()
    with torch.no_grad():
        f = torch.relu(mlp[0](digits.x_train.reshape(digits.N, -1)))
        ft = torch.relu(mlp[0](digits.x_test.reshape(len(digits.y_test), -1)))
    feats = tmp_path / "features.npz"
    np.savez(feats, features=f.numpy(), labels=digits.y_train.numpy(),
             features_test=ft.numpy(), labels_test=digits.y_test.numpy(),
             W1=mlp[2].weight.detach().numpy(), b1=mlp[2].bias.detach().numpy(),
             W2=mlp[4].weight.detach().numpy(), b2=mlp[4].bias.detach().numpy())
    c = run_inspect(None, None, data=None, features=str(feats), **args).to_json()
    _close(_numbers(a), _numbers(b))
    _close(_numbers(a), _numbers(c))
    for key in ("ce_alpha_measured", "layer_outlier"):
        _close(a["theory"][key], c["theory"][key])


def test_unbalanced_shuffled_features_use_first_n_per_class() -> None:
    from dufm_core.inspection.report import inspect_features

    g = torch.Generator().manual_seed(3)
    y = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 1, 2, 0, 1, 2])  # counts 4, 4, 5
    feats = torch.randn(13, 6, generator=g, dtype=torch.float64) + 3 * torch.eye(6)[y * 2]
    W = torch.randn(3, 6, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    rep = inspect_features(feats, y, [(W, b)], feats[:0], y[:0], loss="mse").to_json()
    assert rep["inspection"]["head_samples"] == 12 and rep["inspection"]["train_samples"] == 13
    # the head's fit Hessian (MSE, one layer): I_K ⊗ H Hᵀ/N over the 4 first samples per class
    idx = torch.cat([torch.nonzero(y == c).flatten()[:4] for c in range(3)])
    Hs = feats[idx]
    ref = np.sort(np.linalg.eigvalsh((Hs.T @ Hs / 12).numpy()))[::-1]
    top = np.array(rep["layers"][0]["hessian_top"])
    assert top.size == 12 and np.allclose(top, np.repeat(ref, 3)[:12], rtol=1e-10)  # K-fold
    assert rep["accuracy"]["test"] is None and "test" not in rep["collapse"]
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have none"):
        inspect_features(feats[y != 1], y[y != 1], [(W, b)], feats[:0], y[:0])


def test_resnet20_head_report_equals_the_real_network_report(tmp_path: Path) -> None:
    """A project ResNet-20 through `inspect` gives the head analysis of network_report (one
    analysis, not a second one): same layer spectra, gradients and predictions."""
    from dufm_core.analysis import analyze_model
    from dufm_core.config import RunConfig
    from dufm_core.data import load_dataset
    from dufm_core.network_report import network_view
    from dufm_core.networks import RealNetwork

    torch.manual_seed(2)
    net = RealNetwork(1, [16, 10], "linear", base_width=4, dtype=torch.float64).eval()
    with torch.no_grad():
        net.head_weights[0].normal_(0, 0.3)
    data = load_dataset("digits", 5, K, dtype=torch.float64)
    cfg = RunConfig(model="resnet20", K=K, n=5, width=[16], depth=1, loss="mse", lam_w=1e-3,
                    lam_h=1e-3, dataset="digits")
    view, ucfg, _ = network_view(net, cfg, data)
    ref = analyze_model(view, ucfg, 0)
    torch.save(net.state_dict(), tmp_path / "r20.pt")
    model = load_model(tmp_path / "r20.pt", "resnet20")
    rep = inspect_model(model, data.x_train, data.y_train, data.x_test, data.y_test, head=1,
                        loss="mse", lam_w=1e-3, lam_h=1e-3).to_json()
    for key in ("hessian_top", "gradient_coefficients", "alignment_f", "nc1", "nc3"):
        _close(rep["layers"][0][key], ref["layers"][0][key])
    _close(rep["theory"]["layer_outlier"], ref["theory"]["layer_outlier"])
    assert rep["layers"][0]["hessian_method"] == ref["layers"][0]["hessian_method"]
    assert [r["layer"] for r in rep["collapse"]["train"]] == [
        "stage1", "stage2", "stage3 = h(x) = head input of W1"]


def test_full_is_the_whole_network_top_spectrum(digits, mlp, pt_file: Path) -> None:
    model = load_model(pt_file, "mlp:64-12-10-10")
    rep = inspect_model(model, digits.x_train, digits.y_train, digits.x_test[:0],
                        digits.y_test[:0], head=1, loss="ce", full=True).to_json()
    params = dict(mlp.named_parameters())
    names = list(params)
    flat0 = torch.cat([p.detach().reshape(-1) for p in params.values()])
    sizes = [p.numel() for p in params.values()]
    x = digits.x_train.reshape(digits.N, -1)

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        state = {n: t.reshape(params[n].shape) for n, t in zip(names, parts, strict=True)}
        return _fit(torch.func.functional_call(mlp, state, (x,)), digits.y_train, "ce")

    Hs = torch.autograd.functional.hessian(f, flat0)
    ref = np.sort(np.linalg.eigvalsh(0.5 * (Hs + Hs.T).numpy()))[::-1]
    full = rep["full_hessian"]
    assert full["params"] == "all" and full["dim"] == ref.size and full["converged"]
    top = np.array(full["top"])[: K * K]
    assert np.max(np.abs(top - ref[: K * K])) < 1e-6 * ref[0]


def test_a_head_too_big_for_the_memory_cap_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from dufm_core.inspection.report import inspect_features
    from dufm_core.resources import MemoryCapError

    monkeypatch.setenv("DUFM_MEMORY_CAP", "10M")
    y = torch.arange(200).repeat_interleave(2)
    feats = torch.randn(400, 64, dtype=torch.float64)
    W = torch.randn(200, 64, dtype=torch.float64)
    with pytest.raises(MemoryCapError, match=r"the head analysis needs about .* memory cap"):
        inspect_features(feats, y, [(W, None)], feats[:0], y[:0])
