"""Resources chosen by the FluxForge config: the config itself, and the Parquet IO manager for
the ETL output storage (local directory or S3 bucket, picked once here)."""

from __future__ import annotations

import io
import posixpath
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from fluxforge.config import Config, LayerStorage, PathNames, S3Settings, load_config
from fluxforge.storage import Storage, open_storage, sanitize_part


class FluxForgeResource(dg.ConfigurableResource):
    """The FluxForge configuration a run works on (file path; env overrides apply on load)."""

    config_path: str | None = None

    def load(self) -> Config:
        return load_config(self.config_path)


class _LakeParquetIOManager(dg.ConfigurableIOManager):
    """Arrow tables <-> zstd Parquet at ``{processed_dir}/{asset}/source=S/date=D/{asset}.parquet``
    on one storage layer. Partition dimensions become hive directories (sorted by name)."""

    processed_dir: str = "processed"

    def _storage(self) -> Storage:
        raise NotImplementedError

    def _key(self, context: dg.InputContext | dg.OutputContext) -> str:
        asset = "/".join(sanitize_part(p) for p in context.asset_key.path)
        parts = [self.processed_dir, asset]
        if context.has_asset_partitions:
            pk = context.asset_partition_key
            dims = pk.keys_by_dimension if isinstance(pk, dg.MultiPartitionKey) else {"part": pk}
            parts += [f"{k}={sanitize_part(v)}" for k, v in sorted(dims.items())]
        name = sanitize_part(context.asset_key.path[-1])
        return posixpath.join(*parts, f"{name}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | None) -> None:
        if obj is None:
            return
        buf = io.BytesIO()
        pq.write_table(obj, buf, compression="zstd")
        key = self._key(context)
        self._storage().write_bytes(key, buf.getvalue())
        context.add_output_metadata(
            {"path": self._storage().uri(key), "rows": obj.num_rows, "bytes": buf.tell()}
        )

    def load_input(self, context: dg.InputContext) -> pa.Table:
        return pq.read_table(pa.BufferReader(self._storage().read_bytes(self._key(context))))


class LocalParquetIOManager(_LakeParquetIOManager):
    base_dir: str

    def _storage(self) -> Storage:
        return open_storage(LayerStorage(backend="local", base_dir=self.base_dir))


class S3ParquetIOManager(_LakeParquetIOManager):
    """Credentials come from the environment / IAM / AWS config (boto3's chain), never here."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None

    def _storage(self) -> Storage:
        settings = S3Settings(
            bucket=self.bucket,
            prefix=self.prefix,
            region=self.region,
            endpoint_url=self.endpoint_url,
        )
        return open_storage(LayerStorage(backend="s3", base_dir=self.bucket, s3=settings))


def lake_io_manager(layer: LayerStorage) -> _LakeParquetIOManager:
    """The one backend switch for Dagster-managed Parquet outputs."""
    names: PathNames = layer.paths
    if layer.backend == "s3":
        return S3ParquetIOManager(
            bucket=layer.bucket,
            prefix=layer.s3.prefix,
            region=layer.s3.region,
            endpoint_url=layer.s3.endpoint_url,
            processed_dir=names.processed_dir,
        )
    return LocalParquetIOManager(base_dir=layer.base_dir, processed_dir=names.processed_dir)


def build_resources(cfg: Config) -> dict[str, Any]:
    """Resource keys used by the assets and sensors. A later `hot_store` (PostgreSQL) resource
    plugs in here, next to these, from `cfg.hot_store`."""
    return {
        "fluxforge": FluxForgeResource(config_path=cfg.source_path),
        "lake_io_manager": lake_io_manager(cfg.storage.etl_output),
    }


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(load_config()))
