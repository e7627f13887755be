"""No import circles between the gateway's modules, read from source with ``ast``.

The rule: an edge A -> B for every import of B written at A's top level, including those under
``if TYPE_CHECKING:`` (a type-only import is still a dependency, and the place a circle hides: that
is how ``authz/decision.py`` and ``authz/engine.py`` had one) and those inside class bodies, ``try`` and
``if``. Imports inside functions are left out: they are the deliberate deferrals (a sub-command's
module loaded when it runs). ``from P import name`` is an edge to the module ``P.name`` when there
is one, else to ``P``. A module's implicit import of its parent packages is not an edge (a package
whose ``__init__`` re-exports its modules is not a circle).
"""

from __future__ import annotations

import ast
import graphlib
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "gateway"

Edges = Mapping[str, Mapping[str, str]]  # module -> imported module -> where ("file:line")


def modules(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level(nodes: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported (and the ``TYPE_CHECKING`` ones)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            yield from _top_level(node.body)
            for handler in node.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(node.orelse)
            yield from _top_level(node.finalbody)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _top_level(node.body)


def import_graph(root: Path) -> dict[str, dict[str, str]]:
    known = modules(root)
    graph: dict[str, dict[str, str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: dict[str, str] = {}
        for node in _top_level(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in candidates:
                while target and target not in known:  # `import gateway.x.y` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.setdefault(target, f"{path.relative_to(root)}:{node.lineno}")
        graph[name] = targets
    return graph


def find_cycle(graph: Edges) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None."""
    try:
        graphlib.TopologicalSorter({name: set(targets) for name, targets in graph.items()}).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = list(reversed(exc.args[1]))  # graphlib lists it against the edges
        return cycle
    return None


def describe(graph: Edges, cycle: list[str]) -> str:
    return "\n".join(f"  {a} -> {b}  ({graph[a][b]})" for a, b in itertools.pairwise(cycle))


def test_the_gateway_has_no_import_cycle() -> None:
    graph = import_graph(ROOT)
    assert len(graph) > 100 and "gateway.authz.decision" in graph["gateway.authz.engine"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle " + " -> ".join(cycle) + ":\n" + describe(graph, cycle)


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    "files",
    [
        {"b.py": "from gateway.a import X\n"},
        {"b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gateway.a import X\n"},
        {"b.py": "from . import a\n"},
        {"b.py": "try:\n    import gateway.a.inner\nexcept ImportError:\n    pass\n"},
    ],
    ids=["from-import", "type-checking", "relative", "in-try"],
)
def test_a_cycle_is_found_and_named(tmp_path: Path, files: dict[str, str]) -> None:
    _write(tmp_path / PACKAGE, {"__init__.py": "", "a.py": "import gateway.b\n", **files})
    graph = import_graph(tmp_path)
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"gateway.a", "gateway.b"} and cycle[0] == cycle[-1]
    text = describe(graph, cycle)
    assert "gateway/a.py:1" in text and "gateway/b.py:" in text


def test_function_local_imports_and_parent_packages_are_not_edges(tmp_path: Path) -> None:
    _write(
        tmp_path / PACKAGE,
        {
            "__init__.py": "",
            "pkg/__init__.py": "from gateway.pkg.child import Y\n",
            "pkg/child.py": "Y = 1\n",
            "a.py": "import gateway.b\n",
            "b.py": "def later() -> None:\n    import gateway.a\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["gateway.b"] == {} and graph["gateway.pkg"] == {"gateway.pkg.child": "gateway/pkg/__init__.py:1"}
    assert find_cycle(graph) is None
