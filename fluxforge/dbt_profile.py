"""The dbt profile of the SQL models (``dbt_like_sql/``), generated from the FluxForge config.

One target, ``lake``, on dbt-duckdb:

- ``path``: the DuckDB database holding the marts' tables (incremental state, see
  ``dbt_like_sql/dbt_project.yml``): ``sql_models.duckdb_path`` of the config, else
  ``{state_dir}/dbt/fluxforge.duckdb`` under a local lake, else ``./fluxforge_data/dbt/...``;
- ``plugins``: the lake's Delta tables through ``fluxforge.dbt_lake`` (alias ``delta``) with the
  lake root (``{processed_dir}``) and, on S3, the non-secret storage options;
- ``external_root``: where the marts are published as Parquet, ``{processed_dir}/models``
  (``Layout.model_dir``), read by ``fluxforge.query``;
- ``filesystems``: on S3, an fsspec ``s3`` filesystem for DuckDB (it cannot install httpfs offline).

No secret is ever written: credentials stay in the environment / IAM, where delta-rs and s3fs
find them themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from fluxforge.config import Config
from fluxforge.storage import Layout, open_storage

PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_like_sql"
PROFILE = "fluxforge"
TARGET = "lake"
# keys of the storages' option dicts that carry credentials: never written to a profile
_SECRET_KEYS = {
    "key",
    "secret",
    "token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
}


def _public(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k.lower() not in _SECRET_KEYS and v is not None}


def duckdb_path(cfg: Config) -> Path:
    """The DuckDB database of the marts (always on a local disk)."""
    if cfg.sql_models.duckdb_path:
        return Path(cfg.sql_models.duckdb_path).resolve()
    layer = cfg.storage.etl_output
    if layer.backend == "local":
        return (Path(layer.base_dir) / Layout.of(layer).state("dbt", "fluxforge.duckdb")).resolve()
    return Path("fluxforge_data/dbt/fluxforge.duckdb").resolve()


def _uri(cfg: Config, key: str) -> str:
    layer = cfg.storage.etl_output
    storage = open_storage(layer)
    if layer.backend == "local":
        return str(storage.local_path(key).resolve())
    return f"s3://{storage.arrow_path(key)}"


def lake_root(cfg: Config) -> str:
    """``{processed_dir}`` of the ETL output storage: a directory or an ``s3://`` URI."""
    return _uri(cfg, Layout.of(cfg.storage.etl_output).names.processed_dir)


def models_root(cfg: Config) -> str:
    """Where the marts are published: ``{processed_dir}/models``."""
    return _uri(cfg, Layout.of(cfg.storage.etl_output).model_dir("x").rsplit("/", 1)[0])


def profile(cfg: Config) -> dict[str, Any]:
    """The profiles.yml mapping for `cfg`."""
    layer = cfg.storage.etl_output
    plugin: dict[str, Any] = {"lake_root": lake_root(cfg)}
    output: dict[str, Any] = {
        "type": "duckdb",
        "path": str(duckdb_path(cfg)),
        "threads": cfg.sql_models.threads,
        "external_root": models_root(cfg),
    }
    if layer.backend == "s3":
        storage = open_storage(layer)
        plugin["storage_options"] = _public(storage.storage_options())
        output["filesystems"] = [{"fs": "s3", **_public(storage.fsspec_options())}]
    output["plugins"] = [{"module": "fluxforge.dbt_lake", "alias": "delta", "config": plugin}]
    return {PROFILE: {"target": TARGET, "outputs": {TARGET: output}}}


def write_profiles(cfg: Config, profiles_dir: str | os.PathLike[str]) -> Path:
    """Write ``profiles.yml`` for `cfg` into `profiles_dir`; make the local directories the
    profile points at (DuckDB creates neither a database's folder nor a COPY target's parent)."""
    directory = Path(profiles_dir)
    directory.mkdir(parents=True, exist_ok=True)
    duckdb_path(cfg).parent.mkdir(parents=True, exist_ok=True)
    if cfg.storage.etl_output.backend == "local":
        Path(models_root(cfg)).mkdir(parents=True, exist_ok=True)
    path = directory / "profiles.yml"
    text = "# Generated from the FluxForge config by fluxforge/dbt_profile.py\n" + yaml.safe_dump(
        profile(cfg), sort_keys=False
    )
    # rewritten only when it changes: dbt re-parses the whole project when the profile moves
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def default_profiles_dir(cfg: Config) -> Path:
    """Where the wrappers keep the generated profile: beside the DuckDB database."""
    return duckdb_path(cfg).parent
