"""The shape of the code (DESIGN.md): no import circles, even through function-local imports; the
loader stands alone; knowledge of a kind of backend lives in its plug-in; files stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "schedules", "targets")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every project module `name` imports, at module level or inside functions. `from a import b`
    names a.b when that is a module (a's __init__ is then the package's, not a dependency)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
            candidates = submodules if len(submodules) == len(node.names) else [base, *submodules]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def test_no_import_circles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"modules importing each other: {circles}"


def test_the_loader_needs_nothing_of_the_compiler():
    """compiler.runtime runs on a board with numpy and the TVM runtime only (runtime/test_loader.py
    proves it for a call; this covers every driver's code)."""
    modules = _modules()
    outside = {name: sorted(m for m in _imports(name, path, modules) if not m.startswith("compiler.runtime")
                            and m != "compiler")
               for name, path in modules.items() if name.startswith("compiler.runtime")}
    assert not any(outside.values()), {name: found for name, found in outside.items() if found}


def test_backend_knowledge_stays_in_the_backends():
    """The pipeline asks the target's backend; it never branches on the kind of target."""
    pattern = re.compile(r"target\.gpu\b|== \"hexagon\"|runner ==|\.backend ==|\[\"gpu\"\]|get\(\"gpu\"\)")
    hits = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in (ROOT / "compiler").rglob("*.py") if "backends" not in path.relative_to(ROOT).parts
            for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_files_stay_small():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in _modules().values()}
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}, f"files over {MAX_LINES} lines"
