"""PostgreSQL hot tables (docs/architecture.md, "Hot store and rotation"): the last `hot_days` of
trades, quotes, top-N book snapshots and bars, partitioned by day, loaded with COPY, idempotent on
natural keys.

Tables (schema ``public`` unless given): ``trades``, ``quotes``, ``book_snapshots`` and
``bars_{interval}`` for every interval of ``lifecycle.hot_intervals``. Every table is
``PARTITION BY RANGE (day)`` with one partition per UTC day, named ``{table}_pYYYYMMDD``. ``day``
is the lake partition date (the UTC date of ``ts_recv``); ``exchange`` and ``symbol`` come from
the lake's hive directories.

Natural keys. A lake row is identified by where it came from in the feed: ``(exchange, symbol,
ts_recv, seq, ord)`` where ``seq`` is the daemon sequence of the raw line and ``ord`` the row's
position among the rows of that line for that symbol (one frame can carry several trades, and
some venues send trades without ids, so ``trade_id`` alone cannot be the key). The primary key
is ``(day, <natural key>)``. Loading copies the rows into a temporary table (COPY, CSV written
by pyarrow) and then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``: re-loading a part file
or a day adds nothing.

Bars are computed here, in PostgreSQL, from the hot ``trades`` of the same day (the lake has no
bars tables; the SQL-model bars of ``dbt_like_sql`` are the lake-side equivalent) by the one bar
rule of ``fluxforge.bar_rule`` (trade-id de-duplication per day at the first receipt, event time
else ``ts_recv``, the order that picks open and close), whose SQL is generated from it; VWAP is
rounded to the lake's 12 decimals. A load upserts the day's bars from the bar of its earliest
trade on.

Prices, sizes and bars are ``numeric(38,12)``, the lake's ``DECIMAL`` (``fluxforge.tables``).
A hot store created with another precision or scale (``numeric(38,18)`` before the lake moved
to 12 decimals) is altered to it by ``ensure_schema`` at the next load, in one transaction
(PostgreSQL rewrites the partitions; values with digits past the 12th decimal, which no venue
sends, would be rounded).

Identifiers are composed with ``psycopg.sql.Identifier``; values are always bound parameters
(partition bounds in DDL, which cannot take parameters, are ``sql.Literal`` dates).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from fluxforge import bar_rule
from fluxforge.bar_rule import bar_time
from fluxforge.redact import redact, register_dsn_secrets
from fluxforge.tables import DECIMAL

log = logging.getLogger(__name__)

DEC = DECIMAL
NUMERIC = f"numeric({DECIMAL.precision},{DECIMAL.scale})"
BOOK_DEPTH = 20  # levels per side kept in the hot book_snapshots


class HotStoreError(RuntimeError):
    """A hot-store operation failed; the message names the table / day / file."""


class HotStoreUnavailable(HotStoreError, psycopg.OperationalError):
    """The database cannot be reached or went away mid-operation: one redacted line (libpq
    echoes DSNs, passwords included, in its errors) naming the next step. Still a
    ``psycopg.OperationalError`` for the callers that retry on those."""


@dataclass(frozen=True)
class Column:
    name: str
    pg: str
    arrow: pa.DataType


def _cols(*spec: tuple[str, str, pa.DataType]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


_HEAD = (("exchange", "text", pa.string()), ("symbol", "text", pa.string()))
_KEY_TAIL = (("seq", "bigint", pa.int64()), ("ord", "integer", pa.int32()))

TABLE_COLUMNS: dict[str, tuple[Column, ...]] = {
    "trades": _cols(
        *_HEAD,
        ("ts_event", "bigint", pa.int64()),
        ("ts_recv", "bigint", pa.int64()),
        ("venue_symbol", "text", pa.string()),
        ("trade_id", "text", pa.string()),
        ("price", NUMERIC, DEC),
        ("size", NUMERIC, DEC),
        ("side", "text", pa.string()),
        *_KEY_TAIL,
    ),
    "quotes": _cols(
        *_HEAD,
        ("ts_event", "bigint", pa.int64()),
        ("ts_recv", "bigint", pa.int64()),
        ("venue_symbol", "text", pa.string()),
        ("bid_px", NUMERIC, DEC),
        ("bid_sz", NUMERIC, DEC),
        ("ask_px", NUMERIC, DEC),
        ("ask_sz", NUMERIC, DEC),
        ("last", NUMERIC, DEC),
        *_KEY_TAIL,
    ),
    "book_snapshots": _cols(
        *_HEAD,
        ("ts_event", "bigint", pa.int64()),
        ("ts_recv", "bigint", pa.int64()),
        ("venue_symbol", "text", pa.string()),
        ("depth", "integer", pa.int32()),
        ("bid_px", NUMERIC + "[]", pa.list_(DEC)),
        ("bid_sz", NUMERIC + "[]", pa.list_(DEC)),
        ("ask_px", NUMERIC + "[]", pa.list_(DEC)),
        ("ask_sz", NUMERIC + "[]", pa.list_(DEC)),
        ("reason", "text", pa.string()),
        ("book_epoch", "integer", pa.int32()),
        ("update_id", "bigint", pa.int64()),
        *_KEY_TAIL,
    ),
}
LAKE_KEY = ("exchange", "symbol", "ts_recv", "seq", "ord")
BAR_COLUMNS = _cols(
    *_HEAD,
    ("ts", "bigint", pa.int64()),  # bucket start, ns since the epoch (event time)
    ("open", NUMERIC, DEC),
    ("high", NUMERIC, DEC),
    ("low", NUMERIC, DEC),
    ("close", NUMERIC, DEC),
    ("volume", NUMERIC, DEC),
    ("vwap", NUMERIC, DEC),
    ("trades", "bigint", pa.int64()),
)
BAR_KEY = ("exchange", "symbol", "ts")
LAKE_TABLES = tuple(TABLE_COLUMNS)

_INTERVAL = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def bar_time_min(trades: pa.Table) -> int:
    """The earliest bar time of trade rows."""
    return int(pc.min(bar_time(trades)).as_py())


def interval_ns(interval: str) -> int:
    """`1m` -> 60e9. Accepts N followed by s, m, h or d."""
    m = _INTERVAL.match(interval)
    if not m:
        raise ValueError(f"bar interval {interval!r}: expected N then s|m|h|d, e.g. 1m, 5m, 1h, 1d")
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


class HotStore:
    """The hot tables of one PostgreSQL database."""

    def __init__(
        self,
        dsn: str,
        intervals: Iterable[str] = ("1m", "1h", "1d"),
        book_depth: int = BOOK_DEPTH,
        schema: str = "public",
    ) -> None:
        self.dsn = dsn
        register_dsn_secrets(dsn)
        self.intervals = tuple(intervals)
        for iv in self.intervals:
            interval_ns(iv)
        self.book_depth = book_depth
        self.schema = schema

    # -- tables ------------------------------------------------------------------------------

    @property
    def tables(self) -> tuple[str, ...]:
        return (*LAKE_TABLES, *(f"bars_{iv}" for iv in self.intervals))

    def columns(self, table: str) -> tuple[Column, ...]:
        if table in TABLE_COLUMNS:
            return TABLE_COLUMNS[table]
        if table.startswith("bars_") and table[5:] in self.intervals:
            return BAR_COLUMNS
        raise HotStoreError(f"unknown hot table {table!r}; known: {list(self.tables)}")

    def key(self, table: str) -> tuple[str, ...]:
        return BAR_KEY if table.startswith("bars_") else LAKE_KEY

    def _ident(self, name: str) -> sql.Composable:
        return sql.Identifier(self.schema, name)

    @contextlib.contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        try:
            conn = psycopg.connect(self.dsn, autocommit=autocommit)
        except psycopg.Error as exc:  # a malformed DSN too: its text would echo the DSN
            raise HotStoreUnavailable(self._down("cannot connect", exc)) from None
        try:
            with conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if isinstance(exc, HotStoreUnavailable) or not conn.broken:
                raise
            raise HotStoreUnavailable(self._down("connection lost", exc)) from None

    def _down(self, what: str, exc: BaseException) -> str:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # the next step first: masking an unterminated quoted password runs to the line's end
        return redact(
            f"hot store {what}: start PostgreSQL (or fix hot_store.dsn) and rerun, loads are "
            f"idempotent; {first} (dsn {self.dsn})"
        )

    def ensure_schema(self, conn: psycopg.Connection | None = None) -> None:
        """CREATE the partitioned parent tables (idempotent), and ALTER numeric columns made
        with another precision/scale to the lake's (see the module doc)."""
        with contextlib.ExitStack() as stack:
            if conn is None:
                conn = stack.enter_context(self.connect())
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            for table in self.tables:
                cols = [
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg))
                    for c in self.columns(table)
                ]
                key = [sql.Identifier(k) for k in ("day", *self.key(table))]
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (day date NOT NULL, {}, PRIMARY KEY ({}))"
                        " PARTITION BY RANGE (day)"
                    ).format(self._ident(table), sql.SQL(", ").join(cols), sql.SQL(", ").join(key))
                )
            self._alter_numerics(conn)

    def _alter_numerics(self, conn: psycopg.Connection) -> None:
        """Numeric columns whose declared type differs from ``columns()`` (an older scale)
        get ALTERed to it: one statement per table, partitions included."""
        found: dict[tuple[str, str], str] = {
            (rel, att): typ
            for rel, att, typ in conn.execute(
                "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)"
                " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s) AND a.attnum > 0"
                " AND NOT a.attisdropped",
                (self.schema, list(self.tables)),
            ).fetchall()
        }
        for table in self.tables:
            changes = [
                (c, found[(table, c.name)])
                for c in self.columns(table)
                if c.pg.startswith("numeric") and found.get((table, c.name), c.pg) != c.pg
            ]
            if not changes:
                continue
            log.warning(
                "hot store: altering %s.%s to %s (was %s); PostgreSQL rewrites its partitions",
                self.schema,
                table,
                NUMERIC,
                ", ".join(sorted({old for _c, old in changes})),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} {}").format(
                    self._ident(table),
                    sql.SQL(", ").join(
                        sql.SQL("ALTER COLUMN {} TYPE {}").format(
                            sql.Identifier(c.name), sql.SQL(c.pg)
                        )
                        for c, _old in changes
                    ),
                )
            )

    def ensure_partition(self, conn: psycopg.Connection, table: str, day: date) -> None:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
            ).format(
                self._ident(partition_name(table, day)),
                self._ident(table),
                sql.Literal(day),
                sql.Literal(day + timedelta(days=1)),
            )
        )

    def last_recv(self, table: str, exchange: str, symbol: str, day: date) -> int | None:
        """The last ``ts_recv`` held for (exchange, symbol) on `day` (None: no row)."""
        query = sql.SQL(
            "SELECT max(ts_recv) FROM {} WHERE day = %s AND exchange = %s AND symbol = %s"
        ).format(self._ident(table))
        with self.connect() as conn:
            row = conn.execute(query, (day, exchange, symbol)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def days(self, table: str) -> list[date]:
        """Days that have a partition of `table`, ascending."""
        with self.connect() as conn:
            return self._days(conn, table)

    def _days(self, conn: psycopg.Connection, table: str) -> list[date]:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " JOIN pg_namespace n ON n.oid = p.relnamespace"
            " WHERE p.relname = %s AND n.nspname = %s",
            (table, self.schema),
        ).fetchall()
        out = []
        prefix = f"{table}_p"
        for (name,) in rows:
            suffix = name[len(prefix) :]
            if name.startswith(prefix) and len(suffix) == 8 and suffix.isdigit():
                out.append(date(int(suffix[:4]), int(suffix[4:6]), int(suffix[6:])))
        return sorted(out)

    def count(self, table: str, day: date | None = None) -> int:
        with self.connect() as conn:
            return self._count(conn, table, day)

    def _count(self, conn: psycopg.Connection, table: str, day: date | None) -> int:
        query = sql.SQL("SELECT count(*) FROM {}").format(self._ident(table))
        if day is None:
            return int(conn.execute(query).fetchone()[0])
        query = query + sql.SQL(" WHERE day = %s")
        return int(conn.execute(query, (day,)).fetchone()[0])

    # -- loading -------------------------------------------------------------------------------

    def prepare(self, data: pa.Table, table: str, exchange: str, symbol: str) -> pa.Table:
        """Lake rows (one part file, receive order) -> the hot columns, `ord` included."""
        n = data.num_rows
        seq = data.column("seq").to_numpy(zero_copy_only=False)
        idx = np.arange(n, dtype=np.int64)
        starts = np.ones(n, dtype=bool)
        if n > 1:
            starts[1:] = seq[1:] != seq[:-1]
        ordinal = idx - np.maximum.accumulate(np.where(starts, idx, 0))
        cols: dict[str, Any] = {}
        for col in self.columns(table):
            if col.name == "exchange":
                cols[col.name] = pa.array([exchange] * n, pa.string())
            elif col.name == "symbol":
                cols[col.name] = pa.array([symbol] * n, pa.string())
            elif col.name == "ord":
                cols[col.name] = pa.array(ordinal.astype(np.int32))
            elif pa.types.is_list(col.arrow):
                cols[col.name] = pc.list_slice(data.column(col.name), 0, self.book_depth)
            else:
                cols[col.name] = data.column(col.name)
        out = pa.table(cols)
        if table == "book_snapshots":
            depth = pc.min_element_wise(out.column("depth"), pa.scalar(self.book_depth, pa.int32()))
            out = out.set_column(out.schema.get_field_index("depth"), "depth", depth)
        return out

    def load(self, table: str, day: date, rows: pa.Table, refresh_bars: bool = True) -> int:
        """COPY prepared rows of one day into `table`; returns rows actually inserted."""
        if table not in TABLE_COLUMNS:
            raise HotStoreError(
                f"load {table!r}: only {list(TABLE_COLUMNS)} are loaded from the lake"
            )
        with self.connect() as conn:
            self.ensure_schema(conn)
            self.ensure_partition(conn, table, day)
            inserted = self._copy_insert(conn, table, day, rows)
            if table == "trades" and refresh_bars and rows.num_rows:
                self._refresh_bars(conn, day, bar_time_min(rows))
        return inserted

    def _copy_insert(self, conn: psycopg.Connection, table: str, day: date, rows: pa.Table) -> int:
        cols = self.columns(table)
        names = [c.name for c in cols]
        tmp = sql.Identifier(f"_load_{table}")
        col_list = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS"
                " SELECT {} FROM {} WITH NO DATA"
            ).format(tmp, col_list, self._ident(table))
        )
        with conn.cursor() as cur:
            with cur.copy(
                sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(tmp, col_list)
            ) as copy:
                copy.write(to_csv(rows.select(names)))
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (day, {}) SELECT %s::date, {} FROM {} ON CONFLICT DO NOTHING"
                ).format(self._ident(table), col_list, col_list, tmp),
                (day,),
            )
            inserted = max(cur.rowcount, 0)
        conn.commit()
        return inserted

    def refresh_bars(self, day: date, since_ns: int | None = None) -> None:
        with self.connect() as conn:
            self.ensure_schema(conn)
            self._refresh_bars(conn, day, since_ns)

    def _refresh_bars(self, conn: psycopg.Connection, day: date, since_ns: int | None) -> None:
        """Recompute the bars of `day` from the hot trades of that day (upsert), from the bar
        holding `since_ns` on (the earliest bar time of the rows just loaded: older bars did not
        change, so a day's later loads do not re-aggregate its whole morning). A repeated trade
        has its original's event time, so both fall in the same recomputed bar."""
        for iv in self.intervals:
            table = f"bars_{iv}"
            self.ensure_partition(conn, table, day)
            width = interval_ns(iv)
            since = -(2**63) if since_ns is None else since_ns - since_ns % width
            conn.execute(
                sql.SQL(
                    """
                    INSERT INTO {bars} AS b
                        (day, exchange, symbol, ts, open, high, low, close, volume, vwap, trades)
                    SELECT day, exchange, symbol, bucket,
                           (array_agg(price ORDER BY {first}))[1],
                           max(price), min(price),
                           (array_agg(price ORDER BY {last}))[1],
                           sum(size),
                           round(sum(price * size) / nullif(sum(size), 0), {scale}),
                           count(*)
                    FROM (SELECT *, te - te %% %s AS bucket
                          FROM (SELECT *,
                                       CASE WHEN ts_event > 0 THEN ts_event ELSE ts_recv END
                                           AS te,
                                       row_number() OVER (
                                           PARTITION BY exchange, symbol, trade_id
                                           ORDER BY {receipt}) AS nth
                                FROM {trades}
                                WHERE day = %s
                                  AND CASE WHEN ts_event > 0 THEN ts_event ELSE ts_recv END
                                      >= %s) d
                          WHERE trade_id IS NULL OR trade_id = '' OR nth = 1) t
                    GROUP BY day, exchange, symbol, bucket
                    ON CONFLICT (day, exchange, symbol, ts) DO UPDATE SET
                        open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                        close = EXCLUDED.close, volume = EXCLUDED.volume,
                        vwap = EXCLUDED.vwap, trades = EXCLUDED.trades
                    """
                ).format(
                    bars=self._ident(table),
                    trades=self._ident("trades"),
                    scale=sql.Literal(DECIMAL.scale),
                    # the bar rule's orders (fluxforge/bar_rule.py), generated for PostgreSQL
                    first=sql.SQL(bar_rule.sql_order(bar_rule.TRADE_ORDER, "postgres")),
                    last=sql.SQL(bar_rule.sql_order(bar_rule.TRADE_ORDER, "postgres", True)),
                    receipt=sql.SQL(bar_rule.sql_order(bar_rule.FIRST_RECEIPT, "postgres")),
                ),
                (width, day, since),
            )
        conn.commit()

    # -- reading ---------------------------------------------------------------------------------

    def export_csv(
        self,
        conn: psycopg.Connection,
        table: str,
        where: sql.Composable,
        params: tuple[Any, ...],
    ) -> bytes:
        """COPY (SELECT columns ... ORDER BY key) TO STDOUT as CSV bytes (deterministic)."""
        cols = self.columns(table)
        query = sql.SQL(
            "COPY (SELECT {} FROM {} WHERE {} ORDER BY {}) TO STDOUT (FORMAT csv)"
        ).format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in cols),
            self._ident(table),
            where,
            sql.SQL(", ").join(sql.Identifier(k) for k in self.key(table)),
        )
        out = bytearray()
        with conn.cursor() as cur, cur.copy(query, params) as copy:
            for chunk in copy:
                out += chunk
        return bytes(out)

    def read(
        self,
        table: str,
        exchange: str,
        symbol: str,
        day: date,
        col: str = "ts_recv",
        t0: int | None = None,
        t1: int | None = None,
    ) -> pa.Table:
        """Rows of one day in the lake's column layout (for the unified reader)."""
        if col not in ("ts_recv", "ts_event", "ts"):
            raise HotStoreError(f"read {table}: time column {col!r} not ts_recv/ts_event/ts")
        where = sql.SQL("day = %s AND exchange = %s AND symbol = %s")
        params: list[Any] = [day, exchange, symbol]
        if t0 is not None:
            where += sql.SQL(" AND {} >= %s").format(sql.Identifier(col))
            params.append(t0)
        if t1 is not None:
            where += sql.SQL(" AND {} <= %s").format(sql.Identifier(col))
            params.append(t1)
        with self.connect() as conn:
            data = from_csv(self.export_csv(conn, table, where, tuple(params)), self.columns(table))
        if table in TABLE_COLUMNS:
            from fluxforge.tables import SCHEMAS

            data = data.select(SCHEMAS[table].names).cast(SCHEMAS[table])
        return data

    def drop_partition(self, conn: psycopg.Connection, table: str, day: date) -> None:
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(partition_name(table, day)))
        )

    def analyze(self, tables: Iterable[str] | None = None) -> list[str]:
        done = []
        with self.connect(autocommit=True) as conn:
            for table in tables or self.tables:
                if self._exists(conn, table):
                    conn.execute(sql.SQL("ANALYZE {}").format(self._ident(table)))
                    done.append(table)
        return done

    def _exists(self, conn: psycopg.Connection, table: str) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}"."{table}"',)).fetchone()
        return row is not None and row[0] is not None


