"""The engine's structure, checked: its import graph has no cycles, it never imports the
dashboard's libraries, and its modules stay readable in size (docs/design.md §2)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "dufm_core"
# modules allowed past MAX_LINES, each with the reason it is one piece
MAX_LINES = 600
LONG_MODULES = {
    "dufm_core/theory.py": "the closed forms of docs/theory.md §3–§4 in one pure-numpy module "
    "(threshold, γ, layer and full spectra, ReLU and CE points), each function a formula",
    "dufm_core/alignment.py": "being split (issue #11: propagation to models, GN to curvature)",
    "dufm_core/data.py": "loaders of four data sets with their file checks",
}
DASHBOARD_ONLY = {"streamlit", "plotly", "ui", "pages"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks (not imported at run time)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for n in ast.walk(node)}
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the dufm_core modules it imports}, from every import statement of the package,
    at module level or inside a function (a lazy import is still a dependency)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` depends on pkg.mod when that is a module, else on pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
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
