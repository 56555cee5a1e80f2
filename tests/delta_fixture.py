"""Test helper: rows appended to a Delta lake table in one commit (a new segment's arrival),
with deltalake directly, so a test controls exactly which rows reach which partition."""

from __future__ import annotations

from pathlib import Path

import deltalake


def append(processed: str | Path, table: str, rows: list[dict], partition: dict[str, str]) -> None:
    """Append `rows` (the table's own columns) to one partition of a Delta lake table, as one
    commit, the way a new segment reaches the lake."""
    import pyarrow as pa

    from fluxforge.tables import SCHEMAS, to_lake

    # rows in memory form (times int64 ns); the table stores them as the lake does
    data = to_lake(pa.Table.from_pylist(rows, schema=SCHEMAS[table]), SCHEMAS[table])
    for col in ("exchange", "symbol", "date"):
        data = data.append_column(col, pa.array([partition[col]] * data.num_rows, pa.string()))
    deltalake.write_deltalake(
        str(Path(processed) / table),
        data,
        mode="append",
        partition_by=["exchange", "symbol", "date"],
    )


def committed_files(root: Path, tables: tuple[str, ...] | None = None) -> dict[str, bytes]:
    """The committed data files of the lake tables under storage root `root` (found through
    each table's Delta log, so files a failed attempt staged are left out), with their bytes.
    Default: the tables the refinery publishes."""
    from fluxforge import lake
    from fluxforge.storage import LocalStorage
    from fluxforge.tables import REFINERY_TABLES

    storage = LocalStorage(root)
    return {
        key: (Path(root) / key).read_bytes()
        for table in (tables or REFINERY_TABLES)
        for key in lake.list_parts(storage, table)
    }
