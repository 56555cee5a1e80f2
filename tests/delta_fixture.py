"""Test helper: rows appended to a Delta lake table in one commit (a new segment's arrival),
with deltalake directly, so a test controls exactly which rows reach which partition."""

from __future__ import annotations

from pathlib import Path

import deltalake


def append(processed: str | Path, table: str, rows: list[dict], partition: dict[str, str]) -> None:
    """Append `rows` (the table's own columns) to one partition of a Delta lake table, as one
    commit, the way a new segment reaches the lake."""
    import pyarrow as pa

    from fluxforge.tables import SCHEMAS

    data = pa.Table.from_pylist(rows, schema=SCHEMAS[table])
    for col in ("exchange", "symbol", "date"):
        data = data.append_column(col, pa.array([partition[col]] * data.num_rows, pa.string()))
    deltalake.write_deltalake(
        str(Path(processed) / table),
        data,
        mode="append",
        partition_by=["exchange", "symbol", "date"],
    )
