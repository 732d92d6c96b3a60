"""The engine's structure, checked: its import graph has no cycles, it never imports the
dashboard's libraries, and its modules stay readable in size (docs/design.md §2).

The import graph has an edge a → b for every ``import``/``from … import`` of a dufm_core module
b anywhere in a (function-level imports included: a lazy import is still a dependency; blocks
under ``if TYPE_CHECKING:`` are not imports at run time), plus, when a is outside them, an edge
to each package between the root and b (importing ``dufm_core.curvature.base`` from
``dufm_core.alignment`` runs ``dufm_core/curvature/__init__.py`` first). Its strongly connected
components with more than one module are import cycles.

    python -m tests.test_architecture        # prints every cycle of dufm_core
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PACKAGE_NAME = "dufm_core"
PACKAGE = ROOT / PACKAGE_NAME
# modules allowed past MAX_LINES, each with the reason it is one piece
MAX_LINES = 600
LONG_MODULES = {
    "dufm_core/theory.py": "the closed forms of docs/theory.md §3–§4 in one pure-numpy module "
    "(threshold, γ, layer and full spectra, ReLU and CE points), each function a formula",
    "dufm_core/data.py": "loaders of four data sets with their file checks",
}
DASHBOARD_ONLY = {"streamlit", "plotly", "ui", "pages"}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (not imported at run time)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for n in ast.walk(node)}
    return out


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package (``__init__`` → the package)."""
    out = {}
    for path in sorted((root / PACKAGE_NAME).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the package modules it imports} (see the module docstring)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                         for a in node.names]  # fmt: skip
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if not name or name == mod:
                    continue
                graph[mod].add(name)
                parts = name.split(".")
                for i in range(2, len(parts)):  # intermediate packages (not the root) that
                    parent = ".".join(parts[:i])  # a module from outside them must run first
                    if parent in files and not (mod + ".").startswith(parent + "."):
                        graph[mod].add(parent)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "dufm_core.kinds" in graph and "dufm_core.training.loop" in graph
    assert "dufm_core.training.loop" in graph["dufm_core.training.ufm"]
    assert "dufm_core.kinds.ufm" in graph["dufm_core.kinds"]


def test_the_engine_has_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles in dufm_core:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_engine_never_imports_the_dashboards_libraries() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] in DASHBOARD_ONLY]
    assert not offenders, offenders


def test_modules_stay_readable_in_size() -> None:
    long = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
            for p in PACKAGE.rglob("*.py")}
    over = {p: n for p, n in long.items() if n > MAX_LINES and p not in LONG_MODULES}
    assert not over, f"modules over {MAX_LINES} lines without a stated reason: {over}"
    stale = [p for p in LONG_MODULES if long.get(p, 0) <= MAX_LINES]
    assert not stale, f"listed as long but no longer are (remove them from LONG_MODULES): {stale}"


if __name__ == "__main__":
    found = cycles(import_graph())
    print(f"{len(import_graph())} modules, {len(found)} import cycle(s)")
    for comp in found:
        print("  " + " ↔ ".join(comp))


def test_every_chart_goes_through_ui_charts_show() -> None:
    """Pages and ui/ draw charts only through ui.charts.show, so every chart has its download
    row (SVG, PNG, CSV); a plain st.plotly_chart would silently lack it."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("pages", "ui")
        for path in (ROOT / folder).rglob("*.py")
        if path != ROOT / "ui" / "charts.py" and ".plotly_chart(" in path.read_text()
    ]
    assert offenders == []


def test_the_first_page_does_not_import_torch() -> None:
    """What app.py and the Overview page import (the run store, the launcher, the ui helpers)
    stays free of torch, so the dashboard's cold first page does not wait for it (≈1 s; see
    docs/benchmarks.md §3). The heavy engine loads with the first page that needs it."""
    code = ("import sys; import dufm_core, dufm_core.store, dufm_core.process.launcher, "
            "ui.shell, ui.docs, ui.links, ui.state, ui.quickstart; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_each_kind_says_real_network_as_the_config_table_does() -> None:
    from dufm_core import kinds
    from dufm_core.config import MODELS, REAL_NETWORK

    assert tuple(REAL_NETWORK) == MODELS
    for model, real in REAL_NETWORK.items():
        assert kinds.get(model).real_network is real
