"""Resources chosen by the FluxForge config: the config itself, and the Delta IO manager for
Dagster-managed table outputs on the ETL output storage (local directory or S3, picked by the
config's storage layer)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa

from fluxforge.config import Config, load_config
from fluxforge.storage import sanitize_part


class FluxForgeResource(dg.ConfigurableResource):
    """The FluxForge configuration a run works on (file path; env overrides apply on load)."""

    config_path: str | None = None

    def load(self) -> Config:
        return load_config(self.config_path)


class LakeDeltaIOManager(dg.ConfigurableIOManager):
    """Dagster-managed table outputs (Arrow tables) <-> Delta tables at
    ``{processed_dir}/{asset}/`` on the ETL output layer (local directory or S3, from the
    FluxForge config). Partition dimensions become partition columns (hive directories, sorted
    by name); a partition's rows are replaced in one commit (``overwrite`` with a predicate),
    so a re-materialization never duplicates them and readers never see half of it."""

    config_path: str | None = None

    def _lake(self) -> Any:
        from fluxforge.lake import Lake

        return Lake.of(load_config(self.config_path))

    @staticmethod
    def _dims(context: dg.InputContext | dg.OutputContext) -> dict[str, str]:
        if not context.has_asset_partitions:
            return {}
        pk = context.asset_partition_key
        dims = pk.keys_by_dimension if isinstance(pk, dg.MultiPartitionKey) else {"part": pk}
        return {k: sanitize_part(v) for k, v in sorted(dims.items())}

    def _uri(self, lake: Any, context: dg.InputContext | dg.OutputContext) -> str:
        asset = "/".join(sanitize_part(p) for p in context.asset_key.path)
        return lake.storage.uri(f"{lake.layout.names.processed_dir}/{asset}")

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | None) -> None:
        from deltalake import write_deltalake

        if obj is None:
            return
        lake = self._lake()
        dims = self._dims(context)
        data = obj
        for name, value in dims.items():
            data = data.append_column(name, pa.array([value] * data.num_rows, pa.string()))
        # partition values are sanitized path parts ([A-Za-z0-9._+=-]): safe inside quotes
        predicate = " AND ".join(f"{k} = '{v}'" for k, v in dims.items()) or None
        uri = self._uri(lake, context)
        write_deltalake(
            uri,
            data,
            partition_by=list(dims) or None,
            mode="overwrite",
            predicate=predicate,
            schema_mode="merge" if predicate is None else None,
            storage_options=lake.options or None,
        )
        from deltalake import DeltaTable

        version = DeltaTable(uri, storage_options=lake.options or None).version()
        context.add_output_metadata(
            {
                "dagster/uri": uri,
                "dagster/row_count": obj.num_rows,
                "delta_version": version,
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(f.name, str(f.type)) for f in obj.schema]
                ),
            }
        )

    def load_input(self, context: dg.InputContext) -> pa.Table:
        from deltalake import DeltaTable

        lake = self._lake()
        dims = self._dims(context)
        table = DeltaTable(self._uri(lake, context), storage_options=lake.options or None)
        filters = [(k, "=", v) for k, v in dims.items()] or None
        return table.to_pyarrow_table(partitions=filters).drop_columns(list(dims))


def build_resources(cfg: Config) -> dict[str, Any]:
    """Resource keys used by the assets and sensors. A later `hot_store` (PostgreSQL) resource
    plugs in here, next to these, from `cfg.hot_store`."""
    return {
        "fluxforge": FluxForgeResource(config_path=cfg.source_path),
        "lake_io_manager": LakeDeltaIOManager(config_path=cfg.source_path),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(load_config()))
