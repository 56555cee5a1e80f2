"""The dbt-duckdb plugin that reads the lake's Delta tables (profile alias ``delta``).

It is dbt-duckdb's own ``delta`` plugin (a Delta table opened with deltalake, handed to DuckDB as
a pyarrow dataset, so partition filters and projections are pushed down) with two additions for
FluxForge, configured by the profile that ``fluxforge.dbt_profile`` writes:

- a source's ``delta_table_path`` may be relative: it is then resolved against ``lake_root``
  (``{processed_dir}`` of the ETL output storage, a local directory or ``s3://bucket/prefix``),
  so the dbt project holds no machine path;
- a table the lake does not hold yet (an empty lake, a venue without gaps) reads as no rows with
  the table's schema (``fluxforge.tables.SCHEMAS`` plus the exchange / symbol / date partition
  columns) instead of failing every model that reads it.

``storage_options`` (endpoint, region, plain HTTP) come from the profile; credentials are never
written there: delta-rs reads them from the environment (AWS_ACCESS_KEY_ID, ...) or IAM.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from dbt.adapters.duckdb.plugins import delta
from dbt.adapters.duckdb.utils import SourceConfig
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from fluxforge.tables import SCHEMAS, lake_schema

PARTITION_COLUMNS = ("exchange", "symbol", "date")


def resolve(root: str | None, path: str) -> str:
    """A table path of the project against the lake root (absolute paths and URIs stay)."""
    if not root or "://" in path or Path(path).is_absolute():
        return path
    if "://" in root:
        return posixpath.join(root.rstrip("/"), path)
    return str(Path(root) / path)


def empty_table(name: str) -> pa.Table:
    """No rows, with the lake table's columns as stored and its partition columns (ISO text)."""
    schema = SCHEMAS.get(name)
    if schema is None:
        raise ValueError(f"lake table {name!r} has no Delta log and no schema in fluxforge.tables")
    schema = lake_schema(schema)
    extra = [pa.field(c, pa.string()) for c in PARTITION_COLUMNS if c not in schema.names]
    return pa.schema([*schema, *extra]).empty_table()


class Plugin(delta.Plugin):
    def initialize(self, config: dict[str, Any]) -> None:
        self.lake_root: str | None = config.get("lake_root")
        self.storage_options: dict[str, str] = dict(config.get("storage_options") or {})

    def load(self, source_config: SourceConfig) -> Any:
        if "delta_table_path" not in source_config:
            raise ValueError(
                f"source {source_config.name}.{source_config.identifier}: "
                "config delta_table_path is required (a table path relative to the lake)"
            )
        uri = resolve(self.lake_root, source_config["delta_table_path"])
        options = {**self.storage_options, **(source_config.get("storage_options") or {})}
        try:
            table = DeltaTable(uri, storage_options=options or None)
        except TableNotFoundError:
            return empty_table(source_config.identifier)
        version = source_config.get("as_of_version")
        if version is not None:
            table.load_as_version(int(version))
        return partition_only_dataset(table)


def partition_only_dataset(table: DeltaTable) -> pds.FileSystemDataset:
    """The table's files as a pyarrow dataset whose fragments carry only their partition
    values. deltalake's own ``to_pyarrow_dataset`` also turns the log's per-file statistics
    into fragment guarantees, and for a column without statistics it writes ``col >= null``,
    which makes pyarrow (and DuckDB's pushed-down filters) drop or keep rows wrongly: on the
    lake's book_deltas, ``side not in ('bid', 'ask')`` matched every row. Partition pruning
    (exchange / symbol / date) is kept."""
    dataset = table.to_pyarrow_dataset()
    fragments = []
    for fragment in dataset.get_fragments():
        expr = None
        for part in posixpath.dirname(fragment.path).split("/"):
            if "=" not in part:
                continue
            name, value = part.split("=", 1)
            if name not in dataset.schema.names:
                continue
            typ = dataset.schema.field(name).type
            term = pc.field(name) == pa.scalar(unquote(value)).cast(typ)
            expr = term if expr is None else expr & term
        fragments.append(
            dataset.format.make_fragment(
                fragment.path, fragment.filesystem, partition_expression=expr
            )
        )
    return pds.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