# -- CSV bridges between pyarrow and PostgreSQL --------------------------------------------------


def _pg_array(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """list<decimal> -> PostgreSQL array literal text ('{1.5,2.0}')."""
    joined = pc.binary_join(col.cast(pa.list_(pa.string())), ",")
    return pc.binary_join_element_wise("{", joined, "}", "")


def to_csv(data: pa.Table) -> bytes:
    """Rows as headerless CSV that COPY ... (FORMAT csv) reads back exactly."""
    cols = {}
    for name in data.column_names:
        col = data.column(name)
        cols[name] = _pg_array(col) if pa.types.is_list(col.type) else col
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(cols), buf, pacsv.WriteOptions(include_header=False))
    return buf.getvalue()


def _parse_pg_array(col: pa.ChunkedArray, value_type: pa.DataType) -> pa.ChunkedArray:
    inner = pc.replace_substring_regex(col, r"^\{|\}$", "")
    split = pc.split_pattern(inner, ",")
    empty = pa.scalar([], pa.list_(pa.string()))
    lists = pc.if_else(pc.equal(inner, ""), empty, split)
    return lists.cast(pa.list_(value_type))


def from_csv(data: bytes, columns: tuple[Column, ...]) -> pa.Table:
    """CSV from COPY TO -> an Arrow table typed like `columns`."""
    names = [c.name for c in columns]
    if not data:
        return pa.schema([(c.name, c.arrow) for c in columns]).empty_table()
    types = {c.name: (pa.string() if pa.types.is_list(c.arrow) else c.arrow) for c in columns}
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            null_values=[""],
        ),
    )
    for c in columns:
        if pa.types.is_list(c.arrow):
            idx = table.schema.get_field_index(c.name)
            table = table.set_column(
                idx, c.name, _parse_pg_array(table.column(c.name), c.arrow.value_type)
            )
    return table


