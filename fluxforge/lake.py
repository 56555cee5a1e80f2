"""The lake: one Delta Lake table per table of ``fluxforge.tables`` (docs/data-guide.md).

``{processed_dir}/{table}/`` holds the table's transaction log (``_delta_log/``) and its zstd
Parquet files under ``exchange=E/symbol=S/date=D/``. Files hold only the columns of
``fluxforge.tables``; the hive directories (and the log's partition values) carry exchange,
symbol and date.

Writing is two steps. ``stage`` writes a file that nobody sees yet (deterministic bytes, row
groups aligned to snapshot windows for ``book_deltas``); ``commit`` makes a set of staged files
visible (and removes replaced ones) in one Delta commit, optionally carrying an app transaction
(source, segment ordinal) so that a retried commit of the same segment is a no-op. Readers find
files through the log with partition filters, never by listing the lake, so their cost follows
the partitions they touch, not the lake's size or history.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError
from deltalake.schema import Schema as DeltaSchema
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from fluxforge import versions
from fluxforge.config import PathNames, S3Settings
from fluxforge.storage import Layout, Storage, sanitize_part
from fluxforge.tables import (
    PARTITION_COLUMNS,
    SCHEMAS,
    from_lake,
    lake_schema,
    lake_time_to_ns,
    per_schema,
    to_lake,
)

TABLES = tuple(SCHEMAS)
COMPRESSION = "zstd"
# a data page ends at the writer's byte target (1 MB), not at its default of 20,000 rows:
# every page costs a zstd context, a page header and its statistics, and a part of
# book_deltas holds up to a few hundred thousand rows (docs/performance.md, "Seventh pass")
PAGE_ROWS = 1 << 20
# string columns get dictionary pages in files of at least this many rows (a compacted day,
# read many times: readers filter and decode a dictionary once per page); a segment's parts
# are written plain. The writer hashes and compares every value to build a dictionary, which
# costs more than zstd on the plain values, even for a part's one venue symbol or bid/ask:
# the 157 parts of a 50 MB segment take 8 % fewer instructions plain, for 3.4 % more bytes
# (docs/performance.md, "Seventh pass"). Times, ids and prices never get dictionary pages:
# they fall back to plain after costing a hash table (2.74 MB instead of 3.27 MB)
DICTIONARY_ROWS = 1 << 20
# a checkpoint every 20 commits: opening a table reads the last checkpoint plus every commit
# after it, and each segment opens and commits every refinery table; measured per segment
# against 10, 50 and 100 (docs/performance.md, "Checkpoint interval"). A table written with
# other values is given these once by its next writer (``Lake._set_config``)
TABLE_CONFIG = {"delta.checkpointInterval": "20"}
# columns whose min/max go into the log's file statistics (file skipping on time and seq)
STAT_COLUMNS = ("ts_event", "ts_recv", "ts", "ts_from", "ts_to", "seq", "update_id", "line_no")
HISTORY_PREFIX = "part-history"
COMPACT_PREFIX = "part-compact"
# object_store's own default bound on a whole S3 request (connect to last byte)
REQUEST_TIMEOUT_S = 30.0
# a commit that certainly did not land (the log re-read after its error says so), or a table
# creation, is tried this many times in all before the error reaches the caller
COMMIT_ATTEMPTS = 3
PARTITION_SCHEMA = pa.schema([(name, pa.string()) for name in PARTITION_COLUMNS])


class LakeError(ValueError):
    """A lake table or file does not match its schema, or a request names no table."""


@dataclass(frozen=True)
class Partition:
    exchange: str
    symbol: str
    date: str
    files: int
    rows: int
    bytes: int


@dataclass(frozen=True)
class LakeFile:
    """One committed data file: its storage key and partition."""

    key: str
    exchange: str
    symbol: str
    date: str
    rows: int = -1
    size: int = -1
    mins: tuple[tuple[str, int], ...] = ()
    maxs: tuple[tuple[str, int], ...] = ()

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def bounds(self, column: str) -> tuple[int | None, int | None]:
        """(min, max) of `column` in this file from the log's statistics (None: unknown)."""
        return dict(self.mins).get(column), dict(self.maxs).get(column)

    def overlaps(self, column: str, lo: int | None, hi: int | None) -> bool:
        """Whether the file may hold rows with lo <= column <= hi (unknown stats: yes)."""
        fmin, fmax = self.bounds(column)
        return not (
            (hi is not None and fmin is not None and fmin > hi)
            or (lo is not None and fmax is not None and fmax < lo)
        )


@dataclass(frozen=True)
class Staged:
    """A data file written to storage but not committed (invisible to every reader)."""

    table: str
    key: str
    path: str  # relative to the table root, as the log names it
    exchange: str
    symbol: str
    date: str
    rows: int
    size: int
    stats: str

    def add_action(self) -> AddAction:
        return AddAction(
            self.path,
            self.size,
            {"exchange": self.exchange, "symbol": self.symbol, "date": self.date},
            int(time.time() * 1000),
            True,
            self.stats,
        )


