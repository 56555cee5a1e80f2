"""The lake rows the plots draw, gathered per (exchange, symbol, date) partition through the
lake API (``lake.partitions`` to find them, ``lake.read_table`` to read them)."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from fluxforge import lake, quality
from fluxforge.config import Config
from fluxforge.storage import Layout, open_storage

LATENCY_TABLES = ("trades", "quotes", "book_deltas")


def _read(
    cfg: Config, table: str, first: date, last: date, exchange: str | None, columns: list[str]
) -> pa.Table | None:
    layer = cfg.storage.etl_output
    storage, layout = open_storage(layer), Layout.of(layer)
    out = []
    for part in lake.partitions(storage, table, layout):
        if exchange not in (None, part.exchange) or not (
            first.isoformat() <= part.date <= last.isoformat()
        ):
            continue
        rows = lake.read_table(storage, table, part.exchange, part.symbol, part.date, layout)
        out.append(rows.select(columns))
    return pa.concat_tables(out) if out else None


def coverage(cfg: Config, first: date, last: date, exchange: str | None = None) -> pa.Table:
    """``quality.coverage`` of the UTC days [first, last] (one exchange or all)."""
    cols = ["exchange", "symbol", "ts_recv"]
    tables = {t: _read(cfg, t, first, last, exchange, cols) for t in quality.COVERAGE_CHANNELS}
    gaps = _read(cfg, "gap_ledger", first, last, exchange, ["exchange", "symbol", "ts_to"])
    return quality.coverage(tables, gaps)


def latency_rows(cfg: Config, first: date, last: date, exchange: str | None = None) -> pa.Table:
    """Trades, quotes and book deltas (exchange, symbol, ts_event, ts_recv) of the UTC days
    [first, last]."""
    cols = ["exchange", "symbol", "ts_event", "ts_recv"]
    parts = [_read(cfg, t, first, last, exchange, cols) for t in LATENCY_TABLES]
    found = [p for p in parts if p is not None]
    if not found:
        return pa.schema(
            [(c, pa.string() if c in cols[:2] else pa.int64()) for c in cols]
        ).empty_table()
    return pa.concat_tables(found)
