"""The lake rows the plots draw, gathered per (exchange, symbol, date) partition through the
lake API (``lake.partitions`` to find them, ``lake.read_table`` to read them)."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from fluxforge import feed_stats, lake, quality
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


_FEED_COLUMNS = ["exchange", "hour", "latency_bins", "latency_counts", "clock_offset_ns",
                 "latency_max_ns"]  # fmt: skip
HOUR_NS = 3_600_000_000_000


def latency_from_feed_stats(
    cfg: Config, first: date, last: date, exchange: str | None = None
) -> pa.Table | None:
    """Hourly p50/p90/p99 latency per exchange from the ``feed_stats`` table (its latency
    histograms of every symbol and channel merged, ``feed_stats.histogram_quantile``), in the
    shape of ``plots.latency_table``; None when the table holds nothing in the range."""
    rows = _read(cfg, "feed_stats", first, last, exchange, _FEED_COLUMNS)
    if rows is None:
        return None
    groups: dict[tuple[str, int], dict] = {}
    for r in rows.to_pylist():
        if not r["latency_counts"]:
            continue
        g = groups.setdefault((r["exchange"], r["hour"]), {"hist": {}, "lo": None, "hi": None})
        for b, c in zip(r["latency_bins"], r["latency_counts"], strict=True):
            g["hist"][b] = g["hist"].get(b, 0) + c
        lo, hi = r["clock_offset_ns"], r["latency_max_ns"]
        g["lo"] = lo if g["lo"] is None else min(g["lo"], lo)
        g["hi"] = hi if g["hi"] is None else max(g["hi"], hi)
    if not groups:
        return None
    out: dict[str, list] = {k: [] for k in ("exchange", "bucket_ns", "p50_ms", "p90_ms",
                                            "p99_ms", "rows", "width_ns")}  # fmt: skip
    for (ex, hour), g in sorted(groups.items()):
        out["exchange"].append(ex)
        out["bucket_ns"].append(hour)
        for name, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)):
            out[name].append(feed_stats.histogram_quantile(g["hist"], q, g["lo"], g["hi"]) / 1e6)
        out["rows"].append(sum(g["hist"].values()))
        out["width_ns"].append(HOUR_NS)
    return pa.table(out)
