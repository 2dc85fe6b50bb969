"""The shape of the package, checked over its import graph (read with ``ast``, nothing imported).

- no import circle between modules (module-level imports, what Python executes on import);
- the packages form layers: the dependency graph between top-level packages (lazy imports inside
  functions included) has no cycle, the library never imports the CLI, ``report`` reads only
  records (from ``train`` only the checkpoint readers), and ``analysis`` needs no model code;
- no function in ``csrl.train`` is longer than 80 lines.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "csrl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The csrl module an imported name refers to (``csrl.a.b.func`` -> ``csrl.a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool, *, top_level_only: bool) -> list[str]:
    out: list[str] = []

    def visit(node: ast.AST, nested: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import) and not (top_level_only and nested):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not (top_level_only and nested):
            base = node.module or ""
            if node.level:
                pkg = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            out.extend(f"{base}.{a.name}" for a in node.names)  # a submodule, or a name in ``base``
        inner = nested or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return out


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _imports(tree, mod, path.name == "__init__.py", top_level_only=top_level_only):
            if not name.startswith("csrl"):
                continue
            target = _resolve(name, modules)
            if target is not None and target != mod:
                graph[mod].add(target)
        graph.setdefault(mod, set())
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _package_graph() -> dict[str, set[str]]:
    pkgs: dict[str, set[str]] = defaultdict(set)
    for mod, deps in _graph(top_level_only=False).items():
        src = _package(mod)
        pkgs.setdefault(src, set())
        for d in deps:
            dst = _package(d)
            # the root package (csrl/__init__.py: the public API) may re-export from anywhere
            if dst != src and src != "csrl" and dst != "csrl":
                pkgs[src].add(dst)
    return pkgs


def test_helpers_find_a_planted_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_import_circle() -> None:
    assert _cycles(_graph(top_level_only=True)) == []


def test_packages_form_layers() -> None:
    assert _cycles(_package_graph()) == []


def _importers_of(target: str, *, within: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, deps in _graph(top_level_only=False).items():
        if mod.startswith(within):
            hits = {d for d in deps if d == target or d.startswith(target + ".")}
            if hits:
                out[mod] = hits
    return out


def test_library_never_imports_the_cli() -> None:
    entry_points = ("csrl.cli", "csrl.__main__")  # ``python -m csrl`` runs the CLI
    users = {m: d for m, d in _importers_of("csrl.cli", within="csrl").items() if not m.startswith(entry_points)}
    assert users == {}


@pytest.mark.parametrize("package", ["csrl.models", "csrl.losses", "csrl.evaluate", "csrl.analysis", "csrl.data"])
def test_core_packages_do_not_import_training(package: str) -> None:
    assert _importers_of("csrl.train", within=package) == {}


def test_analysis_needs_no_model_code() -> None:
    assert _importers_of("csrl.models", within="csrl.analysis") == {}


def test_report_reads_only_records_from_train() -> None:
    allowed = {"csrl.train.checkpoint"}
    used = {d for deps in _importers_of("csrl.train", within="csrl.report").values() for d in deps}
    assert used <= allowed
    assert _importers_of("csrl.sweep", within="csrl.report") == {}


def _long_functions(package: Path, limit: int) -> list[str]:
    long = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    return long


def test_training_functions_are_short() -> None:
    assert _long_functions(SRC / "train", 80) == []
