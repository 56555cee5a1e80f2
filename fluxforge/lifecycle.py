"""Lifecycle rotation (docs/architecture.md, "Hot store and rotation"): hot days older than
`hot_days` move to cold Parquet.

``plan()`` is pure: from the hot inventory (rows per table per day partition), today and
`hot_days` it lists the (table, day) partitions to rotate: every day before the hot window
(the last `hot_days` days, today included, in ``lifecycle.timezone``).

``execute()`` rotates them one partition at a time, two-phase, in one transaction per partition:

1. ``export``: lock the partition against writes (``SHARE`` mode; readers go on) and COPY it out
   (binary COPY decoded by ``fluxforge.pgcopy`` in a worker thread while the server sends, then
   zstd Parquet); rows, key range (per key column min..max) and the CRC-32 + length of the COPY
   stream describe it;
2. ``write``: unless the cold copy ``{cold_dir}/{table}/year=Y/month=M/day=D/data.parquet`` on the
   ETL output storage already matches (rows, key range, checksum, kept in the Parquet footer's
   key-value metadata), write it (one atomic object/file, page checksums). A checksum that
   differs only because the rows' physical order changed (VACUUM FULL) just rewrites the copy;
3. ``verify``: read the cold copy's footer back: row count and metadata must match the export,
   else the rotation stops with an error and the partition stays;
4. ``drop``: ``DROP TABLE`` the partition, then ``commit``;
5. ``analyze``: ANALYZE the hot tables (every run, see ``execute``).

The lock makes the export and the drop see the same rows. A crash or a database outage at any
step loses nothing: before the commit the partition is intact (the transaction rolls back) and a
re-run finds the cold copy already matching (or rewrites it); after the commit the rows are in
the verified cold copy. A `hook(step, table, day)` callback runs before every step (the fault
tests stop PostgreSQL there).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql
from psycopg.pq import ExecStatus

from fluxforge.hot import HotStore, from_csv, partition_name, window_start
from fluxforge.pgcopy import Decoder
from fluxforge.storage import Layout, Storage

log = logging.getLogger(__name__)

STEPS = ("export", "write", "verify", "drop", "commit", "analyze")
COLD_FILE = "data.parquet"
META_PREFIX = "fluxforge."

Hook = Callable[[str, str, date], None]


class RotationError(RuntimeError):
    """The cold copy of a partition does not match; names table, day and what differs."""


@dataclass(frozen=True)
class DayTask:
    table: str
    day: date
    rows: int
    cold_key: str


@dataclass
class Plan:
    today: date
    hot_days: int
    first_hot_day: date
    tasks: list[DayTask] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        rows: dict[str, int] = {}
        for t in self.tasks:
            rows[t.table] = rows.get(t.table, 0) + t.rows
        return {
            "today": self.today.isoformat(),
            "hot_days": self.hot_days,
            "first_hot_day": self.first_hot_day.isoformat(),
            "days": sorted({t.day.isoformat() for t in self.tasks}),
            "rows": rows,
            "partitions": [
                {"table": t.table, "day": t.day.isoformat(), "rows": t.rows, "cold": t.cold_key}
                for t in self.tasks
            ],
        }


def cold_key(layout: Layout, table: str, day: date) -> str:
    return layout.cold_part(table, day.year, day.month, day.day, COLD_FILE)


def plan(
    inventory: Mapping[str, Mapping[date, int]],
    today: date,
    hot_days: int,
    layout: Layout,
) -> Plan:
    """Partitions to rotate: every (table, day) before the hot window, oldest day first."""
    first = window_start(today, hot_days)
    out = Plan(today=today, hot_days=hot_days, first_hot_day=first)
    for table in sorted(inventory):
        for day, rows in inventory[table].items():
            if day < first:
                out.tasks.append(DayTask(table, day, rows, cold_key(layout, table, day)))
    out.tasks.sort(key=lambda t: (t.day, t.table))
    return out


def inventory(hot: HotStore) -> dict[str, dict[date, int]]:
    """Rows per existing day partition of every hot table."""
    out: dict[str, dict[date, int]] = {}
    with hot.connect() as conn:
        for table in hot.tables:
            if not hot._exists(conn, table):
                continue
            out[table] = {day: hot._count(conn, table, day) for day in hot._days(conn, table)}
    return out


@dataclass
class Result:
    plan: dict[str, Any]
    rotated: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0
    cold_reused: int = 0
    partitions_dropped: int = 0
    analyzed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["days"] = sorted({r["day"] for r in self.rotated})
        total = sum(self.rows.values())
        out["rows_per_s"] = round(total / self.seconds) if self.seconds > 0 else None
        return out


@dataclass(frozen=True)
class Export:
    rows: int
    checksum: str
    key_min: str
    key_max: str
    parquet: bytes  # the cold file: zstd Parquet, footer metadata from `metadata()`

    def metadata(self, table: str, day: date) -> dict[bytes, bytes]:
        meta = {
            "table": table,
            "day": day.isoformat(),
            "rows": str(self.rows),
            "checksum": self.checksum,
            "key_min": self.key_min,
            "key_max": self.key_max,
        }
        return {(META_PREFIX + k).encode(): v.encode() for k, v in meta.items()}


def _key_range(data: pa.Table, key: tuple[str, ...]) -> tuple[str, str]:
    """Per key column minimum and maximum, joined with '|' (order-independent)."""
    if data.num_rows == 0:
        return "", ""
    lows, highs = [], []
    for name in key:
        mm = pc.min_max(data.column(name))
        lows.append(str(mm["min"].as_py()))
        highs.append(str(mm["max"].as_py()))
    return "|".join(lows), "|".join(highs)


LOW_CARDINALITY = frozenset({"exchange", "symbol", "venue_symbol", "side", "reason"})
STATS_COLUMNS = frozenset({"exchange", "symbol", "ts_event", "ts_recv", "ts", "seq"})


class _ColdWriter:
    """Arrow batches -> one zstd Parquet file in memory (row groups of ~ROW_GROUP rows)."""

    ROW_GROUP = 1_000_000

    def __init__(self, schema: pa.Schema) -> None:
        self.buf = io.BytesIO()
        # Dictionary pages only where values repeat (on ids and timestamps they cost time and
        # grow the file); delta encoding for the integer columns (near-monotonic timestamps and
        # sequences); statistics where readers prune; zstd level 1, ~1.7x faster than the
        # default level at about the same size. Together ~2x faster than plain zstd defaults.
        ints = [
            f.name for f in schema if pa.types.is_integer(f.type) and f.name not in LOW_CARDINALITY
        ]
        self.writer = pq.ParquetWriter(
            self.buf,
            schema,
            compression="zstd",
            compression_level=1,
            use_dictionary=[n for n in schema.names if n in LOW_CARDINALITY],
            column_encoding=dict.fromkeys(ints, "DELTA_BINARY_PACKED"),
            write_statistics=[n for n in schema.names if n in STATS_COLUMNS],
            write_page_checksum=True,
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.batches: list[pa.RecordBatch] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), self.ROW_GROUP)
            self.pending, self.pending_rows = [], 0

    def close(self, metadata: dict[bytes, bytes]) -> bytes:
        self._flush()
        self.writer.add_key_value_metadata(metadata)
        self.writer.close()
        return self.buf.getvalue()


class StreamChecksum:
    """CRC-32 and length of a byte stream, ``crc32:<8 hex>:<bytes>``.

    Guards against a stale or torn cold copy (together with row count and key range), not
    against tampering; zlib's CRC-32 runs at ~2 GB/s where SHA-256 managed ~0.6 GB/s and was a
    fifth of the rotation's CPU time."""

    def __init__(self) -> None:
        self.crc = 0
        self.size = 0

    def update(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def hexdigest(self) -> str:
        return f"crc32:{self.crc:08x}:{self.size}"


class _StreamDecoder:
    """Runs in one worker thread: binary COPY chunks -> Arrow batches -> the Parquet writer."""

    def __init__(self, decoder: Decoder, writer: _ColdWriter, digest: Any) -> None:
        self.decoder = decoder
        self.writer = writer
        self.digest = digest
        self.buf = bytearray()

    def feed(self, block: bytes) -> None:
        self.digest.update(block)  # here, not in the thread draining the COPY stream
        self.buf += block
        batch, used = self.decoder.decode(self.buf)
        # a fresh buffer for the rest (a partial row): the decoder's numpy view of the old one
        # may outlive the call (numba's first compile keeps its arguments until a GC pass), and
        # a bytearray with a live export cannot be resized in place
        self.buf = self.buf[used:]
        if batch is not None:
            self.writer.add(batch)


BLOCK = 4 << 20  # bytes of COPY stream handed to the decoder at a time


def copy_out_blocks(conn: Any, query: sql.Composable, block: int) -> Iterator[bytes]:
    """``COPY ... TO STDOUT`` as blocks of about `block` bytes.

    Drives libpq directly (``PQgetCopyData`` per message from the C layer) on the caller's
    connection, inside its transaction: psycopg's ``Copy`` iterator yields one Python object
    per row through its generator machinery and capped the export at ~0.3 M rows/s."""
    pgconn = conn.pgconn
    pgconn.send_query(query.as_bytes(conn))
    res = pgconn.get_result()
    if res is None or res.status != ExecStatus.COPY_OUT:
        msg = pgconn.get_error_message() or "COPY did not start"
        while pgconn.get_result() is not None:
            pass
        raise psycopg.OperationalError(f"COPY TO STDOUT: {msg}")
    buf = bytearray()
    get = pgconn.get_copy_data
    while True:
        nbytes, data = get(0)
        if nbytes < 0:
            break
        buf += data
        if len(buf) >= block:
            yield bytes(buf)
            buf.clear()
    failed = None
    while (res := pgconn.get_result()) is not None:
        if res.status != ExecStatus.COMMAND_OK:
            failed = res.error_message.decode(errors="replace") or "COPY failed"
    if nbytes == -2 or failed:
        raise psycopg.OperationalError(
            f"COPY TO STDOUT: {failed or pgconn.get_error_message() or 'connection lost'}"
        )
    yield bytes(buf)


def export_partition(hot: HotStore, conn: Any, table: str, day: date) -> Export:
    """Export one day partition and build its cold file (see the module docstring).

    Tables of plain columns stream binary COPY through the numba decoder in a worker thread
    while PostgreSQL is still sending (physical order: the checksum is over the stream as
    sent, the key range is order-independent). Tables with array columns (book_snapshots,
    small) go through an ordered CSV export."""
    cols = hot.columns(table)
    schema = pa.schema([(c.name, c.arrow) for c in cols])
    writer = _ColdWriter(schema)
    digest = StreamChecksum()
    if any(pa.types.is_list(c.arrow) for c in cols):
        raw = hot.export_csv(conn, table, sql.SQL("day = %s"), (day,))
        digest.update(raw)
        for batch in from_csv(raw, cols).to_batches():
            writer.add(batch)
    else:
        decoder = Decoder([c.name for c in cols], [c.arrow for c in cols], [c.pg for c in cols])
        stream = _StreamDecoder(decoder, writer, digest)
        query = sql.SQL("COPY {} ({}) TO STDOUT (FORMAT binary)").format(
            hot._ident(partition_name(table, day)),
            sql.SQL(", ").join(sql.Identifier(c.name) for c in cols),
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            futures = []
            for block in copy_out_blocks(conn, query, BLOCK):
                futures.append(pool.submit(stream.feed, block))
            for fut in futures:
                fut.result()
        if not decoder.finished or stream.buf:
            raise RotationError(
                f"{table} {day}: binary COPY stream ended early ({len(stream.buf)} bytes left)"
            )
    data = pa.Table.from_batches(writer.batches, schema=schema)
    key_min, key_max = _key_range(data, hot.key(table))
    export = Export(data.num_rows, digest.hexdigest(), key_min, key_max, b"")
    body = writer.close(export.metadata(table, day))
    return Export(export.rows, export.checksum, key_min, key_max, body)


def cold_matches(storage: Storage, key: str, export: Export, table: str, day: date) -> str | None:
    """None when the cold copy at `key` matches the export, else why not."""
    if not storage.exists(key):
        return "missing"
    fs = storage.arrow_filesystem()
    try:
        with fs.open_input_file(storage.arrow_path(key)) as fh:
            meta = pq.read_metadata(fh)
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable: {exc}"
    kv = meta.metadata or {}
    want = export.metadata(table, day)
    for name, value in want.items():
        if kv.get(name) != value:
            got = kv.get(name, b"<none>").decode(errors="replace")
            return f"{name.decode()} is {got!r}, hot has {value.decode()!r}"
    if meta.num_rows != export.rows:
        return f"file holds {meta.num_rows} rows, hot has {export.rows}"
    return None


class RotationBusy(RuntimeError):
    """Another rotation holds the rotation lock of this database."""


# pg advisory lock key of the rotation job (any constant; "fluxforge rotation" -> 64 bits)
ROTATION_LOCK = 0x666C7578_726F7461


def execute(
    p: Plan,
    hot: HotStore,
    storage: Storage,
    hook: Hook | None = None,
) -> Result:
    """Rotate the partitions of plan `p` (see the module docstring).

    One rotation per database at a time (a session advisory lock; a second one raises
    RotationBusy instead of deadlocking on the partitions both would drop)."""
    with hot.connect(autocommit=True) as guard:
        got = guard.execute("SELECT pg_try_advisory_lock(%s)", (ROTATION_LOCK,)).fetchone()
        if not got or not got[0]:
            raise RotationBusy("another rotation is running on this hot store")
        try:
            return _execute(p, hot, storage, hook)
        finally:
            with contextlib.suppress(psycopg.Error):
                guard.execute("SELECT pg_advisory_unlock(%s)", (ROTATION_LOCK,))


def _execute(p: Plan, hot: HotStore, storage: Storage, hook: Hook | None) -> Result:
    started = time.perf_counter()
    result = Result(plan=p.to_dict())
    touched: set[str] = set()

    def step(name: str, task: DayTask) -> None:
        if hook is not None:
            hook(name, task.table, task.day)

    for task in p.tasks:
        with hot.connect() as conn:
            part = hot._ident(partition_name(task.table, task.day))
            if not hot._exists(conn, partition_name(task.table, task.day)):
                continue  # dropped by an earlier (interrupted) run after its commit
            step("export", task)
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(part))
            export = export_partition(hot, conn, task.table, task.day)
            step("write", task)
            why = cold_matches(storage, task.cold_key, export, task.table, task.day)
            if why is None:
                result.cold_reused += 1
            else:
                storage.write_bytes(task.cold_key, export.parquet)
                result.bytes_written += len(export.parquet)
                log.info("cold copy %s written (%s)", storage.uri(task.cold_key), why)
            step("verify", task)
            why = cold_matches(storage, task.cold_key, export, task.table, task.day)
            if why is not None:
                raise RotationError(
                    f"{task.table} {task.day}: cold copy {storage.uri(task.cold_key)} does not "
                    f"match after writing: {why}; the hot partition is kept"
                )
            step("drop", task)
            hot.drop_partition(conn, task.table, task.day)
            step("commit", task)
            conn.commit()
        touched.add(task.table)
        result.partitions_dropped += 1
        result.rows[task.table] = result.rows.get(task.table, 0) + export.rows
        result.rotated.append(
            {"table": task.table, "day": task.day.isoformat(), "rows": export.rows}
        )
        log.info("rotated %s %s: %d rows -> %s", task.table, task.day, export.rows, task.cold_key)
    # Every run analyzes every hot table, not only those that lost partitions now: autovacuum
    # never analyzes partitioned parents, and a run that crashed between its last commit and
    # this step leaves nothing for the re-run to rotate.
    step("analyze", DayTask(",".join(sorted(touched)) or "*", p.today, 0, ""))
    result.analyzed = hot.analyze()
    result.seconds = time.perf_counter() - started
    return result


def today_in(tz: str) -> date:
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(tz)).date()


