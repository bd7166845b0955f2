"""The package's module graph has no import cycles and respects its layers.

Every module of ``mbrl_ros`` is parsed with ``ast``; every import counts, wherever it is
written: at module top, inside functions and methods, under ``if TYPE_CHECKING:`` or in
``try:`` blocks (an import hidden in a function is still a dependency, and a cycle through it
only moves the failure to run time). Relative imports are resolved, and
``importlib.import_module("mbrl_ros...")`` with a literal name counts too.

Layers, lowest first; a module may import its own layer and the layers below it, never above::

    core  <-  robots, data, tasks  <-  training  <-  nodes, demo, cli, launch_runner

That the core imports no ROS at all is checked by test_core_is_ros_free.py.
"""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "mbrl_ros"

LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("core",),
    ("robots", "data", "tasks"),
    ("training",),
    ("nodes", "demo", "cli", "launch_runner"),
)
"""Top-level parts of ``mbrl_ros`` (sub-packages or modules), lowest layer first."""


@dataclass(frozen=True)
class Import:
    """One edge of the graph: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int
    where: str
    """Where in the file: "module top", "in function f", "under TYPE_CHECKING", ..."""

    def describe(self) -> str:
        return f"{self.source} -> {self.target}  ({self.path}:{self.line}, {self.where})"


def module_names(root: pathlib.Path, package: str) -> Dict[str, pathlib.Path]:
    """``{dotted module name: file}`` of every module and package under ``root/package``."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _context(stack: Sequence[ast.AST]) -> str:
    """Where in the file an import sits, for the messages."""
    for node in reversed(stack):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return f"in function {node.name}"
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return "under TYPE_CHECKING"
        if isinstance(node, ast.ClassDef):
            return f"in class {node.name}"
    return "module top"


def _walk(node: ast.AST, stack: List[ast.AST]) -> Iterable[Tuple[ast.AST, List[ast.AST]]]:
    for child in ast.iter_child_nodes(node):
        yield child, stack
        yield from _walk(child, stack + [child])


