"""The layering of dufm_core.curvature (docs/design.md §2.2), read from the source with ``ast``.

The import graph has an edge a → b for every ``import``/``from … import`` of a dufm_core module
b anywhere in a (function-level imports included), plus, when a is outside them, an edge to
each package between the root and b (importing ``dufm_core.curvature.base`` from
``dufm_core.alignment`` runs ``dufm_core/curvature/__init__.py`` first). Its strongly connected
components with more than one module are import cycles.

    python -m tests.curvature.test_layout        # prints every cycle of dufm_core
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = "dufm_core"
CURVATURE = f"{PACKAGE}.curvature"
# what each curvature module may import from the package (the layers of base.py's docstring)
ALLOWED = {
    "base": set(),
    "params": set(),
    "operators": {"base", "params"},
    "kronecker": {"base", "params", "operators"},
    "network": {"base", "params"},
    "eigensolvers": {"base"},
    "density": {"base"},
    "gauss_newton": {"base", "eigensolvers"},
    "spectrum": {"base", "params", "operators", "kronecker", "eigensolvers"},
}
# modules above curvature/ that curvature must never import
ABOVE = {"alignment", "analysis", "network_report", "gradients", "weights", "store", "training"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every module of the package (``__init__`` → the package)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
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
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
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
    """Strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_cycle_touches_curvature_or_the_modules_it_shares() -> None:
    shared = {CURVATURE, f"{PACKAGE}.alignment", f"{PACKAGE}.propagation",
              f"{PACKAGE}.subspaces", f"{PACKAGE}.gradients", f"{PACKAGE}.weights"}  # fmt: skip
    bad = [c for c in cycles(import_graph())
           if any(m in shared or m.startswith(CURVATURE + ".") for m in c)]  # fmt: skip
    assert bad == []


def test_curvature_modules_import_only_the_layers_below() -> None:
    graph = import_graph()
    subs = {m.rpartition(".")[2] for m in graph if m.startswith(CURVATURE + ".")}
    assert subs == set(ALLOWED), "a new curvature module needs its place in ALLOWED"
    for sub, allowed in ALLOWED.items():
        deps = graph[f"{CURVATURE}.{sub}"]
        inside = {d.rpartition(".")[2] for d in deps if d.startswith(CURVATURE + ".")}
        assert inside <= allowed, f"curvature.{sub} imports {sorted(inside - allowed)}"
        above = {d.rpartition(".")[2] for d in deps} & ABOVE
        assert not above, f"curvature.{sub} imports {sorted(above)} (above curvature/)"


def test_the_graph_reader_sees_cycles() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c"]]
    graph = import_graph()
    assert f"{CURVATURE}.base" in graph[f"{CURVATURE}.operators"]
    assert CURVATURE in graph[f"{PACKAGE}.alignment"]  # the package __init__ runs first


if __name__ == "__main__":
    found = cycles(import_graph())
    print(f"{len(import_graph())} modules, {len(found)} import cycle(s)")
    for comp in found:
        print("  " + " ↔ ".join(comp))
