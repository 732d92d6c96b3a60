"""A fresh machine runs all of it: every import is declared, every module imports, every Train
preset's data is there, the package installs with its ``dufm`` console script, and no file points
outside the project.

These guard the mechanism, not one package: CI (``.ci/run``) runs the suite in a new virtual
environment built from the README's command, so an undeclared import fails there, and the checks
here say which one and where.
"""

from __future__ import annotations

import ast
import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import dufm_core
from dufm_core import data
from dufm_core.config import MODEL_DEFAULTS, MODELS, RunConfig
from dufm_core.presets import PRESETS
from tests.helpers import ROOT

# import name -> distribution name, where the two differ
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
FIRST_PARTY = {"dufm_core", "ui", "pages", "tests", "benchmarks", "scripts", "app"}
# shipped code: the engine and the dashboard (benchmarks may use the peers they compare with)
SHIPPED = ["app.py", "dufm_core", "ui", "pages"]


def _requirement_names(lines: list[str]) -> dict[str, str]:
    """{distribution name (normalised): the whole requirement} of requirement lines."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]
        out[name.lower().replace("_", "-")] = line.replace(" ", "")
    return out


def _read_requirements(name: str) -> dict[str, str]:
    return _requirement_names((ROOT / name).read_text().splitlines())


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _shipped_files() -> list[Path]:
    files: list[Path] = []
    for entry in SHIPPED:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level?) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try blocks at module level count as top level
        if isinstance(node, ast.If | ast.Try):
            top_level |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        out += [(n.split(".")[0], node.lineno, id(node) in top_level) for n in names]
    return out


# --------------------------------------------------------------------------- declarations
def test_requirements_files_and_pyproject_declare_the_same_ranges() -> None:
    project = _pyproject()["project"]
    runtime = _read_requirements("requirements.txt")
    assert runtime == _requirement_names(project["dependencies"])
    dev = _read_requirements("requirements-dev.txt")
    assert dev == _requirement_names(project["optional-dependencies"]["dev"])
    ray = _requirement_names(project["optional-dependencies"]["ray"])
    assert ray["ray"] == dev["ray"]
    # the README's two commands install these files, and the runtime one installs this package
    req_text = (ROOT / "requirements.txt").read_text().splitlines()
    assert "-e ." in [line.strip() for line in req_text]
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    # torch: a range that 2.13.0 (the CPU build on this machine) satisfies and no newer release
    assert runtime["torch"].endswith("<=2.13.0")


def test_every_import_of_the_shipped_code_is_declared() -> None:
    declared = set(_requirement_names(_pyproject()["project"]["dependencies"]))
    optional = {
        name
        for extra, reqs in _pyproject()["project"]["optional-dependencies"].items()
        if extra != "dev"
        for name in _requirement_names(reqs)
    }
    stdlib = set(sys.stdlib_module_names)
    undeclared, eager_optional = [], []
    for path in _shipped_files():
        for module, line, top in _imports(path):
            if module in stdlib or module in FIRST_PARTY:
                continue
            dist = DISTRIBUTION.get(module, module).lower().replace("_", "-")
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if dist in optional and dist not in declared:
                if top:
                    eager_optional.append(where)  # an optional package must be imported lazily
            elif dist not in declared:
                undeclared.append(where)
    assert not undeclared, "imports no requirement declares:\n" + "\n".join(undeclared)
    assert not eager_optional, "optional packages imported at module level:\n" + "\n".join(
        eager_optional
    )


def test_every_module_of_the_package_imports() -> None:
    names = [
        m.name
        for m in pkgutil.walk_packages(dufm_core.__path__, "dufm_core.")
        if not m.name.endswith("__main__")
    ]
    assert len(names) >= 25  # the walk really found the package
    for name in names:
        importlib.import_module(name)
    for path in sorted((ROOT / "ui").glob("*.py")):
        importlib.import_module(f"ui.{path.stem}")


# --------------------------------------------------------------------------- presets and data
def _train_page_configs() -> dict[str, RunConfig]:
    """What the Train page can start from: every preset, and every model's defaults (the form's
    values after a switch of model)."""
    configs = {name: RunConfig.from_dict(p) for name, p in PRESETS.items()}
    configs |= {f"model={m}": RunConfig.from_dict({"model": m}) for m in MODELS}
    return configs


@pytest.mark.parametrize("name", list(_train_page_configs()))
def test_every_train_preset_passes_its_data_check(name: str) -> None:
    from ui import data_check

    cfg = _train_page_configs()[name]
    cfg.validate()
    if cfg.model == "ufm":
        return  # UFM labels are made, not read
    data.check_data(cfg)  # what `train` checks before a run folder is made
    counts = data_check.check(cfg)  # what the Train page checks before it enables Launch
    assert len(counts) == cfg.K and min(counts) >= cfg.n


def test_every_model_has_defaults_and_a_preset() -> None:
    assert set(MODEL_DEFAULTS) <= set(MODELS)
    assert {p.get("model", "ufm") for p in PRESETS.values()} == set(MODELS)


def test_missing_scikit_learn_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    data._digits_arrays.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "sklearn" else real(n, *a)
    )
    for name in ("sklearn", "sklearn.datasets"):  # `import sklearn…` now fails
        monkeypatch.setitem(sys.modules, name, None)
    try:
        with pytest.raises(data.DataError, match=r"pip install 'scikit-learn>=1\.3'"):
            data.train_class_counts("digits")
    finally:
        data._digits_arrays.cache_clear()


# --------------------------------------------------------------------------- installing
def _console_script() -> Path:
    return Path(sys.executable).parent / "dufm"


def test_console_script_is_installed_and_equals_python_m() -> None:
    script = _console_script()
    assert script.exists(), f"{script} missing: install with the README's command (pip -e .)"
    via_script = subprocess.run(
        [str(script), "theory", "--K", "3", "--n", "40", "--depth", "5", "--lam", "1e-2"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    via_module = subprocess.run(
        [sys.executable, "-m", "dufm_core", "theory", "--K", "3", "--n", "40", "--depth", "5",
         "--lam", "1e-2"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    assert via_script.stdout == via_module.stdout
    assert '"gamma": 0.942277466' in via_script.stdout  # case A's γ (docs/theory.md §8)
    helps = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert helps.stdout.startswith("usage: dufm ")


def test_wheel_holds_the_engine_and_installs_a_working_dufm(tmp_path: Path) -> None:
    """``pip install .`` as a user would (a wheel, not the editable checkout): the wheel holds
    the engine only, with its console script, and the installed copy runs ``dufm``."""
    # build from a copy: setuptools writes build/ and *.egg-info/ beside the sources
    source = tmp_path / "source"
    shutil.copytree(ROOT / "dufm_core", source / "dufm_core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheels.glob("dufm_lab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "dufm = dufm_core.cli:main" in z.read(entry_points).decode()
        metadata = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "dufm_core/cli.py" in names and "dufm_core/curvature/operators.py" in names
    assert "dufm_core/sweeps/presets/phase.toml" in names  # package data: the example specs
    tops = {n.split("/")[0] for n in names if not n.startswith("dufm_lab-")}
    assert tops == {"dufm_core"}, tops  # no tests/, pages/, benchmarks/ inside
    assert "Requires-Dist: scikit-learn>=1.3" in metadata
    assert "Requires-Dist: ray<3,>=2.9; extra == \"ray\"" in metadata

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import dufm_core; print(dufm_core.__file__)"],
        capture_output=True, text=True, check=True, env=env, cwd=tmp_path,
    )
    assert Path(where.stdout.strip()).is_relative_to(target)  # the wheel's copy, not the checkout
    out = subprocess.run(
        [str(target / "bin" / "dufm"), "--help"],
        capture_output=True, text=True, check=True, env=env, cwd=tmp_path,
    )
    assert "train" in out.stdout and "analyze" in out.stdout


# --------------------------------------------------------------------------- self-contained
def _tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()
    files = [ROOT / f for f in out.split("\0") if f]
    return [f for f in files if f.suffix in {".py", ".md", ".toml", ".txt", ".sh", ""}
            and f.is_file()]


def test_no_file_points_outside_the_project() -> None:
    """The project's docs live in docs/: nothing may cite the briefs outside the checkout."""
    outside = ("../" + "shared", "shared" + "/docs")  # spelled so that this file passes itself
    offenders = []
    for path in _tracked_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if any(o in line for o in outside):
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)
