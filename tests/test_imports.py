"""The import graph of every ``updlrm.*`` module has no cycle, between modules or between components.

Imports are read from the source (module level and inside functions: a lazy import is
still a dependency), so a cycle that only bites at call time is caught too.  Components
are the subpackages (``updlrm.partitioner``, ``updlrm.host``, ...) and each top-level
module of ``updlrm``; a component cycle such as ``partitioner -> updlrm.profile ->
partitioner`` means two components cannot be understood, tested or replaced apart.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

COMPONENTS = ("updlrm", "updlrm.emulator", "updlrm.partitioner", "updlrm.host", "updlrm.dpu_kernels")
SUBPACKAGES = COMPONENTS[1:]


def _modules() -> dict[str, Path]:
    """Every module of the namespace and its source file (walked per component: an editable
    install maps the subpackages onto other folders)."""
    out = {}
    for package_name in COMPONENTS:
        package = importlib.import_module(package_name)
        out[package_name] = Path(package.__file__)
        for info in pkgutil.iter_modules(package.__path__, package_name + "."):
            if info.name in COMPONENTS or info.ispkg:
                continue
            spec = importlib.util.find_spec(info.name)
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                out[info.name] = Path(spec.origin)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Ids of the nodes under ``if TYPE_CHECKING:`` (annotation-only imports are no dependency)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # `from pkg import mod` depends on the module, `from mod import name` on mod.
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _component(module: str) -> str:
    for package in SUBPACKAGES:
        if module == package or module.startswith(package + "."):
            return package
    return module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_every_component_and_lazy_imports():
    graph = _graph()
    for module in (
        "updlrm.tbe",
        "updlrm.profile",
        "updlrm.bench",
        "updlrm.partitioner.placement",
        "updlrm.host.engine",
        "updlrm.emulator._dpuset",
    ):
        assert module in graph, module
    # tbe imports the host engine inside a function only: the walk must still see it.
    assert "updlrm.host.engine" in graph["updlrm.tbe"]


def test_cycle_finder_finds_a_known_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert _cycles(_graph()) == []


def test_no_import_cycle_between_components():
    components: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        mine = _component(module)
        components.setdefault(mine, set()).update(_component(t) for t in targets if _component(t) != mine)
    # The package's __init__ re-exports the public API: it depends on everything and
    # nothing may depend on it.
    assert not [m for m, targets in components.items() if "updlrm" in targets], "a module imports the updlrm package"
    assert _cycles(components) == []
