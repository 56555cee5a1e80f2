"""Arrow schemas of the lake tables (docs/table-schemas.md). Files hold these columns; the hive
directories add ``exchange``, ``symbol`` and ``date`` (UTC date of ``ts_recv``, i.e. of the raw
segment).

Prices and sizes are exact decimals, ``DECIMAL`` = decimal128(38, 12), cast from the wire
strings. Scale 12 is the finest tick or lot size any supported venue documents (OKX and Bitget
list instruments with 1e-12 price ticks, Kraken 1e-10, Coinbase and Binance 1e-8), and it keeps
``price * size`` inside 38 digits: DuckDB multiplies two decimal(38, 12) into decimal(38, 24)
(14 integer digits of notional) where two decimal(38, 18) gave scale 36 and overflowed on any
real trade; Polars keeps scale 12. docs/data-guide.md ("Types") has the full reasoning.

Times have two forms, converted in one place (``to_lake`` / ``from_lake``). In memory (the
refinery, the book engine, the hot store) a time is int64 ns since the epoch, UTC, and a
negative value means "none". In the lake files it is a Delta ``timestamp``: microseconds, UTC
(``LAKE_TIME``), null for "none", so DuckDB, Polars, pandas, Spark, Trino and Athena show times
as times. Delta has no nanosecond type that today's readers open (the ``timestampNanos`` table
feature is refused by delta-rs, Polars and DuckDB), and PostgreSQL's ``timestamptz`` is
microseconds too; no venue sends finer times, and the raw segments keep the daemon's receive
clock in ns verbatim (docs/data-guide.md, "Types").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

T = TypeVar("T")

# The one definition of the lake's decimal type: the wire rules (fluxforge/wire/decimal.py),
# the book kernel's scaling, the hot store's numeric(p, s) and every cast derive from it.
# Changing it: also delete the numba caches (__pycache__/*.nbi, *.nbc): numba's on-disk cache
# does not notice a constant imported from another module.
DECIMAL_PRECISION = 38
DECIMAL_SCALE = 12
DECIMAL = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
NS = pa.int64()
LAKE_TIME = pa.timestamp("us", tz="UTC")
NS_PER_LAKE_UNIT = 1_000
PARTITION_COLUMNS = ("exchange", "symbol", "date")
_TIME_KEY = b"fluxforge.time"


def time_column(name: str, none: int | None = -1) -> pa.Field:
    """A time column: int64 ns in memory, ``LAKE_TIME`` in the lake. `none` is the in-memory
    value a null lake time reads back as (None: stays null)."""
    return pa.field(name, NS, metadata={_TIME_KEY: b"" if none is None else str(none).encode()})


def time_columns(schema: pa.Schema) -> list[str]:
    """Names of the time columns of an in-memory table schema."""
    return list(_time_columns(schema))


def per_schema(
    cache: dict[int, tuple[pa.Schema, T]], schema: pa.Schema, make: Callable[[], T]
) -> T:
    """``make()`` remembered in `cache` per schema OBJECT: a refinery segment handles ~160
    parts of the same few schemas, and hashing an Arrow schema walks every field each time
    (~20 µs). The entry keeps the schema, so its id stays its own."""
    entry = cache.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = cache[id(schema)] = (schema, make())
    return entry[1]


_TIME_NAMES: dict[int, tuple[pa.Schema, tuple[str, ...]]] = {}


def _time_columns(schema: pa.Schema) -> tuple[str, ...]:
    return per_schema(
        _TIME_NAMES,
        schema,
        lambda: tuple(f.name for f in schema if f.metadata and _TIME_KEY in f.metadata),
    )


def lake_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of the lake files for in-memory `schema`: time columns as ``LAKE_TIME``."""
    for name in time_columns(schema):
        i = schema.get_field_index(name)
        schema = schema.set(i, pa.field(name, LAKE_TIME))
    return schema


# in-memory schema -> (index, stored field) of each of its time columns (``per_schema``)
_LAKE_PLANS: dict[int, tuple[pa.Schema, tuple[tuple[int, pa.Field], ...]]] = {}


