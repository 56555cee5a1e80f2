"""pandera (polars flavour) schemas of the lake tables, one per table.

They mirror ``fluxforge.tables`` column for column, plus the hive partition columns
(``exchange``, ``symbol``, ``date``) that the directories carry. The refinery validates every
part before writing it (``validate``); Dagster asset checks can reuse ``SCHEMAS`` directly on
``read_table`` output.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import pandera.polars as pa
import polars as pl
import pyarrow as pyarrow
import pyarrow.compute as pc
from pandera.api.polars.types import PolarsData
from pandera.backends.polars.register import register_polars_backends

from fluxforge.tables import DECIMAL
from fluxforge.tables import SCHEMAS as ARROW_SCHEMAS

DEC = pl.Decimal(DECIMAL.precision, DECIMAL.scale)
# the normalizers refuse anything larger (docs/table-schemas.md: below 1e26)
_MAX_PRICE = 10 ** (DECIMAL.precision - DECIMAL.scale)
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
    """Validate many parts of one table: first the fast pass (``fast_verdict``: every rule of
    the pandera schema in one vectorized polars query); when it cannot vouch for the parts,
    pandera itself decides, in one call, then per part to name the failing partition."""
    if not parts:
        return
    if table not in SCHEMAS:
        raise SchemaViolation(f"no schema for table {table!r}; known: {sorted(SCHEMAS)}")
    if fast_verdict(table, parts):
        return
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


# ---------------------------------------------------------------- fast pass
#
# pandera's polars backend runs one query per check and column (about 0.6 s per segment of
# fixed cost for the nine tables, more than writing the rows). The fast pass reads the SAME
# pandera declarations (dtype, nullable, each check's own expression) and evaluates them all in
# one query. It only ever says "all rules hold"; anything else (a rule failed, a schema
# feature it does not model) goes to pandera, so pandera stays the judge of what is published
# and the author of the error message.

PARTITION_COLUMNS = ("exchange", "symbol", "date")
MAX_CHUNKS = 64  # more chunks than this are joined before polars reads them
# pandera builtin checks whose verdict on a column depends only on the SET of its values (each
# value passes or fails alone; how often or where it occurs does not matter)
SET_CHECKS = frozenset(
    {
        "equal_to", "not_equal_to", "greater_than", "greater_than_or_equal_to", "less_than",
        "less_than_or_equal_to", "in_range", "isin", "notin", "str_matches", "str_contains",
        "str_startswith", "str_endswith", "str_length",
    }
)  # fmt: skip
# pandera builtin checks that hold on every value of a column as soon as they hold on its
# least and greatest value: each accepts an interval (no hole in it, unlike not_equal_to)
INTERVAL_CHECKS = frozenset(
    {
        "equal_to", "greater_than", "greater_than_or_equal_to", "less_than",
        "less_than_or_equal_to", "in_range",
    }
)  # fmt: skip
# a string column of at least this many rows, checked only by SET_CHECKS, is checked on its
# distinct values: hashing the strings in Arrow costs a third of moving them into polars and
# testing each row there (a book_deltas side column: 8 ms instead of 28 per million rows)
DISTINCT_MIN_ROWS = 10_000


class _Capture:
    """Stands in for the LazyFrame a pandera builtin check selects from: its ``select``
    hands back the check's expression instead of running it."""

    def select(self, expr: object) -> object:
        return expr


def _check_expr(check: pa.Check, column: str) -> pl.Expr | None:
    """The polars expression of a pandera builtin check (what its polars implementation
    selects); None for anything else (custom, element-wise or grouped checks)."""
    if check.element_wise or check.groupby is not None or not check.is_builtin_check(check.name):
        return None
    register_polars_backends()  # what pandera's validate() does first: the polars builtins
    try:
        fn = pa.Check.get_builtin_check_fn(check.name)
        expr = fn(PolarsData(_Capture(), column), **check.statistics)  # type: ignore[arg-type]
    except Exception:  # a builtin without a polars version, or one that reads the frame
        return None
    if not isinstance(expr, pl.Expr):
        return None
    # pandera's rule for null check outputs (PolarsCheckBackend.postprocess_lazyframe_output)
    return (expr | expr.is_null()) if check.ignore_na else expr.fill_null(False)


@dataclass(frozen=True)
class _Plan:
    """The rules of some columns: exact dtypes, columns without nulls, and one boolean
    "every row passes" expression per check (over the columns in ``checked``); ``distinct``:
    the string columns whose checks are all ``SET_CHECKS`` (``rules[column]`` per column);
    ``bounded``: the integer and decimal columns whose checks are all ``INTERVAL_CHECKS``."""

    dtypes: dict[str, pl.DataType]
    not_null: tuple[str, ...]
    checked: tuple[str, ...]
    rules: dict[str, tuple[pl.Expr, ...]]
    distinct: tuple[str, ...]
    bounded: tuple[str, ...]


