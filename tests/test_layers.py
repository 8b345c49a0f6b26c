"""The house rules of DESIGN.md ("Growing the house"), read from the source with `ast`.

Every import is checked, those inside functions too: a forbidden one fails with its file and line.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("export", "runtime", "viz", "benchmarks")
MAX_LINES = 400

# runtime's layers, top first: a module may import only from layers above its own, and from its own group.
# jobs and serve share a rank and never import each other; backends and data likewise.
RANKS = {"errors": 0, "artifacts": 1, "backends": 2, "data": 2, "library": 3, "jobs": 4, "serve": 4, "cli": 5}
CLI_HELPERS = {"runtime.cli.args", "runtime.cli.process"}  # what export's and viz's own CLIs may use
EXPORT_VIZ_MAY_USE = {"errors", "artifacts", "backends", "data", "library"}


class Import(NamedTuple):
    module: str  # the absolute module imported (for `from X import name`, X.name when that is a module)
    file: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


MODULES = {module_name(p): p for p in source_files()}


def imports(path: Path, text: str | None = None) -> list[Import]:
    """Every project import in a file (or in `text`, as if it were that file's), at any depth, relative ones
    made absolute."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        rel = str(path.relative_to(ROOT))
        found += [Import(n, rel, node.lineno) for n in dict.fromkeys(names) if n.split(".")[0] in PACKAGES]
    return found


def group(module: str) -> str | None:
    """The layer of a runtime module (None for the package face, `runtime/__init__.py`)."""
    parts = module.split(".")
    if parts[0] != "runtime" or len(parts) == 1:
        return None
    if parts[1] == "errors":
        return "errors"
    if parts[1] in RANKS:
        return parts[1]
    return "library"  # api, preprocess, images, compare, ...


def is_cli(module: str) -> bool:
    """A command-line module of export/ or viz/ (or any `__main__`): the only places flags live outside runtime.cli."""
    last = module.rpartition(".")[2]
    return last in ("__main__", "cli") or last.endswith("_cli")


def violation(importer: str, imp: Import) -> str | None:
    """Why this import breaks a rule, or None."""
    target, top = imp.module, importer.split(".")[0]
    where = f"{imp.file}:{imp.line}: {importer} imports {target}"
    if top == "benchmarks":
        return None  # measurement scripts may use anything (but no circles: below)
    if target.split(".")[0] in ("export", "viz") and top == "runtime":
        return f"{where}: runtime never imports export or viz"
    if target.split(".")[0] == "export" and top == "viz":
        return f"{where}: viz never imports export"
    if not target.startswith("runtime"):
        return None
    mine, theirs = group(importer), group(target)
    if theirs is None and importer != "runtime.__main__":
        return f"{where}: import from the defining module, not the package face `runtime`"
    if theirs == "cli":
        if importer.endswith("__main__") and (top == "runtime" or target in CLI_HELPERS):
            return None
        if top in ("export", "viz") and is_cli(importer) and target in CLI_HELPERS:
            return None
        if mine == "cli":
            return None
        return f"{where}: nothing imports runtime.cli but __main__ (and export's and viz's CLIs: args and process)"
    if top in ("export", "viz"):
        return (None if theirs in EXPORT_VIZ_MAY_USE
                else f"{where}: export/ and viz/ use only {sorted(EXPORT_VIZ_MAY_USE)}")
    if mine is None:  # the face re-exports the library and runtime.stats
        return (None if theirs in ("errors", "artifacts", "backends", "library", "jobs")
                else f"{where}: not for the face")
    if mine == theirs or RANKS[theirs] < RANKS[mine]:
        return None
    return f"{where}: layer {mine!r} may import only layers above it ({theirs!r} is not)"


def test_every_import_follows_the_layers():
    problems = [v for path in source_files() for imp in imports(path)
                if (v := violation(module_name(path), imp)) is not None]
    assert not problems, "\n".join(problems)


def test_no_import_circles():
    graph = {m: {i.module for i in imports(p) if i.module in MODULES and i.module != m} for m, p in MODULES.items()}
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


def test_library_code_never_parses_arguments():
    offenders = [f"{i.file}:{i.line}" for path in source_files() if not _cli_side(module_name(path))
                 for i in _plain_imports(path, "argparse")]
    assert not offenders, "argparse outside the CLI modules: " + ", ".join(offenders)


def test_modules_stay_readable_in_one_sitting():
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in source_files()
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(long)


@pytest.mark.parametrize("bad, why", [
    ("runtime/errors.py:from runtime.artifacts.paths import confine", "may import only layers above"),
    ("runtime/jobs/stats.py:from runtime.serve.app import create_app", "may import only layers above"),
    ("runtime/serve/app.py:from runtime.jobs.sources import open_source", "may import only layers above"),
    ("runtime/api.py:from runtime.cli.args import comma_list", "nothing imports runtime.cli"),
    ("runtime/api.py:from export.pipeline import export_model", "never imports export"),
    ("export/verify.py:from runtime.jobs.stats import Stats", "export/ and viz/ use only"),
    ("viz/figures.py:from runtime.cli.process import run_cli", "nothing imports runtime.cli"),
    ("viz/tiling.py:import runtime", "package face"),
])
def test_the_rules_catch_forbidden_imports(bad, why, tmp_path):
    """The checker itself: each forbidden import, placed inside a function, is reported with file and line."""
    rel, statement = bad.split(":", 1)
    path = ROOT / rel
    found = imports(path, f"def f():\n    {statement}\n")
    problems = [v for imp in found if (v := violation(module_name(path), imp))]
    assert problems and why in problems[0] and f"{rel}:2:" in problems[0]


def _cli_side(module: str) -> bool:
    return module.startswith(("runtime.cli", "benchmarks")) or is_cli(module)


def _plain_imports(path: Path, name: str) -> list[Import]:
    rel = str(path.relative_to(ROOT))
    return [Import(name, rel, n.lineno) for n in ast.walk(ast.parse(path.read_text()))
            if (isinstance(n, ast.Import) and any(a.name == name for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.module == name)]


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                result.append(component)
    return result
