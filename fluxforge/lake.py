"""The Parquet lake (SPEC §4): zstd parts written through the Storage interface, read back with
their hive columns.

``{processed_dir}/{table}/exchange=E/symbol=S/date=D/part-{segment}.parquet``. One file per
(table, partition, segment): reprocessing a segment rewrites the same keys (atomic per file on
both backends), so rows are replaced, never duplicated. Files hold only the columns of
``fluxforge.tables``; the directories carry exchange, symbol and date.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fluxforge.config import PathNames
from fluxforge.storage import Layout, Storage, sanitize_part
from fluxforge.tables import PARTITION_COLUMNS, SCHEMAS

TABLES = tuple(SCHEMAS)
COMPRESSION = "zstd"


class LakeError(ValueError):
    """A lake file does not match its table schema; the message names the file."""


def encode_parquet(
    table: pa.Table, schema: pa.Schema, row_group_size: int, window_ns: int | None = None
) -> bytes:
    """Deterministic zstd Parquet bytes for `table` cast to `schema` (same input, same bytes).

    With `window_ns`, row groups also break wherever ``ts_recv // window_ns`` changes (rows in
    receive order), so a reader that needs one snapshot window of book deltas touches at most
    the row groups of that window (row-group statistics on ts_recv do the pruning)."""
    data = table.select(schema.names).cast(schema)
    buf = io.BytesIO()
    with pq.ParquetWriter(
        buf, schema, compression=COMPRESSION, write_statistics=True, store_schema=True
    ) as writer:
        for start, end in _window_slices(data, window_ns):
            writer.write_table(data.slice(start, end - start), row_group_size=row_group_size)
    return buf.getvalue()


def _window_slices(data: pa.Table, window_ns: int | None) -> list[tuple[int, int]]:
    if not window_ns or data.num_rows == 0 or "ts_recv" not in data.column_names:
        return [(0, data.num_rows)]
    windows = pc.divide(data["ts_recv"], pa.scalar(window_ns, pa.int64())).to_numpy()
    cuts = [0, *(int(i) + 1 for i in np.flatnonzero(windows[1:] != windows[:-1])), len(windows)]
    return list(itertools.pairwise(cuts))


def part_key(layout: Layout, table: str, exchange: str, symbol: str, date: str, stem: str) -> str:
    return layout.lake_part(table, exchange, symbol, date, stem)


def write_part(
    storage: Storage,
    layout: Layout,
    table: str,
    exchange: str,
    symbol: str,
    date: str,
    stem: str,
    data: pa.Table,
    row_group_size: int,
) -> tuple[str, int]:
    """Write one part atomically; returns (key, bytes)."""
    key = part_key(layout, table, exchange, symbol, date, stem)
    body = encode_parquet(data, SCHEMAS[table], row_group_size)
    storage.write_bytes(key, body)
    return key, len(body)


def _hive(key: str) -> dict[str, str]:
    out = {}
    for part in key.split("/"):
        name, sep, value = part.partition("=")
        if sep and name in PARTITION_COLUMNS:
            out[name] = value
    return out


def list_parts(
    storage: Storage,
    table: str,
    exchange: str | None = None,
    symbol: str | None = None,
    date: str | None = None,
    layout: Layout | None = None,
) -> list[str]:
    """Part keys of `table` (sorted: partition, then segment order), optionally filtered."""
    layout = layout or Layout(PathNames())
    if table not in SCHEMAS:
        raise LakeError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}")
    # the whole table is listed and filtered here: a narrower prefix holding "=" is not
    # listed reliably by every S3-compatible server (SeaweedFS returned nothing)
    prefix = layout.lake_table(table)
    keys = storage.list(prefix, "part-*.parquet", recursive=True)
    want = {
        "exchange": None if exchange is None else sanitize_part(exchange),
        "symbol": None if symbol is None else sanitize_part(symbol),
        "date": date,
    }
    out = []
    for key in keys:
        hive = _hive(key)
        if all(v is None or hive.get(k) == v for k, v in want.items()):
            out.append(key)
    return out


def read_part(storage: Storage, key: str, table: str) -> pa.Table:
    data = pq.read_table(io.BytesIO(storage.read_bytes(key)))
    schema = SCHEMAS[table]
    if data.schema.names != schema.names:
        raise LakeError(f"{key}: columns {data.schema.names} != {table} columns {schema.names}")
    return data.cast(schema)


def with_hive(data: pa.Table, exchange: str, symbol: str, date: str) -> pa.Table:
    n = data.num_rows
    for name, value in (("exchange", exchange), ("symbol", symbol), ("date", date)):
        data = data.append_column(name, pa.array([value] * n, pa.string()))
    return data


def read_table(
    storage: Storage,
    table: str,
    exchange: str | None = None,
    symbol: str | None = None,
    date: str | None = None,
    layout: Layout | None = None,
    keys: Iterable[str] | None = None,
) -> pa.Table:
    """All rows of `table` (optionally one exchange / symbol / date) with the hive columns.

    Row order: partitions in key order, inside a partition the parts in segment order, inside
    a part the receive order."""
    keys = (
        list(keys)
        if keys is not None
        else list_parts(storage, table, exchange, symbol, date, layout)
    )
    parts = []
    for key in keys:
        hive = _hive(key)
        parts.append(with_hive(read_part(storage, key, table), **hive))
    if not parts:
        empty = SCHEMAS[table]
        for name in PARTITION_COLUMNS:
            empty = empty.append(pa.field(name, pa.string()))
        return empty.empty_table()
    return pa.concat_tables(parts)


# --- partitions: a stand-in until the Delta log answers it (issue 10 replaces the body) -------


@dataclass(frozen=True)
class Partition:
    """One (exchange, symbol, date) partition of a table, from metadata only."""

    exchange: str
    symbol: str
    date: str
    files: int
    rows: int
    bytes: int


def partitions(storage: Storage, table: str, layout: Layout | None = None) -> list[Partition]:
    """The partitions of `table` with their file, row and byte counts, sorted; rows come from
    the Parquet footers (no data page is read)."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    fs = None
    for key in list_parts(storage, table, layout=layout):
        hive = _hive(key)
        if fs is None:
            fs = storage.arrow_filesystem()
        rows = pq.ParquetFile(storage.arrow_path(key), filesystem=fs).metadata.num_rows
        acc = groups.setdefault((hive["exchange"], hive["symbol"], hive["date"]), [0, 0, 0])
        acc[0] += 1
        acc[1] += rows
        acc[2] += storage.size(key)
    return [Partition(*k, *v) for k, v in sorted(groups.items())]
