"""pandera (polars flavour) schemas of the lake tables, one per table.

They mirror ``fluxforge.tables`` column for column, plus the hive partition columns
(``exchange``, ``symbol``, ``date``) that the directories carry. The refinery validates every
part before writing it (``validate``); Dagster asset checks can reuse ``SCHEMAS`` directly on
``read_table`` output.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
import pyarrow as pyarrow

from fluxforge.tables import SCHEMAS as ARROW_SCHEMAS

DEC = pl.Decimal(38, 18)
_MAX_PRICE = 10**20  # venues reject anything larger (docs/table-schemas.md: <= 1e20)
_DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
_PART_RE = r"^[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,127}$"  # what Layout.sanitize_part can produce


class SchemaViolation(ValueError):
    """A table failed its pandera schema; the message names table, partition and failures."""


def _ns(nullable: bool = False) -> pa.Column:
    return pa.Column(pl.Int64, pa.Check.ge(0), nullable=nullable)


def _dec(nullable: bool = False) -> pa.Column:
    return pa.Column(DEC, [pa.Check.ge(0), pa.Check.le(_MAX_PRICE)], nullable=nullable)


def _partition() -> dict[str, pa.Column]:
    return {
        "exchange": pa.Column(pl.Utf8, pa.Check.str_matches(_PART_RE)),
        "symbol": pa.Column(pl.Utf8, pa.Check.str_matches(_PART_RE)),
        "date": pa.Column(pl.Utf8, pa.Check.str_matches(_DATE_RE)),
    }


def _schema(name: str, columns: dict[str, pa.Column]) -> pa.DataFrameSchema:
    expected = set(ARROW_SCHEMAS[name].names)
    assert set(columns) == expected, f"schemas.{name} out of sync with tables.{name}"
    return pa.DataFrameSchema({**columns, **_partition()}, name=name, strict=True, ordered=False)


TRADES = _schema(
    "trades",
    {
        "ts_event": _ns(),
        "ts_recv": _ns(),
        "venue_symbol": pa.Column(pl.Utf8),
        "trade_id": pa.Column(pl.Utf8, nullable=True),
        "price": _dec(),
        "size": _dec(),
        "side": pa.Column(pl.Utf8, pa.Check.isin(["buy", "sell", "unknown"])),
        "seq": pa.Column(pl.Int64, pa.Check.ge(0)),
    },
)

BOOK_DELTAS = _schema(
    "book_deltas",
    {
        "ts_event": _ns(),
        "ts_recv": _ns(),
        "venue_symbol": pa.Column(pl.Utf8),
        "side": pa.Column(pl.Utf8, pa.Check.isin(["bid", "ask"])),
        "price": _dec(),
        "size": _dec(),
        "update_id": pa.Column(pl.Int64, pa.Check.ge(-1)),
        "is_snapshot": pa.Column(pl.Boolean),
        "book_epoch": pa.Column(pl.Int32, pa.Check.ge(0)),
        "seq": pa.Column(pl.Int64, pa.Check.ge(0)),
    },
)

BOOK_SNAPSHOTS = _schema(
    "book_snapshots",
    {
        "ts_event": _ns(),
        "ts_recv": _ns(),
        "venue_symbol": pa.Column(pl.Utf8),
        "depth": pa.Column(pl.Int32, pa.Check.ge(0)),
        "bid_px": pa.Column(pl.List(DEC)),
        "bid_sz": pa.Column(pl.List(DEC)),
        "ask_px": pa.Column(pl.List(DEC)),
        "ask_sz": pa.Column(pl.List(DEC)),
        "reason": pa.Column(pl.Utf8, pa.Check.isin(["sod", "periodic", "reconnect", "resync"])),
        "book_epoch": pa.Column(pl.Int32, pa.Check.ge(0)),
        "update_id": pa.Column(pl.Int64, pa.Check.ge(-1)),
        "seq": pa.Column(pl.Int64, pa.Check.ge(-1)),
    },
)

QUOTES = _schema(
    "quotes",
    {
        "ts_event": _ns(),
        "ts_recv": _ns(),
        "venue_symbol": pa.Column(pl.Utf8),
        "bid_px": _dec(nullable=True),
        "bid_sz": _dec(nullable=True),
        "ask_px": _dec(nullable=True),
        "ask_sz": _dec(nullable=True),
        "last": _dec(nullable=True),
        "seq": pa.Column(pl.Int64, pa.Check.ge(0)),
    },
)

QUARANTINE = _schema(
    "quarantine",
    {
        "segment": pa.Column(pl.Utf8),
        "line_no": pa.Column(pl.Int64, pa.Check.ge(1)),
        "seq": pa.Column(pl.Int64, pa.Check.ge(-1)),
        "ts_recv": pa.Column(pl.Int64, pa.Check.ge(-1)),
        "reason": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "raw": pa.Column(pl.Binary),
    },
)

GAP_LEDGER = _schema(
    "gap_ledger",
    {
        "channel": pa.Column(pl.Utf8, nullable=True),
        "ts_from": pa.Column(pl.Int64, pa.Check.ge(-1)),
        "ts_to": pa.Column(pl.Int64, pa.Check.ge(0)),
        "cause": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "book_epoch": pa.Column(pl.Int32, pa.Check.ge(0)),
        "detail": pa.Column(pl.Utf8, nullable=True),
        "segment": pa.Column(pl.Utf8, nullable=True),
    },
)

OHLCV = _schema(
    "ohlcv",
    {
        "ts": _ns(),
        "interval": pa.Column(pl.Utf8, pa.Check.str_matches(r"^[1-9][0-9]*[smhdwMy]$")),
        "open": _dec(),
        "high": _dec(),
        "low": _dec(),
        "close": _dec(),
        "volume": _dec(),
        "trade_count": pa.Column(pl.Int64, pa.Check.ge(0), nullable=True),
    },
)

OHLCV = _schema(
    "ohlcv",
    {
        "ts": _ns(),
        "interval": pa.Column(pl.Utf8, pa.Check.str_matches(r"^[0-9]+[smhdwMy]$")),
        "open": _dec(),
        "high": _dec(),
        "low": _dec(),
        "close": _dec(),
        "volume": _dec(),
        "trade_count": pa.Column(pl.Int64, pa.Check.ge(0), nullable=True),
    },
)


def _count() -> pa.Column:
    return pa.Column(pl.Int64, pa.Check.ge(0))


def _latency() -> pa.Column:
    return pa.Column(pl.Int64, nullable=True)  # negative when the venue clock runs ahead


FEED_STATS = _schema(
    "feed_stats",
    {
        "hour": _ns(),
        "channel": pa.Column(pl.Utf8, pa.Check.isin(["trades", "quotes", "book", "control"])),
        "segment": pa.Column(pl.Utf8, pa.Check.str_length(min_value=1)),
        "messages": _count(),
        "rows": _count(),
        "first_ts_recv": _ns(nullable=True),
        "last_ts_recv": _ns(nullable=True),
        "latency_messages": _count(),
        "latency_p50_ns": _latency(),
        "latency_p90_ns": _latency(),
        "latency_p99_ns": _latency(),
        "latency_max_ns": _latency(),
        "clock_offset_ns": _latency(),
        "negative_latency": _count(),
        "latency_bins": pa.Column(pl.List(pl.Int32)),
        "latency_counts": pa.Column(pl.List(pl.Int64)),
        "gaps": _count(),
        "reconnects": _count(),
        "active_minutes": pa.Column(pl.Int64, [pa.Check.ge(0), pa.Check.lt(1 << 60)]),
    },
)

BOOK_DRIFT = _schema(
    "book_drift",
    {
        "ts_event": _ns(),
        "ts_recv": _ns(),
        "venue_symbol": pa.Column(pl.Utf8),
        "book_epoch": pa.Column(pl.Int32, pa.Check.ge(0)),
        "update_id": pa.Column(pl.Int64, pa.Check.ge(-1)),
        "seq": pa.Column(pl.Int64, pa.Check.ge(0)),
        "from_rest": pa.Column(pl.Boolean),
        "integrity": pa.Column(pl.Utf8, pa.Check.isin(["checksum", "chain", "none"])),
        "levels_compared": _count(),
        "levels_differing": pa.Column(pl.Int64, pa.Check.ge(1)),
        "max_size_diff": _dec(),
    },
)

SCHEMAS: dict[str, pa.DataFrameSchema] = {
    "trades": TRADES,
    "book_deltas": BOOK_DELTAS,
    "book_snapshots": BOOK_SNAPSHOTS,
    "quotes": QUOTES,
    "quarantine": QUARANTINE,
    "gap_ledger": GAP_LEDGER,
    "ohlcv": OHLCV,
    "feed_stats": FEED_STATS,
    "book_drift": BOOK_DRIFT,
}


def validate(table: str, data: pyarrow.Table, exchange: str, symbol: str, date: str) -> None:
    """Validate one part (file columns only) as it will be read back with its hive columns.

    Raises SchemaViolation naming the table, the partition and pandera's failure cases."""
    try:
        schema = SCHEMAS[table]
    except KeyError:
        raise SchemaViolation(f"no schema for table {table!r}; known: {sorted(SCHEMAS)}") from None
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        pl.lit(exchange, pl.Utf8).alias("exchange"),
        pl.lit(symbol, pl.Utf8).alias("symbol"),
        pl.lit(date, pl.Utf8).alias("date"),
    )
    try:
        schema.validate(frame)
    except (pa.errors.SchemaError, pa.errors.SchemaErrors) as exc:
        raise SchemaViolation(
            f"{table} exchange={exchange} symbol={symbol} date={date}: {exc}"
        ) from None


def validate_parts(table: str, parts: list[tuple[pyarrow.Table, str, str, str]]) -> None:
    """Validate many parts of one table in one pandera call (its per-call overhead dominates
    small parts); on failure, find and name the failing partition."""
    if not parts:
        return
    if table not in SCHEMAS:
        raise SchemaViolation(f"no schema for table {table!r}; known: {sorted(SCHEMAS)}")
    frames = []
    for data, exchange, symbol, date in parts:
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        frames.append(
            frame.with_columns(
                pl.lit(exchange, pl.Utf8).alias("exchange"),
                pl.lit(symbol, pl.Utf8).alias("symbol"),
                pl.lit(date, pl.Utf8).alias("date"),
            )
        )
    try:
        SCHEMAS[table].validate(pl.concat(frames, how="vertical"))
    except (pa.errors.SchemaError, pa.errors.SchemaErrors):
        for data, exchange, symbol, date in parts:
            validate(table, data, exchange, symbol, date)
        raise
