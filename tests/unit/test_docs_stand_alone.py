"""The repository stands alone: code and docs cite files in docs/, never a document outside
the repository (a spec section or a contracts file), and every docs/ file they cite exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("fluxforge", "fluxforge_dagster", "ingestion_daemon", "docs", "benchmarks", "infra",
           "dbt_like_sql", "config", "tests", "scripts")  # fmt: skip
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sql", ".toml", ".sh"}
OUTSIDE = re.compile(r"SPEC\s*§|\bSPEC\.md\b|CONTRACTS(\.md|:)")
CITED = re.compile(r"\bdocs/([a-z0-9-]+\.md)\b")


def _files() -> list[Path]:
    out = [ROOT / "README.md"]
    for top in SCANNED:
        out += [p for p in (ROOT / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()]
    skip = {Path(__file__).name}
    return [p for p in out if p.name not in skip]


def test_no_file_cites_a_document_outside_the_repository() -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _files()
        for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert bad == []


def test_every_cited_docs_file_exists() -> None:
    cited = {m for p in _files() for m in CITED.findall(p.read_text(errors="replace"))}
    assert {"architecture.md", "segment-format.md", "table-schemas.md", "integrity.md"} <= cited
    assert sorted(c for c in cited if not (ROOT / "docs" / c).is_file()) == []
