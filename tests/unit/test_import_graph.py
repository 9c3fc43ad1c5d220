"""The ``thresher`` package has no import cycle, counting every import statement.

Every module is parsed with :mod:`ast` (nothing is imported) and each import
statement is an edge of the module graph, wherever it stands: at the top,
inside a function or method, or under ``if TYPE_CHECKING:``.

What an edge points at:

- ``import thresher.a.b`` and ``from thresher.a.b import name``: the module
  ``thresher.a.b`` (a package stands for its ``__init__.py``);
- ``from thresher.a import b`` where ``b`` is a submodule: ``thresher.a.b``;
  where ``b`` is a name defined or re-exported by ``thresher/a/__init__.py``:
  the package ``thresher.a`` itself, so a module that takes a re-export from
  its own package's ``__init__`` while that ``__init__`` imports it is a
  cycle;
- relative imports are resolved against the importing module's package.

Not edges:

- the parent packages Python initialises before a submodule (``import
  thresher.a.b`` runs ``thresher/a/__init__.py`` first): every submodule
  would otherwise depend on its package's registry, which imports it;
- a module named by a string and imported with :func:`importlib.import_module`
  (the engine registry, :mod:`thresher.engines.registry`): it is not an
  import statement, and runs only when an engine is made.

One type-only edge is allowed (:data:`TYPE_ONLY_EDGES`): ``io.stores`` names
``Location`` in annotations under ``if TYPE_CHECKING:`` while ``io.fs``
imports the stores; such an import never runs. The test checks that each
allowed edge exists and is type-only.

The same edges, every module collapsed into its package (``thresher.io.ingest``
and ``thresher.io`` into ``thresher.io``; a top-level module such as
``thresher.config`` is its own node), make the package graph, which has no
cycle either, type-only imports included: a package is a layer, and
``thresher.io`` reading ``thresher.config`` while the config lists inputs
through ``thresher.io`` is a cycle even when no module imports itself back.
A package cycle that must stay is listed in :data:`PACKAGE_CYCLE_EDGES` with
its reason (none is).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

PACKAGE = "thresher"
ROOT = Path(__file__).parents[2] / PACKAGE

#: (importer, imported) pairs allowed to close a cycle because the import is type-only.
TYPE_ONLY_EDGES = {("thresher.io.stores", "thresher.io.fs")}

#: (importer package, imported package) -> why that edge may close a package cycle.
PACKAGE_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def _module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of ``tree``, and whether it stands under ``if TYPE_CHECKING:``."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, type_only = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif _is_type_checking(node):
            assert isinstance(node, ast.If)
            stack.extend((child, True) for child in node.body)
            stack.extend((child, type_only) for child in node.orelse)
        else:
            stack.extend((child, type_only) for child in ast.iter_child_nodes(node))


def _imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """``(imported module, type-only)`` for every import statement of ``module``."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node, type_only in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, type_only
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            source = ".".join([*base, node.module] if node.module else base)
        else:
            source = node.module or ""
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            yield (submodule if submodule in modules else source), type_only


def import_edges(root: Path = ROOT) -> dict[tuple[str, str], bool]:
    """``(importer, imported)`` -> whether every import of that pair is type-only."""
    modules = _module_names(root)
    edges: dict[tuple[str, str], bool] = {}
    for module, path in modules.items():
        for target, type_only in _imports(module, path, modules):
            if target in modules and target != module:
                edges[module, target] = edges.get((module, target), True) and type_only
    return edges


def import_graph(
    root: Path = ROOT, allowed: set[tuple[str, str]] = TYPE_ONLY_EDGES
) -> dict[str, set[str]]:
    """Module -> the package modules it imports, less the ``allowed`` type-only edges."""
    graph: dict[str, set[str]] = {module: set() for module in _module_names(root)}
    for (module, target), type_only in import_edges(root).items():
        if not (type_only and (module, target) in allowed):
            graph[module].add(target)
    return graph


def package_of(module: str) -> str:
    """The package node of ``module``: ``thresher.<name>`` (a top-level module is its own node)."""
    return ".".join(module.split(".")[:2])


