"""Loss landscapes (dufm_core/landscape.py, docs/design.md §8.4): batched values against a plain
loop of forward passes, the quadratic model against a cubic fit along eigenvectors, unit and
filter-normalised directions, the predicted directions' Rayleigh quotient against the closed
form, the interpolation's endpoints, and the CLI's contract and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dufm_core import RunConfig, theory, train
from dufm_core import landscape as ls
from dufm_core.cli import main
from dufm_core.config import ConfigError
from dufm_core.curvature.params import param_set
from dufm_core.kinds import load_checkpoint
from dufm_core.models import build_model, fit_term
from dufm_core.store import open_run


def _model(activation: str = "linear", loss: str = "mse", init: str = "random",
           lam: float = 0.005) -> tuple[torch.nn.Module, RunConfig]:
    cfg = RunConfig(K=3, n=4, width=6, depth=3, activation=activation, loss=loss, init=init,
                    lam_w=lam, lam_h=lam, seed=3)
    cfg.validate()
    return build_model(cfg), cfg


def _scan(model: torch.nn.Module, cfg: RunConfig, **kw: object) -> dict:
    return ls.compute(model, cfg, ls.LandscapeArgs(step=0, **kw).checked(cfg))  # type: ignore[arg-type]


@pytest.mark.parametrize(("activation", "loss"), [("linear", "mse"), ("relu", "mse"),
                                                  ("relu", "ce")])
@pytest.mark.parametrize("two_d", [False, True])
def test_batched_equals_loop(activation: str, loss: str, two_d: bool) -> None:
    model, cfg = _model(activation, loss)
    pset = param_set(model, "weights")
    gen = torch.Generator().manual_seed(0)
    dirs = torch.randn(pset.dim, 2 if two_d else 1, generator=gen, dtype=torch.float64)
    a = torch.linspace(-0.7, 0.7, 5, dtype=torch.float64)
    b = torch.linspace(-0.3, 0.5, 4, dtype=torch.float64) if two_d else None
    theta = pset.vector(model)
    fit, total = ls.grid_losses(model, pset, theta, dirs, a, b, loss, cfg.lam_ws, cfg.lam_h)
    fit_ref, total_ref = ls.loop_losses(model, pset, theta, dirs, a, b, loss, cfg.lam_ws,
                                        cfg.lam_h)
    assert fit.shape == fit_ref.shape == ((5, 4) if two_d else (5,))
    torch.testing.assert_close(fit, fit_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(total, total_ref, rtol=0, atol=1e-12)
    assert float((total - fit).min()) > 0  # the regulariser is there


@pytest.mark.parametrize(("activation", "loss", "params"), [
    ("linear", "mse", {"layer": 2}), ("relu", "ce", {"full": True}),
    ("linear", "ce", {"layer": 1}),
    ("relu", "mse", {"full": True, "full_params": "weights+features"}),
])
def test_eig_direction_matches_quadratic_model(activation: str, loss: str, params: dict) -> None:
    """Away from the optimum: the t² coefficient of a cubic fitted to small-t values is λ/2."""
    model, cfg = _model(activation, loss)
    out = _scan(model, cfg, directions="eig", index=(1,), radius=1e-3, points=9, **params)
    t, fit = np.array(out["t"]), np.array(out["fit"])
    coeffs = np.polyfit(t, fit, 3)
    lam = out["hessian_eigenvalues"][0]
    assert out["eigenvalues"][0] == pytest.approx(lam, rel=1e-10)
    assert coeffs[1] == pytest.approx(lam / 2, rel=1e-5)
    assert coeffs[2] == pytest.approx(out["slopes"][0], rel=1e-5, abs=1e-9)
    assert out["quadratic"][4] == out["fit0"] == pytest.approx(fit[4], abs=1e-15)
    np.testing.assert_allclose(out["quadratic"], out["fit0"] + lam * t**2 / 2)


def test_directions_unit_norm_and_filter_normalised() -> None:
    model, cfg = _model("relu")
    for kind, index in (("eig", (1, 2)), ("random", (1, 2)), ("predicted", (1, 2, 3, 1))):
        out = _scan(model, cfg, layer=2, directions=kind, index=index, points=3)
        assert [d["norm"] for d in out["directions"]] == pytest.approx([1.0, 1.0], abs=1e-12)
        assert len(out["a"]) == len(out["b"]) == 3 and np.shape(out["fit"]) == (3, 3)
    pset = param_set(model, "weights+features")
    d1 = ls.random_direction(model, pset, seed=5, index=1)
    assert float(d1.norm()) == pytest.approx(1.0, abs=1e-14)
    assert not torch.equal(d1, ls.random_direction(model, pset, seed=5, index=2))
    assert torch.equal(d1, ls.random_direction(model, pset, seed=5, index=1))
    for name, block, value in zip(pset.names, pset.unflatten(d1), pset.tensors(model),
                                  strict=True):
        dim = 0 if name == "features" else 1  # a sample's features; a weight's rows (filters)
        ratio = block.norm(dim=dim) / value.double().norm(dim=dim)
        assert float(ratio.std() / ratio.mean()) < 1e-12, name
    # one common factor: the whole direction is the filter-normalised draw, scaled once
    ratios = [float((b.norm(dim=0 if n == "features" else 1) / v.norm(
        dim=0 if n == "features" else 1)).mean()) for n, b, v in
        zip(pset.names, pset.unflatten(d1), pset.tensors(model), strict=True)]
    assert max(ratios) / min(ratios) == pytest.approx(1.0, abs=1e-12)


def test_predicted_rayleigh_quotient_is_the_outlier_at_the_optimum() -> None:
    model, cfg = _model("linear", "mse", init="optimum")
    pred = theory.predict(cfg.K, cfg.n, cfg.lam_ws, cfg.lam_h)
    for layer in (1, 2, 3):
        for pair in ((1, 1), (2, 3)):
            out = _scan(model, cfg, layer=layer, directions="predicted", index=pair, points=3)
            assert out["eigenvalues"][0] == pytest.approx(pred.layer_outlier[layer - 1],
                                                          rel=1e-10)
            assert abs(out["slopes_total"][0]) < 1e-10  # a critical point of the total loss
            if pair[0] == pair[1]:  # along W_l itself the fit term still pulls (−λ‖W‖-ish)
                assert out["slopes"][0] < -1e-4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = RunConfig(K=3, n=4, width=6, depth=3, steps=300, lr=0.5, log_points=5,
                    checkpoint_points=5, lam_w=0.005, lam_h=0.005, name="landscape")
    return Path(train(cfg, runs_dir=tmp_path_factory.mktemp("ls") / "runs",
                      progress=None).run.path)


def _fits(run_dir: Path, step: int) -> tuple[float, float]:
    ck = load_checkpoint(open_run(run_dir).checkpoint_path(step))
    m = ck.model.double()
    with torch.no_grad():
        fit = float(fit_term(m(), m.labels, ck.config.loss))
        return fit, fit + float(m.reg_term(ck.config.lam_ws, ck.config.lam_h))


def test_interp_endpoints_are_the_two_checkpoints(tiny_run: Path) -> None:
    steps = open_run(tiny_run).checkpoints()
    args = ls.LandscapeArgs(full=True, full_params="weights+features", directions="interp",
                            points=5)
    _, out = ls.run_landscape(tiny_run, args)
    assert out["t"][0] == 0.0 and out["t"][-1] == 1.0 and out["step"] == steps[-1]
    first, last = _fits(tiny_run, steps[0]), _fits(tiny_run, steps[-1])
    assert out["fit"][0] == pytest.approx(first[0], rel=1e-12)
    assert out["total"][0] == pytest.approx(first[1], rel=1e-12)
    assert out["fit"][-1] == pytest.approx(last[0], rel=1e-12)
    assert out["total"][-1] == pytest.approx(last[1], rel=1e-12)
    assert first[0] > last[0]  # training went down


def test_pca_plane_holds_the_path(tiny_run: Path) -> None:
    steps = open_run(tiny_run).checkpoints()
    _, out = ls.run_landscape(tiny_run, ls.LandscapeArgs(full=True, directions="pca",
                                                         index=(1, 2), points=5))
    path = out["path"]
    assert path["steps"] == steps and path["a"][-1] == path["b"][-1] == 0.0
    assert max(map(abs, path["a"] + path["b"])) <= out["radius"]  # the path is on the plane
    assert all(0.0 <= x <= 1.0 + 1e-12 for x in path["in_plane"])
    shares = [d["share"] for d in out["directions"]]
    assert shares[0] >= shares[1] and sum(shares) <= 1.0 + 1e-12
    assert np.shape(out["fit"]) == (5, 5) and out["quadratic"] is None


def test_cli_writes_the_contract_and_caches(tiny_run: Path, capsys: pytest.CaptureFixture
                                            ) -> None:
    rc = main(["landscape", str(tiny_run), "--layer", "2", "--index", "1", "--points", "7"])
    assert rc == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert path.parent == tiny_run / "analysis" and path.name.startswith("landscape_")
    data = json.loads(path.read_text())
    for key in ("directions", "t", "fit", "total", "eigenvalues", "quadratic"):
        assert key in data, key
    assert len(data["t"]) == len(data["fit"]) == len(data["quadratic"]) == 7
    mtime = path.stat().st_mtime_ns
    assert main(["landscape", str(tiny_run), "--layer", "2", "--points", "7"]) == 0
    assert Path(capsys.readouterr().out.strip()) == path and path.stat().st_mtime_ns == mtime
    out = tiny_run.parent / "x.json"
    assert main(["landscape", str(tiny_run), "--directions", "random", "--index", "1,2",
                 "--points", "3", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    assert np.shape(json.loads(out.read_text())["total"]) == (3, 3)


@pytest.mark.parametrize(("argv", "field"), [
    (["--points", "1"], "points: must be an integer in [3, 201]"),
    (["--points", "abc"], "points:"),
    (["--layer", "9"], "layer: must be an integer in [1, 3]"),
    (["--radius", "-1"], "radius:"),
    (["--directions", "hessian"], "directions: must be one of"),
    (["--index", "1,2,3"], "index:"),
    (["--index", "x"], "index:"),
    (["--directions", "predicted", "--index", "1,4"], "index: must be an integer in [1, 3]"),
    (["--directions", "predicted", "--full"], "directions: predicted directions belong"),
    (["--full", "--layer", "1"], "layer: give either"),
    (["--step", "8888"], "step: no checkpoint at step 8888"),
    (["--directions", "interp", "--index", "1,2"], "index: interp is one direction"),
    (["--full-params", "features"], "full_params: must be one of"),
])
def test_cli_refuses_bad_input_in_one_line(tiny_run: Path, capsys: pytest.CaptureFixture,
                                           argv: list[str], field: str) -> None:
    assert main(["landscape", str(tiny_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {field}") and "\n" not in err, err


def test_memory_cap_refuses_before_loading(tiny_run: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUFM_MEMORY_CAP", "10k")
    assert main(["landscape", str(tiny_run), "--points", "201"]) == 2
    err = capsys.readouterr().err.strip()
    assert "this landscape needs" in err and "memory cap" in err and "\n" not in err
    with pytest.raises(ConfigError, match="points"):
        ls.LandscapeArgs(points=500).checked(open_run(tiny_run).config())


def test_eig_index_beyond_the_parameters_is_refused() -> None:
    cfg = RunConfig(K=2, n=2, width=2, depth=1, seed=1)
    cfg.validate()
    with pytest.raises(ConfigError, match=r"index: must be in 1\.\.4"):
        _scan(build_model(cfg), cfg, layer=1, directions="eig", index=(5,))


def test_eigenvalue_against_a_dense_autograd_hessian() -> None:
    """ReLU + CE over all weights: the direction's Rayleigh quotient is the top eigenvalue of
    torch.autograd.functional.hessian (float64), and the direction is its eigenvector."""
    model, cfg = _model("relu", "ce")
    out = _scan(model, cfg, full=True, directions="eig", index=(1,), points=3)
    shapes = [tuple(w.shape) for w in model.weights]
    sizes = [w.numel() for w in model.weights]

    def fit(theta: torch.Tensor) -> torch.Tensor:
        h = model.features.detach()
        for i, W in enumerate(torch.split(theta, sizes)):
            h = W.reshape(shapes[i]) @ (torch.relu(h) if i > 0 else h)
        return fit_term(h.T, model.labels, "ce")

    theta = torch.cat([w.detach().reshape(-1) for w in model.weights])
    H = torch.autograd.functional.hessian(fit, theta, vectorize=True)
    top = torch.linalg.eigvalsh(H)[-1]
    assert out["eigenvalues"][0] == pytest.approx(float(top), rel=1e-10)


def test_top_eigenvectors_at_the_optimum_lie_in_the_predicted_span() -> None:
    """At the linear-MSE optimum the top K² eigenspace of a layer is degenerate: any of its
    vectors (whichever the solver returns) lies in the span of the K² predicted directions."""
    model, cfg = _model("linear", "mse", init="optimum")
    layer = 2
    pset = param_set(model, f"layer:{layer}")
    dirs, _ = ls.eig_directions(model, pset, "mse", range(1, cfg.K**2 + 1))
    pred = torch.stack([ls.predicted_direction(model, layer, c, e)
                        for c in range(1, cfg.K + 1) for e in range(1, cfg.K + 1)], dim=1)
    Q, _ = torch.linalg.qr(pred)
    captured = (Q.T @ dirs).square().sum(0)  # ‖Qᵀd‖² per direction, 1 inside the span
    torch.testing.assert_close(captured, torch.ones(cfg.K**2, dtype=torch.float64), atol=1e-10,
                               rtol=0)


def test_pca_recovers_a_planar_trajectory() -> None:
    gen = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(50, 2, generator=gen, dtype=torch.float64))
    coords = torch.randn(6, 2, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0])
    dirs, proj, share = ls.pca_directions(coords @ basis.T, (1, 2))
    assert sum(share) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(proj @ dirs.T, coords @ basis.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(dirs.T @ dirs, torch.eye(2, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    with pytest.raises(ConfigError, match="pca needs more checkpoints"):
        ls.pca_directions(coords[:1] @ basis.T, (1, 2))


def test_missing_run_and_real_network_runs_are_one_line(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["landscape", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    from dufm_core.store import create_run

    run = create_run(RunConfig.from_dict({"model": "resnet20", "n": 3}), tmp_path / "runs")
    assert main(["landscape", str(run.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: model: landscapes are for UFM runs only (this run is resnet20)"


_ANY = st.one_of(st.text(max_size=30), st.integers(-10**30, 10**30), st.floats(),
                 st.booleans(), st.none(), st.lists(st.integers(-5, 300), max_size=5))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.fixed_dictionaries({}, optional={
    "step": _ANY, "layer": _ANY, "full": st.booleans(), "full_params": _ANY,
    "directions": st.one_of(st.sampled_from(ls.DIRECTIONS), _ANY), "index": _ANY,
    "radius": _ANY, "points": _ANY, "seed": _ANY}), st.text(max_size=20))
def test_any_arguments_are_accepted_or_refused_in_one_line(kw: dict, index_text: str) -> None:
    """Validation only (nothing is computed): whatever the values, ``checked`` returns checked
    arguments or raises one ConfigError line, and so does the --index parser."""
    cfg = RunConfig(K=3, n=4, width=6, depth=3)
    cfg.validate()
    if "index" in kw and not isinstance(kw["index"], list):
        kw["index"] = (kw["index"],)
    try:
        args = ls.LandscapeArgs(**kw).checked(cfg)
    except ConfigError as exc:
        assert "\n" not in str(exc) and ":" in str(exc)
    else:
        assert ls.POINTS[0] <= args.points <= ls.POINTS[1]
        assert args.full or 1 <= (args.layer or 0) <= cfg.depth
    try:
        ls.parse_index(index_text)
    except ConfigError as exc:
        assert str(exc).startswith("index: ") and "\n" not in str(exc)
