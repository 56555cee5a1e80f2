"""The library's import graph: no cycle anywhere in fluxforge/ (imports inside functions
count too: a lazy import only hides a cycle), and no module importing another module's
underscore names (STYLE rule 11)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "fluxforge"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """module -> library modules it imports; and every `from x import _name` across modules.
    `from pkg import name` counts as importing `pkg.name` when that is a module. A package's
    implicit import by its submodules is not an edge (Python runs it first, not in a loop)."""
    files = {_module_name(p): p for p in LIB.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    private: list[str] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}  # local name -> library module
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
                aliases.update({a.asname: a.name for a in node.names if a.asname})
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in files:
                        targets.append(sub)
                        aliases[alias.asname or alias.name] = sub
                    else:
                        targets.append(source)
                        if alias.name.startswith("_") and source != module:
                            private.append(f"{module}: from {source} import {alias.name}")
            for target in targets:
                if target in files and target != module:
                    edges[module].add(target)
        for node in ast.walk(tree):  # `venue._name` on an imported library module
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and aliases.get(node.value.id, module) != module
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                private.append(f"{module}: {node.value.id}.{node.attr}")
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_import_graph_finds_a_planted_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_library_import_graph_has_no_cycle() -> None:
    edges, _ = _graph()
    assert len(edges) > 20, "library sources not found"
    assert _cycles(edges) == []


def test_library_modules_never_import_underscore_names_of_other_modules() -> None:
    _, private = _graph()
    assert private == []