def _column_plan(schema: pa.DataFrameSchema, names: Iterable[str]) -> _Plan | None:
    """The plan of `names`; None when a column uses a pandera feature the fast pass does not
    model."""
    dtypes: dict[str, pl.DataType] = {}
    not_null: list[str] = []
    rules: dict[str, tuple[pl.Expr, ...]] = {}
    distinct: list[str] = []
    bounded: list[str] = []
    count = 0
    for name in names:
        col = schema.columns[name]
        if col.regex or col.unique or col.coerce or not col.required or col.parsers:
            return None
        dtype = col.dtype.type
        if dtype.is_float():
            return None  # pandera counts NaN as null there: left to it
        dtypes[name] = dtype
        if not col.nullable:
            not_null.append(name)
        exprs = []
        for check in col.checks:
            expr = _check_expr(check, name)
            if expr is None:
                return None
            # each rule's column is named apart (two checks of a column share its name)
            exprs.append(expr.all().alias(f"rule{count}"))
            count += 1
        if exprs:
            rules[name] = tuple(exprs)
            if dtype == pl.Utf8 and all(c.name in SET_CHECKS for c in col.checks):
                distinct.append(name)
            numeric = dtype.is_integer() or isinstance(dtype, pl.Decimal)
            if numeric and all(c.name in INTERVAL_CHECKS for c in col.checks):
                bounded.append(name)
    return _Plan(dtypes, tuple(not_null), tuple(rules), rules, tuple(distinct), tuple(bounded))


@functools.cache
def _plans(table: str) -> tuple[_Plan, _Plan] | None:
    """(file columns, partition columns) of a table; None: pandera only."""
    schema = SCHEMAS[table]
    if (
        schema.checks
        or schema.unique
        or schema.coerce
        or not schema.strict
        or schema.add_missing_columns
        or schema.drop_invalid_rows
        or getattr(schema, "parsers", None)
    ):
        return None
    data = _column_plan(schema, [n for n in schema.columns if n not in PARTITION_COLUMNS])
    part = _column_plan(schema, PARTITION_COLUMNS)
    return None if data is None or part is None else (data, part)


def _holds(data: pyarrow.Table, plan: _Plan) -> bool:
    # strict: the same columns, each of its exact dtype as polars (and pandera) reads it
    empty = pl.from_arrow(data.slice(0, 0))
    if not isinstance(empty, pl.DataFrame) or dict(empty.schema) != plan.dtypes:
        return False
    if any(data.column(name).null_count for name in plan.not_null):
        return False
    if not data.num_rows or not plan.rules:
        return True
    # only the checked columns cross into polars (a string column without rules costs nothing);
    # thousands of small chunks (a part per snapshot piece) are joined first, a few big ones
    # are not (a copy of the biggest table would raise the peak memory of the segment)
    apart = plan.distinct if data.num_rows >= DISTINCT_MIN_ROWS else ()
    frames = [
        (pyarrow.table({name: pc.unique(data.column(name))}), plan.rules[name]) for name in apart
    ]
    # interval checks of a column without nulls: its least and greatest value, found by one
    # Arrow pass over every row, stand for all of them (one small frame for all such columns
    # instead of every row crossing into polars); a column with nulls is checked row by row
    bounded = [name for name in plan.bounded if not data.column(name).null_count]
    if bounded:
        ends = {}
        for name in bounded:
            column = data.column(name)
            if pyarrow.types.is_decimal(column.type):
                # polars compares its 128-bit integers, Arrow each 16-byte value (1.6 M
                # book_deltas prices and sizes: 19 ms instead of 32)
                series = pl.from_arrow(column, rechunk=False)
                assert isinstance(series, pl.Series)
                least, greatest = series.min(), series.max()
            else:
                least, greatest = (v.as_py() for v in pc.min_max(column).values())
            ends[name] = pyarrow.array([least, greatest], column.type)
        frames.append((pyarrow.table(ends), tuple(r for n in bounded for r in plan.rules[n])))
    rest = [name for name in plan.checked if name not in apart and name not in bounded]
    if rest:
        checked = data.select(rest)
        if checked.column(0).num_chunks > MAX_CHUNKS:
            checked = checked.combine_chunks()
        frames.append((checked, tuple(r for name in rest for r in plan.rules[name])))
    for table, rules in frames:
        frame = pl.from_arrow(table, rechunk=False)
        assert isinstance(frame, pl.DataFrame)
        if not all(frame.select(list(rules)).row(0)):
            return False
    return True


def fast_verdict(table: str, parts: list[tuple[pyarrow.Table, str, str, str]]) -> bool:
    """True when every rule of the table's pandera schema holds on every part (file columns
    plus the partition values, as ``validate`` sees them); False means "ask pandera"."""
    plans = _plans(table) if table in SCHEMAS else None
    if plans is None:
        return False
    data_plan, part_plan = plans
    try:
        whole = pyarrow.concat_tables([data for data, _, _, _ in parts])
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
        return False  # parts that disagree on their columns: pandera says which
    keys = pyarrow.table(
        {
            "exchange": [ex for _, ex, _, _ in parts],
            "symbol": [sym for _, _, sym, _ in parts],
            "date": [d for *_, d in parts],
        }
    )
    return _holds(whole, data_plan) and _holds(keys, part_plan)
