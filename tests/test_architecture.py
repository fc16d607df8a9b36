"""The import graph of ``flatmin/``: no cycle between modules, and no import up the layers (README,
"Architecture"). Read from the source with ``ast``, imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "flatmin"

#: Each part of flatmin (a sub-package or a top-level module) may import its own layer's parts only if
#: it is that part, and any part of a lower layer. Lowest first.
LAYERS: list[set[str]] = [
    {"errors", "checks", "resolvers", "network", "conf"},
    {"rundir", "pretrained", "runtime"},
    {"data", "models", "optim"},
    {"step", "validation"},
    {"assembly"},
    {"sharpness", "report", "studies", "integrations"},
    {"tuning"},
    {"train"},
]
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The flatmin modules ``path`` imports (``from flatmin.a import b``: ``flatmin.a.b`` when that is a
    module, else ``flatmin.a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("flatmin")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("flatmin"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) for name, path in paths.items()}


def part_of(module: str) -> str | None:
    """``flatmin.optim.sam`` → ``optim``; the package itself (``flatmin``) has no part."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_of_flatmin_has_a_layer():
    parts = {part_of(name) for name in import_graph()} - {None}
    assert parts == set(LAYER), f"unlayered: {parts - set(LAYER)}, gone: {set(LAYER) - parts}"


def test_no_part_imports_a_part_above_it_or_beside_it():
    upward = [f"{importer} imports {imported}" for importer, imports in import_graph().items()
              for imported in imports
              if part_of(importer) and part_of(imported) and part_of(importer) != part_of(imported)
              and LAYER[part_of(imported)] >= LAYER[part_of(importer)]]
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    graph = import_graph()
    visiting, done, circles = [], set(), []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            circles.append(" -> ".join([*visiting[visiting.index(module):], module]))
            return
        visiting.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert not circles, "\n".join(circles)
