"""Dependencies point one way, checked on the source: every ``import`` statement, at module level or inside a
function, under ``TYPE_CHECKING`` or not, counts.

    hra/      the ML package: imports nothing from app, workers, storage, tests
    storage/  persistence: imports nothing from app, workers, tests (it takes URLs and paths)
    app/      imports workers only in ``app/cli.py`` (``hra worker`` runs the worker's Celery app), nothing else
    workers/  may use app's services and storage, never app's routers (``app.api``) or the web app (``app.main``)
    no module imports ``tests``, and there are no import circles between modules
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "workers", "storage", "hra", "migrations")

# (importing package, imported prefix): forbidden; the seam list names the only exceptions.
FORBIDDEN = [
    ("hra", "app"), ("hra", "workers"), ("hra", "storage"), ("hra", "tests"),
    ("storage", "app"), ("storage", "workers"), ("storage", "tests"),
    ("app", "workers"), ("app", "tests"),
    ("workers", "app.api"), ("workers", "app.main"), ("workers", "tests"),
    ("migrations", "workers"), ("migrations", "tests"),
]
SEAMS = {("app.cli", "workers.celery_app")}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(root, path): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Absolute names of everything ``path`` imports (``from a import b`` gives ``a.b`` and ``a``)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            yield from (f"{prefix}.{alias.name}" for alias in node.names)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (names that are not modules, e.g. classes, are dropped)."""
    modules = source_modules(root, packages)
    return {
        module: {name for name in imported_names(module, path) if name in modules and name != module}
        for module, path in modules.items()
    }


def wrong_way_imports(graph: dict[str, set[str]], all_imports: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, names in all_imports.items():
        package = module.split(".")[0]
        for name in sorted(names):
            for importer, imported in FORBIDDEN:
                if package == importer and (name == imported or name.startswith(imported + ".")):
                    if not any(module == seam_module and (name == seam or name.startswith(seam + "."))
                               for seam_module, seam in SEAMS):
                        problems.append(f"{module} imports {name}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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


def all_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Every imported name, the project's or not (``tests`` is not a scanned package but must be caught)."""
    return {module: set(imported_names(module, path)) for module, path in source_modules(root, packages).items()}


def test_dependencies_point_one_way():
    problems = wrong_way_imports(import_graph(REPO), all_imports(REPO))
    assert not problems, "wrong-way imports:\n" + "\n".join(problems)


def test_there_are_no_import_circles():
    circles = cycles(import_graph(REPO))
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


# ---- the checks can fail ---------------------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("hra/model.py", "from app.settings import Settings"),
        ("hra/model.py", "def f():\n    import storage.models\n"),
        ("hra/model.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from workers import tasks\n"),
        ("storage/db.py", "from app.settings import get_settings"),
        ("app/container.py", "from workers.celery_app import celery_app"),
        ("workers/tasks.py", "from app.api import speakers"),
        ("hra/model.py", "from tests.fixtures import x"),
    ],
)
def test_a_wrong_way_import_is_reported(tmp_path, path, line):
    tree = {f"{p}/__init__.py": "" for p in PACKAGES}
    tree.update({"app/settings.py": "", "app/api/__init__.py": "", "app/api/speakers.py": "", "storage/models.py": "",
                 "workers/tasks.py": "", "workers/celery_app.py": "", "app/container.py": "", "hra/model.py": "",
                 "storage/db.py": ""})
    write(tmp_path, tree)
    assert wrong_way_imports(import_graph(tmp_path), all_imports(tmp_path)) == []
    write(tmp_path, {path: line})
    assert wrong_way_imports(import_graph(tmp_path), all_imports(tmp_path)) != []


def test_the_seam_is_the_only_exception(tmp_path):
    tree = {f"{p}/__init__.py": "" for p in PACKAGES}
    tree.update({"workers/celery_app.py": "", "app/cli.py": "def worker():\n    from workers.celery_app import x\n"})
    write(tmp_path, tree)
    assert wrong_way_imports(import_graph(tmp_path), all_imports(tmp_path)) == []


def test_an_import_circle_is_reported(tmp_path):
    write(tmp_path, {
        **{f"{p}/__init__.py": "" for p in PACKAGES},
        "hra/a.py": "from hra import b\n",
        "hra/b.py": "def f():\n    from hra.c import x\n",
        "hra/c.py": "import hra.a\n",
    })
    assert cycles(import_graph(tmp_path)) == [["hra.a", "hra.b", "hra.c"]]
