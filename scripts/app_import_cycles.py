"""Lists the import cycles between apps among their domain modules, to check the layering DESIGN.md states.

An app imports another when any of its domain modules does, at module level or inside a function (imports under
`if TYPE_CHECKING:` are for annotations only: they load nothing and do not count). Edge modules
(REST views, serializers and DRF plumbing, Django admin, console pages, URL confs, templatetags, management
commands, migrations) sit above every domain module and may import any app, so they are left out.

    python scripts/app_import_cycles.py            # the cycles, one per line; exit status 1 when there is one
    python scripts/app_import_cycles.py --edges    # also every app-to-app import, with the module that makes it
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

APPS_DIR = Path(__file__).resolve().parent.parent / "apps"
EDGE_FILES = {"api.py", "serializers.py", "admin.py", "admin_mixins.py", "urls.py", "views.py", "routing.py"}
EDGE_PREFIXES = ("drf",)  # apps/rbac/drf*.py: the REST framework base classes every api.py builds on
EDGE_DIRS = {"migrations", "management", "pages", "templatetags"}


def is_edge(path: Path) -> bool:
    parts = path.relative_to(APPS_DIR).parts
    name = parts[-1]
    return (
        name in EDGE_FILES
        or name.startswith(EDGE_PREFIXES)
        or bool(EDGE_DIRS.intersection(parts[1:-1]))
        or (parts[0] == "rbac" and name == "authentication.py")  # the DRF authentication class for API keys
    )


def _is_type_checking(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` except the bodies of `if TYPE_CHECKING:` blocks (their `else:` runs, and counts)."""
    nodes, pending = [], [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        children = node.orelse if _is_type_checking(node) else list(ast.iter_child_nodes(node))
        pending.extend(children)
    return nodes


def imported_apps(path: Path) -> set[str]:
    """The apps a module imports anywhere in its body (`apps.<app>...`)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "apps" else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "apps" and len(parts) > 1:
                found.add(parts[1])
    return found


def app_graph() -> dict[str, dict[str, set[str]]]:
    """app -> imported app -> the domain modules of the first app that import the second."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(APPS_DIR.rglob("*.py")):
        if len(path.relative_to(APPS_DIR).parts) < 2 or is_edge(path):
            continue
        app = path.relative_to(APPS_DIR).parts[0]
        for other in imported_apps(path) - {app}:
            graph[app][other].add(str(path.relative_to(APPS_DIR.parent)))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Every elementary cycle, each listed once, starting from its smallest app name."""
    found: list[list[str]] = []

    def walk(start: str, node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, {})):
            if nxt == start:
                found.append([*trail, start])
            elif nxt > start and nxt not in trail:
                walk(start, nxt, [*trail, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return found


def main() -> int:
    graph = app_graph()
    if "--edges" in sys.argv:
        for app in sorted(graph):
            for other in sorted(graph[app]):
                print(f"{app} -> {other}: {', '.join(sorted(graph[app][other]))}")
        print()
    found = cycles(graph)
    for cycle in found:
        print(" -> ".join(cycle))
    print(f"{len(found)} cycle(s) among domain modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