def _resolve(name: str, known: Dict[str, pathlib.Path]) -> Optional[str]:
    """The longest prefix of ``name`` that is a module of the package, or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: pathlib.Path, known: Dict[str, pathlib.Path],
               root: pathlib.Path) -> List[Import]:
    """Every import of ``module`` (a file) that names a module of the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    relative_path = str(path.relative_to(root))
    found = []
    for node, stack in _walk(tree, []):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 >= len(package_parts):
                    raise AssertionError(f"{relative_path}:{node.lineno}: relative import "
                                         "above the top-level package")
                base_parts = package_parts[:len(package_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from package import submodule`` imports the submodule
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ast.unparse(node.func) in ("importlib.import_module", "import_module",
                                             "__import__")):
            targets = [node.args[0].value]  # importlib.import_module("mbrl_ros.x.y")
        for target in targets:
            resolved = _resolve(target, known)
            edge = Import(module, resolved or "", relative_path, node.lineno, _context(stack))
            if resolved is not None and resolved != module and edge not in found:
                found.append(edge)
    return found


def import_graph(root: pathlib.Path = PACKAGE_ROOT, package: str = PACKAGE
                 ) -> Tuple[Dict[str, List[Import]], Dict[str, pathlib.Path]]:
    """``({module: [its imports of package modules]}, {module: file})``."""
    known = module_names(root, package)
    graph = {name: imports_of(name, path, known, root) for name, path in known.items()}
    return graph, known


def strongly_connected(graph: Dict[str, List[Import]]) -> List[List[str]]:
    """Tarjan's strongly connected components with more than one module, sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: set = set()
    stack: List[str] = []
    components: List[List[str]] = []
    counter = [0]

    def visit(start: str) -> None:  # iterative: no recursion limit on deep graphs
        work = [(start, iter(sorted({e.target for e in graph.get(start, [])})))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter[0]
                    counter[0] += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(
                        {e.target for e in graph.get(successor, [])}))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(components)


def cycle_in(component: Sequence[str], graph: Dict[str, List[Import]]) -> List[Import]:
    """One concrete cycle through the first module of a strongly connected component."""
    members = set(component)
    start = component[0]
    # breadth-first search back to ``start`` inside the component: the shortest cycle
    previous: Dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target not in members or edge.target in previous:
                    continue
                previous[edge.target] = edge
                if edge.target == start:
                    cycle = [edge]
                    while cycle[0].source != start:
                        cycle.insert(0, previous[cycle[0].source])
                    return cycle
                following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle found in component {component}")


def describe_cycles(graph: Dict[str, List[Import]]) -> str:
    """A readable report of every import cycle, or "" when there is none."""
    lines = []
    for component in strongly_connected(graph):
        members = set(component)
        lines.append(f"cycle among {len(component)} modules: {', '.join(component)}")
        lines.append("  for example:")
        lines.extend("    " + edge.describe() for edge in cycle_in(component, graph))
        lines.append("  all imports among them:")
        lines.extend("    " + edge.describe() for name in component for edge in graph[name]
                     if edge.target in members)
    return "\n".join(lines)


def part_of(module: str, package: str = PACKAGE) -> Optional[str]:
    """The top-level part (``core``, ``nodes``, ``cli``, ...) of a module; None for the
    package's own ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_of(part: str) -> Optional[int]:
    for level, parts in enumerate(LAYERS):
        if part in parts:
            return level
    return None


def layer_violations(graph: Dict[str, List[Import]]) -> List[str]:
    """Imports of a higher layer by a lower one."""
    found = []
    for edges in graph.values():
        for edge in edges:
            source, target = part_of(edge.source), part_of(edge.target)
            if source is None or target is None:
                continue
            if layer_of(target) > layer_of(source):
                found.append(f"{edge.describe()}: layer '{source}' must not import the higher "
                             f"layer '{target}'")
    return sorted(found)


# ------------------------------------------------------------------------------------- tests
def test_every_part_of_the_package_has_a_layer():
    _, known = import_graph()
    parts = {part_of(name) for name in known} - {None}
    unplaced = sorted(p for p in parts if layer_of(p) is None)
    assert not unplaced, (f"add {unplaced} to LAYERS in {pathlib.Path(__file__).name} "
                          "(which layers may they import, which may import them?)")
    assert {"core", "robots", "data", "training", "nodes", "cli"} <= parts


def test_no_import_cycles():
    graph, _ = import_graph()
    report = describe_cycles(graph)
    if report:
        pytest.fail("import cycles (imports inside functions count too):\n" + report,
                    pytrace=False)


def test_lower_layers_never_import_higher_ones():
    graph, _ = import_graph()
    violations = layer_violations(graph)
    if violations:
        pytest.fail("layering violated:\n" + "\n".join(violations), pytrace=False)


def test_graph_sees_hidden_relative_and_type_checking_imports(tmp_path):
    """The checks above cannot pass by missing an import: a small package with a cycle hidden
    in a function, a relative import and a TYPE_CHECKING import is reported fully."""
    package = tmp_path / "pkg"
    (package / "core").mkdir(parents=True)
    (package / "training").mkdir()
    for folder in (package, package / "core", package / "training"):
        (folder / "__init__.py").write_text("")
    (package / "core" / "a.py").write_text(
        "from . import b\n\ndef f():\n    from pkg.core.c import thing\n")
    (package / "core" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..training import t\n")
    (package / "core" / "c.py").write_text(
        "class C:\n    def m(self):\n        import pkg.core.a\n")
    (package / "training" / "t.py").write_text(
        "import importlib\nfrom ..core.a import f\nimportlib.import_module('pkg.core.c')\n")
    graph, _ = import_graph(tmp_path, "pkg")
    assert {(e.source, e.target, e.where) for edges in graph.values() for e in edges} == {
        ("pkg.core.a", "pkg.core.b", "module top"),
        ("pkg.core.a", "pkg.core.c", "in function f"),
        ("pkg.core.b", "pkg.training.t", "under TYPE_CHECKING"),
        ("pkg.core.c", "pkg.core.a", "in function m"),
        ("pkg.training.t", "pkg.core.a", "module top"),
        ("pkg.training.t", "pkg.core.c", "module top"),
    }
    assert strongly_connected(graph) == [["pkg.core.a", "pkg.core.b", "pkg.core.c",
                                          "pkg.training.t"]]
    report = describe_cycles(graph)
    assert "pkg.core.c -> pkg.core.a  (pkg/core/c.py:3, in function m)" in report
    assert "pkg.core.a -> pkg.core.c  (pkg/core/a.py:4, in function f)" in report
    assert layer_violations(graph) == [
        "pkg.core.b -> pkg.training.t  (pkg/core/b.py:3, under TYPE_CHECKING): layer 'core' "
        "must not import the higher layer 'training'"]