def rotate(
    cfg: Any,
    dsn: str,
    *,
    dry_run: bool = False,
    analyze_only: bool = False,
    force: bool = False,
    hot_days: int | None = None,
    today: date | None = None,
    hook: Hook | None = None,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """`fluxforge rotate` / the 02:00 Dagster job: returns the JSON-able plan or result."""
    from fluxforge.storage import open_storage

    if not cfg.lifecycle.enabled and not force:
        return {"skipped": "lifecycle.enabled is false (run with --force to rotate anyway)"}
    hot = HotStore(dsn, cfg.lifecycle.hot_intervals)
    if analyze_only:
        return {"analyzed": hot.analyze()}
    layout = Layout.of(cfg.storage.etl_output)
    p = plan(
        inventory(hot),
        today or today_in(cfg.lifecycle.timezone),
        hot_days or cfg.lifecycle.hot_days,
        layout,
    )
    if dry_run:
        return {"dry_run": True, **p.to_dict()}
    storage = storage or open_storage(cfg.storage.etl_output)
    try:
        return execute(p, hot, storage, hook).to_dict()
    except RotationBusy as exc:
        return {"skipped": str(exc)}


def read_cold(storage: Storage, layout: Layout, table: str, day: date) -> pa.Table:
    """The cold copy of one rotated day (empty when there is none)."""
    key = cold_key(layout, table, day)
    if not storage.exists(key):
        return pa.table({})
    return pq.read_table(io.BytesIO(storage.read_bytes(key)))
