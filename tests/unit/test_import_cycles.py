"""
No import cycle between twisted_rfwd's modules, and the layers import only downwards: protocol
imports nothing above it; ssh imports no server, client or tap module; server and client do not
import each other or tap.  Read from the source (imports at module level, outside
C{if TYPE_CHECKING:}), so a cycle that Python tolerates today is still caught.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support.processes import REPOSITORY

PACKAGE = REPOSITORY / "twisted_rfwd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPOSITORY).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Module-level imports, skipping C{if TYPE_CHECKING:} blocks."""
    found: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(child, ast.Import):
                found += [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found += [child.module] + [f"{child.module}.{a.name}" for a in child.names]
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        targets = {t for t in _runtime_imports(tree) if t in modules and t != name}
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# What each layer may import from the others (besides itself, errors and _version).
_ALLOWED = {
    "twisted_rfwd.protocol": set(),
    "twisted_rfwd.ssh": {"twisted_rfwd.protocol"},
    "twisted_rfwd.server": {"twisted_rfwd.protocol", "twisted_rfwd.ssh"},
    "twisted_rfwd.client": {"twisted_rfwd.protocol", "twisted_rfwd.ssh"},
}
_ANYWHERE = {"twisted_rfwd.errors", "twisted_rfwd._version", "twisted_rfwd"}


def _layer(module: str) -> str | None:
    for layer in _ALLOWED:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


class ImportGraphTests(SynchronousTestCase):
    def test_the_graph_is_read(self) -> None:
        """The graph sees the imports it should (a check that the checker checks)."""
        graph = import_graph()
        self.assertIn("twisted_rfwd.protocol.wire", graph["twisted_rfwd.protocol.messages"])
        self.assertGreater(len(graph), 30)

    def test_no_import_cycle(self) -> None:
        """No two modules import each other, directly or through others."""
        self.assertEqual(_cycles(import_graph()), [])

    def test_layers_import_downwards(self) -> None:
        """protocol < ssh < server, client; server and client never import each other or tap."""
        wrong = []
        for module, targets in sorted(import_graph().items()):
            layer = _layer(module)
            if layer is None:
                continue
            for target in sorted(targets):
                other = _layer(target)
                if target in _ANYWHERE or other == layer:
                    continue
                if other not in _ALLOWED[layer]:
                    wrong.append(f"{module} imports {target}")
        self.assertEqual(wrong, [])