def encode_parquet(
    table: pa.Table, schema: pa.Schema, row_group_size: int, window_ns: int | None = None
) -> bytes:
    """Deterministic zstd Parquet bytes of in-memory rows `table` (cast to `schema`, then to the
    lake's form, ``tables.to_lake``): same input, same bytes.

    With `window_ns`, row groups also break wherever ``ts_recv // window_ns`` changes (rows in
    receive order), so a reader that needs one snapshot window of book deltas touches at most
    the row groups of that window (row-group statistics on ts_recv do the pruning)."""
    return _encode(table, schema, row_group_size, window_ns)[0].to_pybytes()


def _encode(
    table: pa.Table, schema: pa.Schema, row_group_size: int, window_ns: int | None
) -> tuple[pa.Buffer, pa.Table, pq.FileMetaData]:
    """(Parquet bytes, the rows as stored, the file's footer) of in-memory rows `table`."""
    # the refinery's parts are in the schema already: a cast would copy every column
    data = table if table.schema.equals(schema) else table.select(schema.names).cast(schema)
    slices = _window_slices(data, window_ns)
    stored = to_lake(data, schema)
    # an Arrow buffer, not a Python file: the writer's many small writes stay in C++
    sink = pa.BufferOutputStream()
    footer: list[pq.FileMetaData] = []
    with pq.ParquetWriter(
        sink,
        stored.schema,
        compression=COMPRESSION,
        write_statistics=True,
        store_schema=True,
        use_dictionary=(
            per_schema(_DICT_COLUMNS, schema, lambda: _string_columns(schema))
            if stored.num_rows >= DICTIONARY_ROWS
            else False
        ),
        max_rows_per_page=PAGE_ROWS,
        metadata_collector=footer,  # the footer as written, not parsed back from the bytes
    ) as writer:
        for start, end in slices:
            writer.write_table(stored.slice(start, end - start), row_group_size=row_group_size)
    return sink.getvalue(), stored, footer[0]


# in-memory schema -> its string columns, the ones written with dictionary pages (the rows
# as stored have the same: only time columns change type)
_DICT_COLUMNS: dict[int, tuple[pa.Schema, list[str]]] = {}


def _string_columns(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_string(f.type)]


def _window_slices(data: pa.Table, window_ns: int | None) -> list[tuple[int, int]]:
    if not window_ns or data.num_rows == 0 or "ts_recv" not in data.column_names:
        return [(0, data.num_rows)]
    lo, hi = (v.as_py() for v in pc.min_max(data["ts_recv"]).values())
    if lo >= 0 and lo // window_ns == hi // window_ns:
        return [(0, data.num_rows)]  # all rows in one window: no division per row
    windows = pc.divide(data["ts_recv"], pa.scalar(window_ns, pa.int64())).to_numpy()
    cuts = [0, *(int(i) + 1 for i in np.flatnonzero(windows[1:] != windows[:-1])), len(windows)]
    return list(itertools.pairwise(cuts))


def file_stats(data: pa.Table, footer: pq.FileMetaData | None = None) -> str:
    """Delta ``stats`` JSON of a file (rows as stored): row count and min/max/null count of
    every column a Delta reader can prune on (numbers, strings, decimals, booleans, times; not
    binary or lists). `footer`, the Parquet metadata of the file holding exactly `data`,
    gives the bounds the writer already computed (a column whose footer lacks them is
    computed from `data`).

    Every such column must be present: delta-rs turns a missing min/max into a ``col >= null``
    fragment guard, and pyarrow then drops every row of the file for any filter on that
    column (a silent wrong answer for pandas/DuckDB readers of the Arrow dataset)."""
    return _file_stats(data, footer, _stat_columns(data.schema))


# kinds of the columns with file statistics (what a Delta reader can prune on); the footer
# bounds of every kind but _PLAIN and _TIME are read raw (a Python number or bytes) and
# converted once per file, not once per row group
_PLAIN, _DECIMAL, _MICROS, _TIME, _STRING, _SIGNED = range(6)
_RAW = (_DECIMAL, _MICROS, _STRING, _SIGNED)


# (field index, name, kind, decimal scale, index of its Parquet column chunk)
_StatColumn = tuple[int, str, int, int, int]


def _stat_columns(schema: pa.Schema) -> tuple[_StatColumn, ...]:
    """The columns of a stored schema that get file statistics (``_StatColumn``)."""
    out = []
    leaf = 0  # a Parquet file has one column chunk per leaf, depth first
    for i, field in enumerate(schema):
        kind = field.type
        if pa.types.is_timestamp(kind):
            out.append((i, field.name, _MICROS if kind.unit == "us" else _TIME, 0, leaf))  # type: ignore[attr-defined]
        elif pa.types.is_decimal(kind):
            out.append((i, field.name, _DECIMAL, kind.scale, leaf))  # type: ignore[attr-defined]
        elif pa.types.is_string(kind):
            out.append((i, field.name, _STRING, 0, leaf))
        elif pa.types.is_signed_integer(kind):
            out.append((i, field.name, _SIGNED, 0, leaf))
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            out.append((i, field.name, _PLAIN, 0, leaf))
        leaf += _leaves(kind)
    return tuple(out)


def _leaves(kind: pa.DataType) -> int:
    """Parquet leaf columns of an Arrow type (a list's element, a struct's fields, ...)."""
    if kind.num_fields == 0:
        return 1
    return sum(_leaves(kind.field(j).type) for j in range(kind.num_fields))