def package_edges(root: Path = ROOT) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``(importer package, imported package)`` -> the module edges behind it, type-only included."""
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for module, target in sorted(import_edges(root)):
        pair = package_of(module), package_of(target)
        if pair[0] != pair[1]:
            edges.setdefault(pair, []).append((module, target))
    return edges


def package_graph(
    root: Path = ROOT, allowed: dict[tuple[str, str], str] = PACKAGE_CYCLE_EDGES
) -> dict[str, set[str]]:
    """Package -> the packages its modules import, less the ``allowed`` edges."""
    graph: dict[str, set[str]] = {package_of(module): set() for module in _module_names(root)}
    for package, target in package_edges(root):
        if (package, target) not in allowed:
            graph[package].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            target = next(stack[-1], None)
            if target is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(target) == 1:
                return [*path[path.index(target) :], target]
            elif target not in state:
                state[target] = 1
                path.append(target)
                stack.append(iter(sorted(graph.get(target, ()))))
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group, found by removing edges as they are reported."""
    graph = {module: set(targets) for module, targets in graph.items()}
    cycles = []
    while (cycle := find_cycle(graph)) is not None:
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


def test_finder_reports_a_cycle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_are_resolved(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from thresher.sub.b import B\n")
    (root / "sub" / "a.py").write_text(
        "from . import b\nfrom .. import other\n"
        "def f():\n    from thresher.sub import B\n    return 'thresher.other:X'\n"
    )
    (root / "sub" / "b.py").write_text("B = 1\n")
    (root / "other.py").write_text("")
    (root / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from thresher.sub import a\n"
    )
    graph = import_graph(root, allowed=set())
    assert graph["thresher.sub.a"] == {"thresher.sub.b", "thresher.other", "thresher.sub"}
    assert graph["thresher.sub"] == {"thresher.sub.b"}
    assert graph["thresher.sub.c"] == {"thresher.sub.a"}
    assert import_edges(root)["thresher.sub.c", "thresher.sub.a"] is True
    assert (
        import_graph(root, allowed={("thresher.sub.c", "thresher.sub.a")})["thresher.sub.c"]
        == set()
    )


def test_allowed_edges_exist_and_are_type_only() -> None:
    edges = import_edges()
    for edge in TYPE_ONLY_EDGES:
        assert edges.get(edge) is True, f"{edge} is not a type-only import (any more)"


def test_package_has_no_import_cycle() -> None:
    cycles = all_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_modules_collapse_into_packages(tmp_path: Path) -> None:
    root = tmp_path / PACKAGE
    for package in ("low", "high"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "high" / "a.py").write_text("from thresher.low.b import B\n")
    (root / "low" / "b.py").write_text("B = 1\n")
    (root / "low" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from thresher.high import a\n"
    )
    (root / "top.py").write_text("from thresher.high import a\n")
    # No module cycle: high.a -> low.b, low.c -> high.a (type-only), top -> high.a.
    assert find_cycle(import_graph(root, allowed=set())) is None
    graph = package_graph(root, allowed={})
    assert graph["thresher.top"] == {"thresher.high"}
    assert find_cycle(graph) == ["thresher.high", "thresher.low", "thresher.high"]
    assert package_edges(root)["thresher.low", "thresher.high"] == [
        ("thresher.low.c", "thresher.high.a")
    ]
    allowed = {("thresher.low", "thresher.high"): "type-only"}
    assert find_cycle(package_graph(root, allowed=allowed)) is None


def test_packages_have_no_import_cycle() -> None:
    edges = package_edges()
    stale = [edge for edge in PACKAGE_CYCLE_EDGES if edge not in edges]
    assert not stale, f"allowed package edges that no import makes (any more): {stale}"
    cycles = all_cycles(package_graph())
    lines = []
    for cycle in cycles:
        lines.append(" -> ".join(cycle))
        for package, target in pairwise(cycle):
            behind = ", ".join(f"{m} -> {t}" for m, t in edges[package, target])
            lines.append(f"    {package} -> {target}: {behind}")
    assert not cycles, "package import cycles:\n" + "\n".join(lines)
