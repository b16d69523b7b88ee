"""The folders' layering, read from the source with `ast`: every import, at the top of a file or
inside a function, points down the data path, and no module imports itself through others.

    encoder  <-  retriever  <-  recipes  <-  evals       (retriever_command.py: above them all)
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What each folder may import of ours (itself included); everything else of ours is above it.
MAY_IMPORT = {
    "encoder": {"encoder"},
    "retriever": {"encoder", "retriever"},
    "recipes": {"encoder", "retriever", "recipes"},
    "evals": {"encoder", "retriever", "recipes", "evals"},
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, module of ours or not) of every import that runs: `import x`, `from x import y` (y
    itself when it is a module), `importlib.import_module("x")`; `if TYPE_CHECKING:` blocks skipped."""
    package = module_name(root, path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(root, path)
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package up
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((node.lineno, base))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if (root / Path(*candidate.split("."))).with_suffix(".py").is_file() or \
                        (root / Path(*candidate.split(".")) / "__init__.py").is_file():
                    found.append((node.lineno, candidate))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def source_files(root: Path) -> list[Path]:
    return sorted(p for folder in MAY_IMPORT for p in (root / folder).rglob("*.py"))


def layering_violations(root: Path) -> list[str]:
    problems = []
    for path in source_files(root):
        folder = path.relative_to(root).parts[0]
        for line, module in imports(root, path):
            top = module.split(".")[0]
            if top in MAY_IMPORT and top not in MAY_IMPORT[folder]:
                problems.append(f"{path.relative_to(root)}:{line}: {folder}/ imports {module} (may import "
                                f"{', '.join(sorted(MAY_IMPORT[folder]))})")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles in the graph of our modules (an edge per import that runs), each as a path."""
    ours = {module_name(root, p): p for p in source_files(root)}
    graph = {name: sorted({m for _, m in imports(root, path) if m in ours and m != name})
             for name, path in ours.items()}
    cycles, state = [], {}  # state: 1 while on the current path, 2 when done

    def visit(path: list[str]) -> None:
        name = path[-1]
        state[name] = 1
        for target in graph[name]:
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit([name])
    return cycles


def test_imports_point_down_the_data_path():
    assert layering_violations(ROOT) == []


def test_no_module_imports_itself_through_others():
    assert import_cycles(ROOT) == []


def test_the_rules_catch_an_import_up_and_a_cycle(tmp_path):
    for folder in MAY_IMPORT:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "evals" / "cli.py").write_text("import retriever.a\n")
    (tmp_path / "retriever" / "a.py").write_text("def mount():\n    from evals import cli\n")
    (tmp_path / "encoder" / "b.py").write_text("from encoder import c\n")
    (tmp_path / "encoder" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from retriever import a\n"
        "def load():\n    import importlib\n    return importlib.import_module('encoder.b')\n")
    assert layering_violations(tmp_path) == [
        "retriever/a.py:2: retriever/ imports evals (may import encoder, retriever)",
        "retriever/a.py:2: retriever/ imports evals.cli (may import encoder, retriever)",
    ]
    assert import_cycles(tmp_path) == [["encoder.b", "encoder.c", "encoder.b"],
                                       ["evals.cli", "retriever.a", "evals.cli"]]
