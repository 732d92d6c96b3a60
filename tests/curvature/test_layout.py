"""The layering of dufm_core.curvature (docs/design.md §2.2), on the import graph of
tests/test_architecture.py."""

from __future__ import annotations

from tests.test_architecture import cycles, import_graph

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
    "trace": {"base", "params", "kronecker"},
    "bottom": {"base", "eigensolvers"},
    "attribution": set(),
    "sharded": {"base", "network"},
    "range_space": {"base", "kronecker"},
}
# modules above curvature/ that curvature must never import
ABOVE = {"alignment", "analysis", "network_report", "gradients", "weights", "store", "training"}


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

