"""Test helper until the refinery writes Delta tables itself (issue 10): turn each hive
part-file folder of a processed dir into a Delta table in place. Tables that already have a
``_delta_log`` are left alone, so the helper is a no-op on a lake written as Delta."""

from __future__ import annotations

from pathlib import Path

import deltalake
from deltalake.schema import Field, PrimitiveType, Schema


def _partition_schema(table: Path) -> Schema | None:
    """The hive partition columns of a table folder (exchange/symbol/date for most tables),
    read from the directories above its first part file, as strings."""
    first = next(table.rglob("*.parquet"))
    names = [p.split("=", 1)[0] for p in first.relative_to(table).parts[:-1] if "=" in p]
    fields = [Field(c, PrimitiveType("string"), nullable=True) for c in names]
    return Schema(fields) if fields else None


def make_delta(processed: str | Path) -> list[str]:
    """Convert every table folder under `processed` (``models/`` excluded); returns their names."""
    done = []
    root = Path(processed)
    if not root.is_dir():
        return done
    for table in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "models"):
        if (table / "_delta_log").exists() or not any(table.rglob("*.parquet")):
            continue
        deltalake.convert_to_deltalake(
            str(table), partition_by=_partition_schema(table), partition_strategy="hive"
        )
        done.append(table.name)
    return done


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