# -- the lake -> hot loader ----------------------------------------------------------------------


def table_sizes(
    dsn: str, intervals: Iterable[str] = ("1m", "1h", "1d")
) -> dict[str, dict[str, int]]:
    """Rows per day per hot table (for `fluxforge status`)."""
    store = HotStore(dsn, intervals)
    out: dict[str, dict[str, int]] = {}
    with store.connect() as conn:
        for table in store.tables:
            if not store._exists(conn, table):
                continue
            rows = conn.execute(
                sql.SQL("SELECT day, count(*) FROM {} GROUP BY day ORDER BY day").format(
                    store._ident(table)
                )
            ).fetchall()
            out[table] = {d.isoformat(): int(n) for d, n in rows}
    return out


def _hive(key: str) -> dict[str, str]:
    out = {}
    for part in key.split("/"):
        name, sep, value = part.partition("=")
        if sep:
            out[name] = value
    return out


def window_start(today: date, hot_days: int) -> date:
    """First day inside the hot window: the last `hot_days` days, today included."""
    if hot_days < 1:
        raise ValueError(f"hot_days={hot_days}: must be >= 1")
    return today - timedelta(days=hot_days - 1)


@dataclass
class LoadReport:
    """What a load did: ``rows_read`` lake rows per table, ``rows_inserted`` rows new in the
    hot tables (0 on a re-load); for ``bars_*`` (recomputed, upserted) ``load_lake`` reports the
    bars now held for the loaded days."""

    days: list[str]
    files: int
    rows_read: dict[str, int]
    rows_inserted: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "files": self.files,
            "rows_read": self.rows_read,
            "rows_inserted": self.rows_inserted,
        }