def to_lake(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """In-memory rows -> lake rows: ns times floored to microseconds, negative ones null."""
    if not data.schema.equals(schema, check_metadata=True):
        return _to_lake_any(data, schema)
    times = per_schema(_LAKE_PLANS, schema, lambda: _lake_plan(schema))
    # rows exactly in `schema` (every refinery part): the stored fields are known, and each
    # time column replaced in place (cheaper than rebuilding the table from all its columns)
    for i, field in times:
        data = data.set_column(i, field, _lake_times(data.column(i)))
    return data


def _lake_plan(schema: pa.Schema) -> tuple[tuple[int, pa.Field], ...]:
    stored = lake_schema(schema)
    return tuple((stored.get_field_index(n), stored.field(n)) for n in _time_columns(schema))


def _to_lake_any(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``to_lake`` of rows in another column order or with other metadata than `schema`."""
    columns: list[pa.ChunkedArray] | None = None
    stored = data.schema
    for name in _time_columns(schema):
        i = stored.get_field_index(name)
        if i < 0:
            continue
        columns = columns or data.columns
        columns[i] = _lake_times(columns[i])
        stored = stored.set(i, pa.field(name, LAKE_TIME))
    # one table built at the end, not one per converted column
    return data if columns is None else pa.Table.from_arrays(columns, schema=stored)


def _lake_times(ns: pa.ChunkedArray) -> pa.ChunkedArray:
    if ns.null_count or ns.type != NS:
        # values are >= 0 once negatives are null, so truncating division is a floor
        us = pc.divide(
            pc.if_else(pc.less(ns, 0), pa.scalar(None, pa.int64()), ns),
            pa.scalar(NS_PER_LAKE_UNIT, pa.int64()),
        )
        return us.cast(LAKE_TIME)
    # the common case (int64 ns, no nulls) in numpy: a min to learn whether any time is
    # "none" (negative), the division, and the microseconds wrapped as they are (a third of
    # the CPU of the three compute kernels above)
    chunks = []
    for chunk in ns.chunks:
        values = chunk.to_numpy()
        if len(values) and values.min() < 0:
            chunks.append(pa.array(values // NS_PER_LAKE_UNIT, mask=values < 0).view(LAKE_TIME))
        else:
            us = values // NS_PER_LAKE_UNIT
            chunks.append(pa.Array.from_buffers(LAKE_TIME, len(us), [None, pa.py_buffer(us)]))
    return pa.chunked_array(chunks, LAKE_TIME)


def at_lake_precision(ns: T) -> T:
    """ns times (ints, numpy arrays, Polars expressions) floored to what the lake stores."""
    return ns // NS_PER_LAKE_UNIT * NS_PER_LAKE_UNIT


def lake_filters(
    filters: list[tuple[str, str, object]], schema: pa.Schema
) -> list[tuple[str, str, object]]:
    """Row filters on in-memory values (ns) as filters on the lake's stored times, with the
    same answer: a stored time s stands for s * 1000 ns, so ``<= t`` / ``> t`` compare with
    floor(t / 1000) and ``>= t`` / ``< t`` with the ceiling."""
    times = set(time_columns(schema))
    out: list[tuple[str, str, object]] = []
    for col, op, value in filters:
        if col not in times or not isinstance(value, int):
            out.append((col, op, value))
            continue
        q, r = divmod(value, NS_PER_LAKE_UNIT)
        ceil = q + (r != 0)
        if op in ("<=", ">"):
            out.append((col, op, pa.scalar(q, pa.int64()).cast(LAKE_TIME)))
        elif op in (">=", "<"):
            out.append((col, op, pa.scalar(ceil, pa.int64()).cast(LAKE_TIME)))
        else:  # equality: no stored time equals an instant between two microseconds
            out.append((col, ">=", pa.scalar(ceil, pa.int64()).cast(LAKE_TIME)))
            out.append((col, "<=", pa.scalar(q, pa.int64()).cast(LAKE_TIME)))
    return out


def lake_time_to_ns(times: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Lake times (a timestamp column of any unit) as int64 ns since the epoch, null kept."""
    return pc.multiply(times.cast(LAKE_TIME).cast(pa.int64()), NS_PER_LAKE_UNIT)


def from_lake(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Lake rows -> in-memory rows: microsecond times as int64 ns, null as the column's none."""
    for name in time_columns(schema):
        i = data.schema.get_field_index(name)
        if i < 0 or not pa.types.is_timestamp(data.schema.field(i).type):
            continue
        ns = lake_time_to_ns(data.column(i))
        none = schema.field(name).metadata[_TIME_KEY]
        if none and ns.null_count:
            ns = pc.fill_null(ns, int(none))
        data = data.set_column(i, schema.field(name), ns)
    return data


TRADES = pa.schema(
    [
        time_column("ts_event"),
        time_column("ts_recv"),
        ("venue_symbol", pa.string()),
        ("trade_id", pa.string()),
        ("price", DECIMAL),
        ("size", DECIMAL),
        ("side", pa.string()),  # taker side: buy | sell | unknown
        ("seq", pa.int64()),  # daemon sequence of the raw line
    ]
)

BOOK_DELTAS = pa.schema(
    [
        time_column("ts_event"),
        time_column("ts_recv"),
        ("venue_symbol", pa.string()),
        ("side", pa.string()),  # bid | ask
        ("price", DECIMAL),
        ("size", DECIMAL),  # new absolute size, 0 = remove
        ("update_id", pa.int64()),  # venue final update id of the message, -1 when none
        ("is_snapshot", pa.bool_()),  # level belongs to an exchange snapshot (book replaced)
        ("book_epoch", pa.int32()),
        ("seq", pa.int64()),
    ]
)

BOOK_SNAPSHOTS = pa.schema(
    [
        time_column("ts_event"),
        time_column("ts_recv"),
        ("venue_symbol", pa.string()),
        ("depth", pa.int32()),
        ("bid_px", pa.list_(DECIMAL)),
        ("bid_sz", pa.list_(DECIMAL)),
        ("ask_px", pa.list_(DECIMAL)),
        ("ask_sz", pa.list_(DECIMAL)),
        ("reason", pa.string()),  # sod | periodic | reconnect | resync
        ("book_epoch", pa.int32()),
        ("update_id", pa.int64()),
        # daemon seq of the last raw line reflected in the snapshot: deltas with a larger seq
        # (and ts_recv <= T) rebuild the book at T
        ("seq", pa.int64()),
    ]
)

QUOTES = pa.schema(
    [
        time_column("ts_event"),
        time_column("ts_recv"),
        ("venue_symbol", pa.string()),
        ("bid_px", DECIMAL),
        ("bid_sz", DECIMAL),
        ("ask_px", DECIMAL),
        ("ask_sz", DECIMAL),
        ("last", DECIMAL),
        ("seq", pa.int64()),
    ]
)

QUARANTINE = pa.schema(
    [
        ("segment", pa.string()),
        ("line_no", pa.int64()),
        ("seq", pa.int64()),  # -1 when the envelope itself is unreadable
        time_column("ts_recv"),  # -1 when unknown
        ("reason", pa.string()),
        ("raw", pa.binary()),  # the line exactly as stored (may be non-UTF-8)
    ]
)

GAP_LEDGER = pa.schema(
    [
        ("channel", pa.string()),
        time_column("ts_from"),  # last good event before the gap (ts_recv)
        time_column("ts_to"),  # the event that revealed it (ts_recv)
        ("cause", pa.string()),  # chain_break | checksum_mismatch | reconnect | seq_gap | ...
        ("book_epoch", pa.int32()),  # the epoch that ended
        ("detail", pa.string()),
        ("segment", pa.string()),
    ]
)

# Candles fetched from exchange REST APIs by ``fluxforge.history`` (ccxt ``fetch_ohlcv``); the
# SQL models' ``bars_*`` are the trade-derived equivalent. Parts:
# ``ohlcv/exchange=E/symbol=S/date=D/part-history-{interval}.parquet``, date = UTC date of ``ts``.
OHLCV = pa.schema(
    [
        time_column("ts"),  # bar open time
        ("interval", pa.string()),  # ccxt timeframe: 1m, 5m, 1h, 1d, ...
        ("open", DECIMAL),
        ("high", DECIMAL),
        ("low", DECIMAL),
        ("close", DECIMAL),
        ("volume", DECIMAL),  # base-asset volume
        ("trade_count", pa.int64()),  # null when the venue/ccxt does not give it
    ]
)

# A venue snapshot that disagreed with the replayed book of a still-valid epoch
# (``fluxforge.book.drift`` has the comparison rules). Partition date = date of ts_recv.
BOOK_DRIFT = pa.schema(
    [
        time_column("ts_event"),  # of the venue snapshot
        time_column("ts_recv"),
        ("venue_symbol", pa.string()),
        ("book_epoch", pa.int32()),  # the epoch the snapshot ended
        ("update_id", pa.int64()),  # the snapshot's update id, -1 when none
        ("seq", pa.int64()),  # daemon seq of the snapshot's raw line
        ("from_rest", pa.bool_()),  # a REST snapshot (Binance) rather than a stream one
        ("integrity", pa.string()),  # checksum | chain | none: how the venue verifies the book
        ("levels_compared", pa.int64()),
        ("levels_differing", pa.int64()),
        ("max_size_diff", DECIMAL),  # largest absolute size difference of a level
    ]
)

# Per segment · channel · UTC hour of an instrument: message counts, receive-minus-event latency,
# venue clock offset, gaps, reconnects, active minutes (``fluxforge.feed_stats`` defines every
# column and how ``feed_stats.hourly`` merges the rows of one hour). Partition date = the hour's.
FEED_STATS = pa.schema(
    [
        time_column("hour"),  # hour start
        ("channel", pa.string()),  # trades | quotes | book | control (symbol _all)
        ("segment", pa.string()),  # source/segment file that produced the row
        ("messages", pa.int64()),
        ("rows", pa.int64()),
        time_column("first_ts_recv", none=None),  # null when the row only carries gaps
        time_column("last_ts_recv", none=None),
        ("latency_messages", pa.int64()),  # messages with a venue event time
        ("latency_p50_ns", pa.int64()),  # null when latency_messages = 0
        ("latency_p90_ns", pa.int64()),
        ("latency_p99_ns", pa.int64()),
        ("latency_max_ns", pa.int64()),
        ("clock_offset_ns", pa.int64()),  # min latency: daemon - venue clock + min delay
        ("negative_latency", pa.int64()),
        ("latency_bins", pa.list_(pa.int32())),  # sparse log histogram (feed_stats.latency_bins)
        ("latency_counts", pa.list_(pa.int64())),
        ("gaps", pa.int64()),
        ("reconnects", pa.int64()),
        ("active_minutes", pa.int64()),  # bit m = a row arrived in minute m of the hour
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
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

# Tables the refinery publishes for every segment (one commit each, with or without rows);
# ``ohlcv`` is written by ``fluxforge.history`` only.
REFINERY_TABLES: tuple[str, ...] = tuple(t for t in SCHEMAS if t != "ohlcv")