# in-memory schema -> the statistics columns of its stored form (``tables.per_schema``)
_STAT_PLANS: dict[int, tuple[pa.Schema, tuple[_StatColumn, ...]]] = {}


def _stat_plan(schema: pa.Schema, stored: pa.Schema) -> tuple[_StatColumn, ...]:
    return per_schema(_STAT_PLANS, schema, lambda: _stat_columns(stored))


def _file_stats(
    data: pa.Table,
    footer: pq.FileMetaData | None,
    columns: tuple[_StatColumn, ...],
) -> str:
    """``file_stats`` of `data` with its statistics columns `columns` (``_stat_columns``)."""
    mins: dict[str, object] = {}
    maxs: dict[str, object] = {}
    nulls: dict[str, int] = {}
    from_footer = _footer_bounds(footer, columns) if footer is not None else {}
    rows = data.num_rows
    for i, name, kind, _, _ in columns:
        col = data.column(i)
        nulls[name] = none = col.null_count
        if rows == none:
            continue
        if name in from_footer:
            lo, hi = from_footer[name]
        else:
            bounds = pc.min_max(col)
            lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
            if kind in (_MICROS, _TIME):
                lo, hi = _iso_us(lo), _iso_us(hi)
        if kind == _DECIMAL:
            # JSON numbers: widen by one ulp so the float bounds still contain every value
            lo, hi = math.nextafter(float(lo), -math.inf), math.nextafter(float(hi), math.inf)
        mins[name], maxs[name] = lo, hi
    return orjson.dumps(
        {"numRecords": rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    ).decode()


def _footer_bounds(
    footer: pq.FileMetaData, columns: tuple[_StatColumn, ...]
) -> dict[str, tuple[object, object]]:
    """(min, max) per top-level column from the row-group statistics of a Parquet footer,
    as ``file_stats`` computes them from the rows: times in microseconds as Delta's ISO
    strings, decimals as the nearest floats. A column is left out wherever a row group holds
    values without bounds."""
    raw = {name: (kind, scale) for _, name, kind, scale, _ in columns if kind in _RAW}
    out: dict[str, tuple[object, object]] = {}
    missing: set[str] = set()
    for g in range(footer.num_row_groups):
        group = footer.row_group(g)
        # the statistics columns' chunks by index, not every chunk matched by its path
        for _, name, _, _, leaf in columns:
            if name in missing:
                continue
            chunk = group.column(leaf)
            stats = chunk.statistics
            if stats is None or not stats.has_min_max:
                if stats is None or stats.null_count != chunk.num_values:
                    missing.add(name)  # an all-null group has no bounds, and needs none
                continue
            how = raw.get(name)
            if how is None:
                lo, hi = stats.min, stats.max
            else:
                # raw: the integers of times and ints, the UTF-8 bytes of strings (their
                # order is the strings' order), a decimal's big-endian two's complement
                lo, hi = stats.min_raw, stats.max_raw
                if how[0] == _DECIMAL:
                    lo = int.from_bytes(lo, "big", signed=True)
                    hi = int.from_bytes(hi, "big", signed=True)
            if name in out:
                lo, hi = min(out[name][0], lo), max(out[name][1], hi)  # type: ignore[operator]
            out[name] = (lo, hi)
    return {
        name: _finish(lo, hi, raw.get(name))  # type: ignore[arg-type]
        for name, (lo, hi) in out.items()
        if name not in missing
    }


def _finish(lo: object, hi: object, how: tuple[int, int] | None) -> tuple[object, object]:
    """Raw footer bounds as the values ``file_stats`` writes."""
    if how is None or how[0] == _SIGNED:
        return lo, hi
    kind, scale = how
    if kind == _MICROS:
        return _iso_us(lo), _iso_us(hi)  # type: ignore[arg-type]
    if kind == _STRING:
        return lo.decode(), hi.decode()  # type: ignore[attr-defined]
    # int / int rounds correctly, as float(Decimal) does
    return lo / 10**scale, hi / 10**scale  # type: ignore[operator]


def _iso_us(when: dt.datetime | int) -> str:
    """A time (a datetime, or microseconds since the epoch) as Delta writes it in file
    statistics: ISO-8601, microseconds, UTC."""
    if isinstance(when, int):
        return f"{np.datetime64(when, 'us')}Z"
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def table_schema(table: str) -> pa.Schema:
    """The Delta schema of `table`: its file columns as stored then the partition columns."""
    schema = lake_schema(_schema(table))
    for field in PARTITION_SCHEMA:
        schema = schema.append(field)
    return schema


@functools.cache
def _delta_schema(table: str) -> DeltaSchema:
    """``table_schema`` as delta-rs takes it (converted once, not at every commit)."""
    return DeltaSchema.from_arrow(table_schema(table))


def _schema(table: str) -> pa.Schema:
    try:
        return SCHEMAS[table]
    except KeyError:
        raise LakeError(f"unknown table {table!r}; known: {', '.join(sorted(SCHEMAS))}") from None


def table_uri(storage: Storage, layout: Layout | None, table: str) -> str:
    """Where `table`'s Delta table lives (a local path or ``s3://bucket/...``)."""
    return storage.uri((layout or Layout(PathNames())).lake_table(table))


def storage_options(storage: Storage) -> dict[str, str]:
    """delta-rs object-store options for `storage` (empty for local disk). On S3, commits use
    conditional writes (``aws_conditional_put=etag``) so concurrent writers never overwrite
    each other's log entries, and the ``s3:`` settings boto3 uses (attempts, timeouts) apply
    to delta-rs's own client too (``_object_store_client``)."""
    opts = dict(storage.storage_options())
    if opts:
        opts["aws_conditional_put"] = "etag"
        if "aws_endpoint_url" in opts:
            # delta-rs lets an AWS_ENDPOINT_URL_S3 environment variable win over the plain
            # endpoint option: name the configured endpoint under that key too
            opts["aws_endpoint_url_s3"] = opts["aws_endpoint_url"]
        settings = getattr(storage, "settings", None)
        if isinstance(settings, S3Settings):
            opts.update(_object_store_client(settings))
    return opts


def _object_store_client(settings: S3Settings) -> dict[str, str]:
    """Our S3 settings in the terms of delta-rs's client (the Rust object_store crate):
    durations as humantime strings in milliseconds, retries without the first attempt.

    botocore's read timeout bounds each wait for bytes; object_store only has ``timeout``,
    a bound on the WHOLE request (connect to last body byte), so the read timeout cannot be
    used as it is (a 0.5 s whole-request bound fails every list or file read that takes
    longer): the whole-request bound is object_store's default, or the read timeout when that
    is longer. object_store retries 5xx answers, resets and (for reads) timeouts, with
    exponential backoff, within ``retry_timeout`` per request."""
    return {
        "max_retries": str(settings.max_attempts - 1),
        "connect_timeout": f"{round(settings.connect_timeout_s * 1000)}ms",
        "timeout": f"{round(max(REQUEST_TIMEOUT_S, settings.read_timeout_s) * 1000)}ms",
    }


class Lake:
    """The lake tables of one storage layer; Delta handles are opened once and refreshed."""

    def __init__(self, storage: Storage, layout: Layout | None = None) -> None:
        self.storage = storage
        self.layout = layout or Layout(PathNames())
        self._options = storage_options(storage)
        self._tables: dict[str, DeltaTable] = {}
        self._checked: set[str] = set()
        self._cache: dict[tuple[str, int], pa.Table] = {}
        # per table: (table version, app id -> its transaction version at that table version)
        self._txns: dict[str, tuple[int, dict[str, int | None]]] = {}
        # per table: the app id last asked by ``transaction_version`` and the handle that
        # answered, for the next ``commit`` of that app id (``commit`` says why no refresh)
        self._asked: dict[str, tuple[str, DeltaTable]] = {}

    @classmethod
    def of(cls, cfg) -> Lake:
        from fluxforge.storage import open_storage

        return cls(open_storage(cfg.storage.etl_output), Layout.of(cfg.storage.etl_output))

    # -- tables ----------------------------------------------------------------------------

    def uri(self, table: str) -> str:
        return table_uri(self.storage, self.layout, table)

    @property
    def options(self) -> dict[str, str]:
        return dict(self._options)

    def table(self, table: str, as_of: int | str | None = None) -> DeltaTable | None:
        """The Delta table (latest version, or `as_of` a version number or an ISO time);
        None when the table was never written."""
        _schema(table)
        if as_of is not None:
            return self._open_as_of(table, as_of)
        handle = self._tables.get(table)
        if handle is not None:
            handle.update_incremental()
            return handle
        try:
            handle = DeltaTable(self.uri(table), storage_options=self._options or None)
        except TableNotFoundError:
            return None
        self._tables[table] = handle
        return handle

    def _open_as_of(self, table: str, as_of: int | str) -> DeltaTable | None:
        try:
            handle = DeltaTable(self.uri(table), storage_options=self._options or None)
        except TableNotFoundError:
            return None
        version = parse_as_of(as_of)
        try:
            handle.load_as_version(version)
        except Exception as exc:  # delta-rs raises several types for an unknown version/time
            raise LakeError(f"{table}: no table version as of {as_of!r}: {exc}") from None
        return handle

    def ensure(self, table: str) -> DeltaTable:
        handle = self.table(table)
        if handle is not None:
            return self._check_table(table, handle)
        # mode="ignore": two writers creating the table at once both end up with it, and
        # trying again after an error (on S3, maybe a lost answer of a create that landed) is
        # safe: a table that exists by then is left as it is
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                # create opens the table it made (or found): no second open
                handle = DeltaTable.create(
                    self.uri(table),
                    schema=table_schema(table),
                    partition_by=list(PARTITION_COLUMNS),
                    mode="ignore",
                    configuration=TABLE_CONFIG,
                    storage_options=self._options or None,
                )
                break
            except Exception:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
        self._tables[table] = handle
        return handle

    def outdated_columns(self, table: str, handle: DeltaTable | None = None) -> list[str]:
        """Columns whose type in the table's log differs from the current schema (a table
        written by an older FluxForge: ``fluxforge lake migrate`` rewrites it)."""
        handle = handle or self.table(table)
        if handle is None:
            return []
        have = pa.schema(handle.schema().to_arrow())
        want = table_schema(table)
        return [
            f"{f.name}: {have.field(f.name).type} -> {f.type}"
            for f in want
            if f.name in have.names and have.field(f.name).type != f.type
        ]

    def _check_table(self, table: str, handle: DeltaTable) -> DeltaTable:
        """Before this Lake's first write to `table`: refuse older column types, and give the
        table ``TABLE_CONFIG`` when it differs. Returns the handle to write with (a fresh one
        when setting the configuration had to read the log again)."""
        # Delta keeps a table's schema on append: files of the current format committed to an
        # old table would be read in the old types (times as integers), so refuse instead
        if table in self._checked:
            return handle
        outdated = self.outdated_columns(table, handle)
        if outdated:
            raise LakeError(
                f"lake table {table} ({self.uri(table)}) holds older column types: "
                f"{'; '.join(outdated)}; run `fluxforge lake migrate` to rewrite it "
                '(docs/data-guide.md, "Migration")'
            )
        handle = self._set_config(table, handle)
        self._checked.add(table)
        return handle

    def _set_config(self, table: str, handle: DeltaTable) -> DeltaTable:
        """Give a table written with another configuration (an older FluxForge's checkpoint
        interval) ``TABLE_CONFIG``, in one metadata commit; nothing when it has it already, so
        the first writer after an upgrade commits it once and later writers see it there.

        A concurrent writer's commit fails against this one (Delta's conflict check on a
        metadata change) and is tried again on the fresh log like any failed commit; this one
        failing (another writer set it first, or an S3 answer lost) reads the log again and
        looks whether the configuration is there by then."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            have = handle.metadata().configuration
            if all(have.get(key) == value for key, value in TABLE_CONFIG.items()):
                return handle
            try:
                handle.alter.set_table_properties(
                    dict(TABLE_CONFIG),
                    commit_properties=CommitProperties(
                        custom_metadata={"fluxforge.operation": "table-config"}
                    ),
                )
                return handle
            except Exception:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                self._tables.pop(table, None)
                fresh = self.table(table)
                if fresh is None:
                    raise
                handle = fresh
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    # -- writing ---------------------------------------------------------------------------

    def stage(
        self,
        table: str,
        data: pa.Table,
        exchange: str,
        symbol: str,
        date: str,
        stem: str,
        row_group_size: int = 128_000,
        window_ns: int | None = None,
        tag: str | None = None,
        write: bool = True,
    ) -> Staged:
        """Write `data` as one file of partition (exchange, symbol, date), not yet visible.

        The name is ``part-{stem}-{version tag}-{content hash}.parquet``: a retry writes the same
        bytes under the same name, and a rebuild that changes rows gets a new name (committed
        files are never rewritten in place, so time travel keeps working). With
        ``write=False`` only the name and statistics are computed (a file already committed)."""
        schema = _schema(table)
        buffer, stored, footer = _encode(data, schema, row_group_size, window_ns)
        body = buffer.to_pybytes()
        digest = hashlib.sha256(body).hexdigest()[:12]
        tag = tag or versions.tag(exchange)
        name = f"part-{sanitize_part(stem)}-{tag}-{digest}.parquet"
        key = f"{self.layout.lake_partition(table, exchange, symbol, date)}/{name}"
        if write:
            self.storage.write_bytes(key, body)
        prefix = self.layout.lake_table(table) + "/"
        return Staged(
            table,
            key,
            key.removeprefix(prefix),
            sanitize_part(exchange),
            sanitize_part(symbol),
            sanitize_part(date),
            data.num_rows,
            len(body),
            _file_stats(stored, footer, _stat_plan(schema, stored.schema)),
        )

    def commit(
        self,
        table: str,
        staged: Sequence[Staged],
        *,
        app: tuple[str, int] | None = None,
        remove: Sequence[LakeFile] = (),
        metadata: dict[str, str] | None = None,
        rewind: bool = False,
        removed_at_ms: int | None = None,
    ) -> bool:
        """Make `staged` visible and drop `remove` in ONE commit. With ``app=(app_id,
        version)`` the commit carries that app transaction and is skipped (returns False) when
        the table already holds a transaction of `app_id` at `version` or later; `rewind`
        commits it anyway (withdrawing a segment moves its source's transaction back).

        Right after ``transaction_version(table, app_id)`` (the refinery asks it before
        staging a segment), the commit of `app_id` uses the handle that answered as it is,
        without reading the log again: Delta's commit protocol checks every commit that
        landed since that handle's version, and one carrying a transaction of the same app id
        fails this commit ("concurrent transaction"; then ``_landed`` decides, as for any
        failed commit), while commits of other app ids (other sources) are appended after.
        So the answer the skip below relies on cannot have gone stale unnoticed
        (tests/unit/test_lake.py proves both cases on real tables)."""
        handle = self._asked_handle(table, app, rewind) or self.ensure(table)
        if app is not None and not rewind:
            done = self._txn_version(table, handle, app[0])
            if done is not None and done >= app[1]:
                return False
        now = removed_at_ms if removed_at_ms is not None else int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [s.add_action() for s in staged]
        prefix = self.layout.lake_table(table) + "/"
        for f in remove:
            actions.append(
                RemoveAction(
                    f.key.removeprefix(prefix),
                    True,
                    now,
                    f.size if f.size >= 0 else None,
                    {"exchange": f.exchange, "symbol": f.symbol, "date": f.date},
                )
            )
        props = CommitProperties(
            custom_metadata=metadata or None,
            app_transactions=[Transaction(app[0], app[1])] if app is not None else None,
        )
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                handle.create_write_transaction(
                    actions,
                    mode="append",
                    schema=_delta_schema(table),
                    partition_by=list(PARTITION_COLUMNS),
                    commit_properties=props,
                )
                return True
            except Exception:
                # on S3 a log PUT can be executed with its answer lost: the commit then looks
                # failed, or (when the store re-sent the conditional PUT) as a conflict with
                # itself. The re-read log decides: landed, or certainly not (then the commit
                # is tried again on the fresh table state), or unknown (the error stands)
                landed, handle = self._landed(table, staged, remove, app, rewind)
                if landed:
                    return True
                if landed is None or handle is None or attempt == COMMIT_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    def _landed(
        self,
        table: str,
        staged: Sequence[Staged],
        remove: Sequence[LakeFile],
        app: tuple[str, int] | None,
        rewind: bool,
    ) -> tuple[bool | None, DeltaTable | None]:
        """Whether the re-read log holds a commit that raised, with the fresh table handle.
        True: its app transaction is there (at its version, or later as the skip above), or
        for a commit without one its adds are present and its removes gone (a rewind needs
        both). False: certainly not, and nothing it touches changed (a retry commits the
        same thing). None: the log cannot be read, or another writer changed those files."""
        self._tables.pop(table, None)
        try:
            handle = self.table(table)
            if handle is None:
                return None, None
            done = handle.transaction_version(app[0]) if app is not None else None
            if app is not None and not rewind and done is not None and done >= app[1]:
                return True, handle
            paths = set(pa.table(handle.get_add_actions(flatten=True))["path"].to_pylist())
        except Exception:  # the log cannot be read either
            return None, None
        prefix = self.layout.lake_table(table) + "/"
        added = [s.path in paths for s in staged]
        kept = [f.key.removeprefix(prefix) in paths for f in remove]
        txn = app is None or (rewind and done == app[1])
        if txn and all(added) and not any(kept):
            return True, handle
        if not any(added) and all(kept) and (app is None or not txn):
            return False, handle
        return None, handle

    def replace_all(self, table: str, staged: Sequence[Staged], metadata: dict[str, str]) -> None:
        """One commit that makes `staged` the whole table, in the current schema (the
        migration's upgrade of a table written by an older FluxForge)."""
        if self.table(table) is None:
            self.ensure(table)
        handle = self.table(table)
        assert handle is not None
        handle.create_write_transaction(
            [s.add_action() for s in staged],
            mode="overwrite",
            schema=table_schema(table),
            partition_by=list(PARTITION_COLUMNS),
            commit_properties=CommitProperties(custom_metadata=metadata),
        )
        self._checked.discard(table)
        self._tables.pop(table, None)

    def transaction_version(self, table: str, app_id: str) -> int | None:
        """The version of `app_id`'s latest transaction in `table` (None: none, or no
        table), read from the log as it is now."""
        handle = self.table(table)
        if handle is None:
            return None
        self._asked[table] = (app_id, handle)
        return self._txn_version(table, handle, app_id)

    def _asked_handle(
        self, table: str, app: tuple[str, int] | None, rewind: bool
    ) -> DeltaTable | None:
        """The handle that last answered ``transaction_version`` for the app id of this
        commit, once (a commit makes it stale: the next question reads the log again)."""
        asked = self._asked.pop(table, None)
        if app is None or rewind or asked is None or asked[0] != app[0]:
            return None
        if asked[1] is not self._tables.get(table):
            return None  # replaced since (a failed commit's re-read, a migration)
        if self._check_table(table, asked[1]) is not asked[1]:
            return None  # the log was read again (``_set_config``): ``ensure`` gives that handle
        return asked[1]

    def _txn_version(self, table: str, handle: DeltaTable, app_id: str) -> int | None:
        """``handle.transaction_version(app_id)``, asked once per table version: the app
        transactions of a version never change, and delta-rs answers by reading the log's
        commits since the last checkpoint again (1-5 ms, growing with them), while a segment
        asks each table twice (whether it is published, then at its commit)."""
        version = handle.version()
        seen = self._txns.get(table)
        if seen is None or seen[0] != version:
            seen = self._txns[table] = (version, {})
        if app_id not in seen[1]:
            seen[1][app_id] = handle.transaction_version(app_id)
        return seen[1][app_id]

    # -- reading ---------------------------------------------------------------------------

    def files(
        self,
        table: str,
        exchange: str | None = None,
        symbol: str | None = None,
        date: str | None = None,
        dates: tuple[str, str] | None = None,
        as_of: int | str | None = None,
    ) -> list[LakeFile]:
        """The table's committed files in the partitions asked for, from the log only; sorted
        by partition, then name (segment order inside a partition)."""
        actions = self._actions(table, as_of)
        if actions is None or actions.num_rows == 0:
            return []
        filters = _partition_filters(exchange, symbol, date)
        mask = None
        for name, _op, value in filters:
            cond = pc.equal(actions[f"partition.{name}"], value)
            mask = cond if mask is None else pc.and_(mask, cond)
        if dates is not None:
            col = actions["partition.date"]
            cond = pc.and_(pc.greater_equal(col, dates[0]), pc.less_equal(col, dates[1]))
            mask = cond if mask is None else pc.and_(mask, cond)
        if mask is not None:
            actions = actions.filter(mask)
        prefix = self.layout.lake_table(table)
        names = actions.column_names
        stat_cols = [
            (c, f"min.{c}", f"max.{c}")
            for c in STAT_COLUMNS
            if f"min.{c}" in names and f"max.{c}" in names
        ]
        stats = {k: _stat_values(actions[k]) for _, lo, hi in stat_cols for k in (lo, hi)}
        records = actions["num_records"].to_pylist() if "num_records" in names else None
        out = []
        for i, (path, ex, sym, day, size) in enumerate(
            zip(
                actions["path"].to_pylist(),
                actions["partition.exchange"].to_pylist(),
                actions["partition.symbol"].to_pylist(),
                actions["partition.date"].to_pylist(),
                actions["size_bytes"].to_pylist(),
                strict=True,
            )
        ):
            mins = tuple((c, stats[lo][i]) for c, lo, _ in stat_cols if stats[lo][i] is not None)
            maxs = tuple((c, stats[hi][i]) for c, _, hi in stat_cols if stats[hi][i] is not None)
            rows = -1 if records is None or records[i] is None else int(records[i])
            out.append(LakeFile(f"{prefix}/{path}", ex, sym, day, rows, int(size), mins, maxs))
        return sorted(out, key=lambda f: (f.exchange, f.symbol, f.date, f.name))

    def _actions(self, table: str, as_of: int | str | None) -> pa.Table | None:
        """The add actions of the table's current (or `as_of`) version, cached per version:
        a reader asking many questions of an unchanged table converts the log once."""
        handle = self.table(table, as_of)
        if handle is None:
            return None
        key = (table, handle.version())
        cached = self._cache.get(key)
        if cached is None:
            cached = pa.table(handle.get_add_actions(flatten=True))
            self._cache = {k: v for k, v in self._cache.items() if k[0] != table}
            self._cache[key] = cached
        return cached

    def read(
        self,
        table: str,
        exchange: str | None = None,
        symbol: str | None = None,
        date: str | None = None,
        *,
        dates: tuple[str, str] | None = None,
        columns: Sequence[str] | None = None,
        as_of: int | str | None = None,
        files: Iterable[LakeFile] | None = None,
        filter: pc.Expression | None = None,
    ) -> pa.Table:
        """Rows of `table` (with the hive columns exchange/symbol/date) in the partitions asked
        for. Row order: partitions in key order, inside a partition the files in name order
        (segment order), inside a file the receive order."""
        chosen = (
            list(files)
            if files is not None
            else self.files(table, exchange, symbol, date, dates, as_of)
        )
        schema = table_schema(table)
        names = list(columns) if columns is not None else schema.names
        if not chosen:
            empty = pa.schema([schema.field(n) for n in names]).empty_table()
            return from_lake(empty, _schema(table))
        stored = schema
        if as_of is not None and files is None:
            # an old version of a migrated table holds files of the older types
            handle = self.table(table, as_of)
            if handle is not None and self.outdated_columns(table, handle):
                stored = pa.schema(handle.schema().to_arrow())
        dataset = pads.dataset(
            [self.storage.arrow_path(f.key) for f in chosen],
            schema=stored,
            format="parquet",
            filesystem=self.storage.arrow_filesystem(),
            partitioning=pads.partitioning(PARTITION_SCHEMA, flavor="hive"),
            partition_base_dir=self.storage.arrow_path(self.layout.lake_table(table)),
        )
        # to_table keeps the order of the files given (partition, then segment order)
        rows = from_lake(dataset.to_table(columns=names, filter=filter), _schema(table))
        if stored is not schema:
            rows = rows.cast(pa.schema([_memory_field(schema, table, n) for n in names]))
        return rows

    def partitions(self, table: str, as_of: int | str | None = None) -> list[Partition]:
        """Every partition of `table` with its file, row and byte counts (log only)."""
        acc: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for f in self.files(table, as_of=as_of):
            entry = acc[(f.exchange, f.symbol, f.date)]
            entry[0] += 1
            entry[1] += max(f.rows, 0)
            entry[2] += max(f.size, 0)
        return [Partition(*key, *vals) for key, vals in sorted(acc.items())]


def _memory_field(schema: pa.Schema, table: str, name: str) -> pa.Field:
    """The in-memory field of a column of `table` (Delta `schema` names the partitions)."""
    memory = _schema(table)
    return memory.field(name) if name in memory.names else schema.field(name)


def _stat_values(column: pa.ChunkedArray) -> list:
    """A statistics column of the log as Python values; times as int64 ns like in memory."""
    if pa.types.is_timestamp(column.type):
        column = lake_time_to_ns(column)
    return column.to_pylist()


def parse_as_of(as_of: int | str) -> int | dt.datetime:
    """A table version (integer) or an ISO-8601 time (UTC when no offset is given)."""
    if isinstance(as_of, int):
        return as_of
    text = str(as_of).strip()
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LakeError(
            f"--as-of {as_of!r}: expected a table version (integer) or an ISO-8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _partition_filters(
    exchange: str | None, symbol: str | None, date: str | None
) -> list[tuple[str, str, str]]:
    out = []
    for name, value in (("exchange", exchange), ("symbol", symbol), ("date", date)):
        if value is not None:
            out.append((name, "=", sanitize_part(value)))
    return out


# -- the module-level API the rest of the library uses ----------------------------------------


def read_table(
    storage: Storage,
    table: str,
    exchange: str | None = None,
    symbol: str | None = None,
    date: str | None = None,
    layout: Layout | None = None,
    *,
    dates: tuple[str, str] | None = None,
    columns: Sequence[str] | None = None,
    as_of: int | str | None = None,
) -> pa.Table:
    """All rows of `table` (optionally one exchange / symbol / date or a date range) with the
    hive columns, found through the table's log."""
    return Lake(storage, layout).read(
        table, exchange, symbol, date, dates=dates, columns=columns, as_of=as_of
    )


def partitions(
    storage: Storage, table: str, layout: Layout | None = None, as_of: int | str | None = None
) -> list[Partition]:
    return Lake(storage, layout).partitions(table, as_of)


def publish(
    storage: Storage,
    layout: Layout | None,
    table: str,
    items: Iterable[tuple[pa.Table, str, str, str]],
    stem: str,
    *,
    app: tuple[str, int] | None = None,
    replace: Iterable[LakeFile] = (),
    row_group_size: int = 128_000,
) -> list[Staged]:
    """Stage ``(rows, exchange, symbol, date)`` items and commit them (replacing `replace`)
    in one commit; returns the staged files (empty when `app` was already published)."""
    lake = Lake(storage, layout)
    staged = [
        lake.stage(table, rows, ex, sym, date, stem, row_group_size)
        for rows, ex, sym, date in items
        if rows.num_rows
    ]
    exchanges = {s.exchange for s in staged}
    remove = list(replace)
    same = {f.key for f in remove} & {s.key for s in staged}  # unchanged: neither add nor remove
    news = [s for s in staged if s.key not in same]
    remove = [f for f in remove if f.key not in same]
    if not news and not remove:
        return staged
    if not lake.commit(
        table, news, app=app, remove=remove, metadata=versions.commit_metadata(exchanges)
    ):
        return []
    return staged


def read_file(
    storage: Storage, key: str, table: str, columns: Sequence[str] | None = None
) -> pa.Table:
    """One data file of `table` by its key (as ``LakeFile.key`` / ``Staged.key`` name it), in
    the table's columns (without the hive columns), or only `columns`, in memory form."""
    return file_rows(storage.read_bytes(key), key, table, columns)


def file_rows(body: bytes, key: str, table: str, columns: Sequence[str] | None = None) -> pa.Table:
    """``read_file`` of a data file's bytes `body` (`key` names it in errors)."""
    data = pq.read_table(io.BytesIO(body), columns=columns)
    schema = _schema(table)
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if data.schema.names != schema.names:
        raise LakeError(f"{key}: columns {data.schema.names} != {table} columns {schema.names}")
    # files written before times were stored as timestamps hold int64 ns already
    return from_lake(data, schema).cast(schema)


def file_of_key(key: str) -> LakeFile:
    """The LakeFile a data file's key names (partition values from its hive directories)."""
    hive = {}
    for part in key.split("/"):
        name, sep, value = part.partition("=")
        if sep and name in PARTITION_COLUMNS:
            hive[name] = value
    missing = [n for n in PARTITION_COLUMNS if n not in hive]
    if missing:
        raise LakeError(f"{key}: not a lake data file (no {', '.join(missing)} directory)")
    return LakeFile(key, hive["exchange"], hive["symbol"], hive["date"])


def read_files(storage: Storage, table: str, keys: Iterable[str]) -> pa.Table:
    """The rows of the given data files of `table`, with the hive columns, in key order."""
    return Lake(storage).read(table, files=[file_of_key(k) for k in keys])


def list_parts(
    storage: Storage,
    table: str,
    exchange: str | None = None,
    symbol: str | None = None,
    date: str | None = None,
    layout: Layout | None = None,
) -> list[str]:
    """Keys of `table`'s committed files (from the log, not a listing), optionally filtered;
    sorted by partition, then name."""
    return [f.key for f in Lake(storage, layout).files(table, exchange, symbol, date)]


def write_part(
    storage: Storage,
    layout: Layout | None,
    table: str,
    exchange: str,
    symbol: str,
    date: str,
    stem: str,
    data: pa.Table,
    row_group_size: int,
) -> tuple[str, int]:
    """Publish one file of one partition in one commit, replacing the partition's earlier
    file(s) of the same `stem`; returns (key, bytes)."""
    lake = Lake(storage, layout)
    mine = f"part-{sanitize_part(stem)}-v"
    old = [f for f in lake.files(table, exchange, symbol, date) if f.name.startswith(mine)]
    staged = publish(
        storage, layout, table, [(data, exchange, symbol, date)], stem, replace=old,
        row_group_size=row_group_size,
    )  # fmt: skip
    return staged[0].key, staged[0].size
