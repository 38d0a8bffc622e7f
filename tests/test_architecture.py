"""Architecture rules, checked on the source with ``ast`` so that lazy imports are seen too.

1. ``train`` never imports ``chase_deploy``: training works without ONNX installed.
2. ``click`` is imported only by the CLI layer, ``chase_deploy/cli.py`` and
   ``chase_deploy/commands/``; the libraries take typed values.
3. Neither package has an import cycle. Every import counts, at module level and inside
   functions alike: a function-level import couples two modules just as much, and a cycle
   through one only shows when that function runs (``engine.py`` <-> ``backends/modelfile.py``
   was such a cycle). Imports under ``if TYPE_CHECKING:`` do not count, since they never run.
   ``import a.b.c`` is an edge to ``a.b.c`` alone, not to the parent packages Python also
   initialises: otherwise every package ``__init__`` that imports its own submodules would be a
   cycle.
4. The channel engine, ``chase_deploy/graph/``, stands on its own: from ``chase_deploy`` it
   imports only its own modules and ``chase_deploy.export`` (the group analysis exports the model
   it reads), never the pipeline, the backends or the CLI. No engine module is over
   ``MAX_LINES`` lines: one concept each (``docs/channel-engine.md`` maps them).

``test_the_checks_catch_violations`` feeds the same checks a synthetic tree with one violation of
each kind, so a check that passes everything would fail there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("train", "chase_deploy")
CLI_LAYER = ("chase_deploy.cli", "chase_deploy.commands")
ENGINE = "chase_deploy.graph"
ENGINE_MAY_IMPORT = (ENGINE, "chase_deploy.export")
MAX_LINES = 450


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module, as precise as the tree allows
    line: int


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


class _Imports(ast.NodeVisitor):
    """Every import statement of one module, except those under ``if TYPE_CHECKING:``."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.found: list[Import] = []

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
        if name == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append(Import(self.module, alias.name, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node)
        for alias in node.names:
            sub = f"{base}.{alias.name}" if base else alias.name
            target = sub if sub in self.known else base
            self.found.append(Import(self.module, target, node.lineno))

    def _base(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = self.module.split(".")
        package = parts if self.is_package else parts[:-1]
        package = package[: len(package) - (node.level - 1)]
        return ".".join([*package, *([node.module] if node.module else [])])


def find_imports(root: Path, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    modules = find_modules(root, packages)
    found: list[Import] = []
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py", set(modules))
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += visitor.found
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def train_imports_chase_deploy(imports: list[Import]) -> list[str]:
    return [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports
        if _within(i.source, "train") and _within(i.target, "chase_deploy")
    ]


def click_outside_cli(imports: list[Import]) -> list[str]:
    return [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports
        if _within(i.target, "click") and not any(_within(i.source, c) for c in CLI_LAYER)
    ]


def engine_reaches_out(imports: list[Import]) -> list[str]:
    return [
        f"{i.source}:{i.line} imports {i.target}"
        for i in imports
        if _within(i.source, ENGINE)
        and _within(i.target, "chase_deploy")
        and not any(_within(i.target, allowed) for allowed in ENGINE_MAY_IMPORT)
    ]


def long_engine_modules(root: Path) -> list[str]:
    found = []
    for name, path in find_modules(root, ("chase_deploy",)).items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if _within(name, ENGINE) and lines > MAX_LINES:
            found.append(f"{name} has {lines} lines")
    return found


def import_cycles(imports: list[Import], package: str) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)
    in the import graph of ``package`` (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if _within(i.source, package) and _within(i.target, package):
            graph.setdefault(i.source, set()).add(i.target)
            graph.setdefault(i.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
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
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def violations(root: Path) -> Iterator[str]:
    imports = find_imports(root)
    yield from (f"train imports chase_deploy: {v}" for v in train_imports_chase_deploy(imports))
    yield from (f"click outside the CLI layer: {v}" for v in click_outside_cli(imports))
    yield from (f"the engine imports outside it: {v}" for v in engine_reaches_out(imports))
    yield from (f"engine module too long: {v}" for v in long_engine_modules(root))
    for package in PACKAGES:
        for cycle in import_cycles(imports, package):
            yield f"import cycle in {package}: {' <-> '.join(cycle)}"


# ----------------------------------------------------------------------------------------------


def test_the_project_follows_the_rules() -> None:
    assert find_imports(ROOT), "no imports found: the checks would pass vacuously"
    assert list(violations(ROOT)) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


CLEAN = {
    "train/__init__.py": "",
    "train/core.py": "import math\n",
    "train/loop.py": "from train import core\nfrom . import core as again\n",
    "chase_deploy/__init__.py": "",
    "chase_deploy/cli.py": "import click\nfrom chase_deploy.commands import run\n",
    "chase_deploy/commands/__init__.py": "",
    "chase_deploy/commands/run.py": "import click\nfrom chase_deploy import lib\n",
    "chase_deploy/lib.py": (
        "from typing import TYPE_CHECKING\n"
        "from train.loop import core\n"
        "if TYPE_CHECKING:\n"
        "    from chase_deploy.commands import run  # never runs: no cycle\n"
    ),
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    _write(tmp_path, CLEAN)
    imports = find_imports(tmp_path)
    assert Import("train.loop", "train.core", 1) in imports
    assert Import("train.loop", "train.core", 2) in imports  # relative imports resolve
    assert list(violations(tmp_path)) == []


def test_the_checks_catch_violations(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            **CLEAN,
            # train reaching into chase_deploy, lazily
            "train/core.py": "def f():\n    from chase_deploy.lib import g\n",
            # click in a library module
            "chase_deploy/lib.py": "import click\n",
            # a cycle closed by a function-level import, and one through a relative import
            "chase_deploy/a.py": "from chase_deploy import b\n",
            "chase_deploy/b.py": "def f():\n    import chase_deploy.a\n",
            "train/x.py": "from .y import f\n",
            "train/y.py": "from train import x\n",
            # the engine reaching into the pipeline, and an engine module too long
            "chase_deploy/graph/__init__.py": "",
            "chase_deploy/graph/walk.py": "def f():\n    from chase_deploy import lib\n",
            "chase_deploy/graph/long.py": "x = 1\n" * (MAX_LINES + 1),
        },
    )
    found = list(violations(tmp_path))
    assert "train imports chase_deploy: train.core:2 imports chase_deploy.lib" in found
    assert "click outside the CLI layer: chase_deploy.lib:1 imports click" in found
    assert "import cycle in chase_deploy: chase_deploy.a <-> chase_deploy.b" in found
    assert "import cycle in train: train.x <-> train.y" in found
    assert (
        "the engine imports outside it: chase_deploy.graph.walk:2 imports chase_deploy.lib" in found
    )
    assert f"engine module too long: chase_deploy.graph.long has {MAX_LINES + 1} lines" in found
    assert len(found) == 6, found
