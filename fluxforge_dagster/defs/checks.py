"""Asset checks of the refinery tables: schema per table, market sanity, reconciliation.

Evaluated inside the refinery step on the part files that step wrote (so a check always sees
exactly the data of its run); blocking where bad data would reach downstream assets (coverage,
hot tables, SQL models). The evaluations themselves are `fluxforge.quality` functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from fluxforge import quality
from fluxforge.config import Config
from fluxforge.storage import Storage

TABLES = (
    "trades", "book_deltas", "book_snapshots", "quotes", "quarantine", "gap_ledger",
    "feed_stats", "book_drift",
)  # fmt: skip

# (check name, asset, blocking, description)
SANITY = (
    ("books_not_crossed", "book_snapshots", True, "best bid < best ask in snapshots and quotes"),
    ("trade_ids_unique", "trades", True, "no (exchange, symbol, trade_id) twice"),
    ("trades_within_book", "trades", False, "trades within tolerance of the last quote"),
    ("books_not_stale", "book_deltas", False, "no book silent longer than the threshold"),
    ("lines_reconciled", "quarantine", True, "lines in = data + quarantined + control"),
)


def table_check_specs() -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(
            f"{t}_schema_valid",
            asset=t,
            blocking=True,
            description=f"{t} part files pass the pandera schema (fluxforge.schemas)",
        )
        for t in TABLES
    ]
    specs += [
        dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=desc)
        for name, asset, blocking, desc in SANITY
    ]
    specs.append(
        dg.AssetCheckSpec(
            "books_not_drifted",
            asset="book_drift",
            blocking=True,
            description="no venue snapshot disagrees with the replayed book: fails on venues "
            "with checksums or update-id chains (a bug of ours), warns elsewhere",
        )
    )
    return specs


def _result(name: str, asset: str, f: quality.Finding, blocking: bool) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=f.passed,
        metadata=f.metadata(),
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
    )


def evaluate(
    cfg: Config, storage: Storage, files: Iterable[str], report: Mapping[str, Any]
) -> list[dg.AssetCheckResult]:
    """One AssetCheckResult per spec, computed from the run's part files and its report."""
    by_table = quality.parts_by_table(files)
    data = {t: quality.read_parts(storage, t, by_table.get(t, [])) for t in TABLES}
    found = {
        f"{t}_schema_valid": quality.schema_valid(storage, t, by_table.get(t, [])) for t in TABLES
    }
    found["books_not_crossed"] = quality.crossed_books(data["book_snapshots"], data["quotes"])
    found["trade_ids_unique"] = quality.duplicate_trade_ids(data["trades"])
    found["trades_within_book"] = quality.trades_outside_book(
        data["trades"], data["quotes"], cfg.dagster.trade_outside_book_tolerance
    )
    found["books_not_stale"] = quality.stale_books(
        data["book_deltas"], cfg.dagster.stale_book_after_s
    )
    found["lines_reconciled"] = quality.reconcile(report)
    results = [_result(f"{t}_schema_valid", t, found[f"{t}_schema_valid"], True) for t in TABLES]
    results += [_result(n, a, found[n], b) for n, a, b, _ in SANITY]
    drift, verified = quality.book_drift(data["book_drift"])
    results.append(_result("books_not_drifted", "book_drift", drift, verified))
    return results