def load_keys(
    hot: HotStore,
    storage: Any,
    keys: Iterable[str],
    first_day: date | None = None,
    batch_rows: int = 1_000_000,
) -> LoadReport:
    """Load lake part files (keys of the lake tables) into the hot tables; parts of days
    before `first_day` are skipped. Bars of every day whose trades were loaded are refreshed."""
    from fluxforge import lake

    groups: dict[tuple[str, date], list[tuple[str, str, str]]] = {}
    for key in keys:
        hive = _hive(key)
        table = key.split("/exchange=")[0].rsplit("/", 1)[-1]
        if table not in TABLE_COLUMNS or not {"exchange", "symbol", "date"} <= hive.keys():
            continue
        try:
            day = date.fromisoformat(hive["date"])
        except ValueError as exc:
            raise HotStoreError(f"{key}: date={hive['date']!r} is not YYYY-MM-DD") from exc
        if first_day is not None and day < first_day:
            continue
        groups.setdefault((table, day), []).append((key, hive["exchange"], hive["symbol"]))
    report = LoadReport([], 0, {t: 0 for t in hot.tables}, {t: 0 for t in hot.tables})
    bar_days: dict[date, int] = {}
    for (table, day), parts in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        pending: list[pa.Table] = []
        size = 0
        for i, (key, exchange, symbol) in enumerate(parts):
            try:
                data = lake.read_file(storage, key, table)
            except Exception as exc:
                raise HotStoreError(f"hot load {key}: {exc}") from exc
            pending.append(hot.prepare(data, table, exchange, symbol))
            size += data.num_rows
            report.files += 1
            if size >= batch_rows or i == len(parts) - 1:
                rows = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
                report.rows_read[table] += rows.num_rows
                if table == "trades" and rows.num_rows:
                    low = bar_time_min(rows)
                    bar_days[day] = min(bar_days.get(day, low), low)
                report.rows_inserted[table] += hot.load(table, day, rows, refresh_bars=False)
                pending, size = [], 0
        if day.isoformat() not in report.days:
            report.days.append(day.isoformat())
    for day, since in sorted(bar_days.items()):
        hot.refresh_bars(day, since)
    report.days.sort()
    return report


