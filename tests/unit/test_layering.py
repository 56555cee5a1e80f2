"""The library never imports dagster (STYLE: fluxforge/ is plain Python)."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "fluxforge"
DAEMON = Path(__file__).resolve().parents[2] / "ingestion_daemon"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_library_and_daemon_never_import_dagster() -> None:
    offenders = [
        str(p) for root in (LIB, DAEMON) for p in root.rglob("*.py") if "dagster" in _imports(p)
    ]
    files = list(LIB.rglob("*.py"))
    assert files, "library sources not found"
    assert offenders == []