def load_lake(
    cfg: Any,
    dsn: str,
    hot_days: int | None = None,
    today: date | None = None,
) -> LoadReport:
    """`fluxforge hot load`: the lake's days inside the hot window -> the hot tables."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from fluxforge import lake
    from fluxforge.storage import Layout, open_storage

    hot_days = hot_days or cfg.lifecycle.hot_days
    today = today or datetime.now(ZoneInfo(cfg.lifecycle.timezone)).date()
    storage = open_storage(cfg.storage.etl_output)
    layout = Layout.of(cfg.storage.etl_output)
    hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
    hot.ensure_schema()
    first = window_start(today, hot_days)
    # the log's partition values choose the files: the cost follows the hot window, not the
    # lake's size or history
    lake_ = lake.Lake(storage, layout)
    keys: list[str] = []
    for table in TABLE_COLUMNS:
        keys += [f.key for f in lake_.files(table, dates=(first.isoformat(), "9999-12-31"))]
    report = load_keys(hot, storage, keys, first_day=first)
    with hot.connect() as conn:
        for table in hot.tables:
            if table.startswith("bars_"):
                report.rows_inserted[table] = sum(
                    hot._count(conn, table, date.fromisoformat(d)) for d in report.days
                )
    log.info("hot load: %s", report.to_dict())
    return report


def load_files(cfg: Any, dsn: str, keys: Iterable[str], today: date | None = None) -> LoadReport:
    """Load the lake part files a refinery run just wrote (``ProcessReport.files``) when their
    day is inside the hot window; for the Dagster asset that keeps the hot tables current."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from fluxforge.storage import open_storage

    today = today or datetime.now(ZoneInfo(cfg.lifecycle.timezone)).date()
    hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
    first = window_start(today, cfg.lifecycle.hot_days)
    return load_keys(hot, open_storage(cfg.storage.etl_output), keys, first_day=first)
