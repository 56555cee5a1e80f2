"""The dbt project of the SQL models (``dbt_like_sql/``) as Dagster assets, through dagster-dbt.

- One asset per dbt model (``@dbt_assets`` over the manifest, parsed at load by
  ``fluxforge.sql_models.manifest``); a model's ``source('lake', t)`` is a dependency on the
  refinery's lake asset ``t`` (trades, book_snapshots, gap_ledger, ...), its ``ref()``s are
  dependencies on the other models. dbt's data tests are the models' asset checks (singular
  tests name their model with ``meta.dagster.ref``).
- The staging views are one unpartitioned multi-asset (materializing them validates their SQL
  against the lake). The marts (incremental tables) have daily UTC partitions, the date
  dimension of the refinery's partitions: a run builds the marts and their tests for its
  partition dates, passed to dbt as ``--vars '{dates: [...]}'`` (delete + insert of those dates,
  dbt_like_sql/macros/replace_dates.sql); a backfill over a range is one run (single-run policy).
- Freshness: the sensor ``sql_models_sensor`` (running by default) watches the refinery's lake
  materializations and requests ``sql_models_job`` for every date that got new lake data, at
  most one run per date in flight (dates seen meanwhile wait in the cursor). A sensor rather
  than declarative automation: the refinery's partitions are date x source and a date rarely
  has every source, which the eager condition treats as missing upstream data.
"""

import json
import logging
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets

from fluxforge import sql_models
from fluxforge.config import Config, load_config
from fluxforge.dbt_profile import PROJECT_DIR, default_profiles_dir
from fluxforge_dagster import lake_events
from fluxforge_dagster.defs.partitions import start_date

log = logging.getLogger(__name__)

SQL_JOB = "sql_models_job"
SENSOR_NAME = "sql_models_sensor"
TAG_DATE = "fluxforge/sql_date"
DBT_RESOURCE = "dbt"
STAGING = "config.materialized:view"
MARTS = "config.materialized:incremental"
# bars lag new lake data by at most about this much (plus the run): the marts of a whole day
# are rebuilt per run, so refreshing on every 5 s demo segment would only burn the CPU
REFRESH_INTERVAL_S = 60


def daily_partitions(cfg: Config) -> dg.DailyPartitionsDefinition:
    """The date dimension of the refinery partitions (same start, UTC, today included)."""
    return dg.DailyPartitionsDefinition(start_date=start_date(cfg), timezone="UTC", end_offset=1)


class LakeTranslator(DagsterDbtTranslator):
    """dbt nodes -> asset keys: a model is keyed by its name, a lake source by its table (the
    refinery's asset); groups are ``sql_staging`` / ``sql_marts`` (the models' folders); the
    owners are ``dagster.owners`` of the config, as on every other asset."""

    def __init__(self, owners: list[str]) -> None:
        super().__init__()
        self.owners = owners

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str] | None:
        return self.owners or None

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        # the default keys a source as lake/<table>; the refinery's asset is <table>
        return dg.AssetKey(dbt_resource_props["name"])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        fqn = dbt_resource_props.get("fqn") or []
        return f"sql_{fqn[1]}" if len(fqn) > 2 else "sql_models"


def _target_path(cfg: Config, context: dg.AssetExecutionContext) -> Path:
    """dbt's target/ and logs of one run, beside the DuckDB database (not in the repository)."""
    return default_profiles_dir(cfg) / "target" / f"{context.run.run_id[:8]}-{uuid.uuid4().hex[:6]}"


def build_sql_assets(cfg: Config) -> list[dg.AssetsDefinition]:
    """The staging views and the marts, one asset per model, from the project's manifest."""
    manifest = sql_models.manifest(cfg)
    translator = LakeTranslator(list(cfg.dagster.owners))
    nodes = json.loads(manifest.read_text())["nodes"].values()
    staging = [n["name"] for n in nodes if n["config"].get("materialized") == "view"]

    @dbt_assets(
        manifest=manifest, select=STAGING, name="sql_staging", dagster_dbt_translator=translator
    )
    def sql_staging(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        yield from dbt.cli(
            ["build"], context=context, target_path=_target_path(cfg, context)
        ).stream()

    @dbt_assets(
        manifest=manifest,
        select=MARTS,
        name="sql_marts",
        dagster_dbt_translator=translator,
        partitions_def=daily_partitions(cfg),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def sql_marts(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        missing = sql_models.missing_relations(cfg, staging)
        if missing:
            # a fresh DuckDB database: the marts read the staging views, build them first
            context.log.info("building the staging views %s first", ", ".join(missing))
            dbt.cli(["run", "--select", STAGING], target_path=_target_path(cfg, context)).wait()
        dates = sorted(context.partition_keys)
        context.log.info("refreshing dates %s", ", ".join(dates))
        args = ["build", "--vars", json.dumps({"dates": dates})]
        yield from dbt.cli(args, context=context, target_path=_target_path(cfg, context)).stream()

    return [sql_staging, sql_marts]


def dbt_resource(cfg: Config) -> DbtCliResource:
    """dbt on the repository's project with the profile generated from `cfg`."""
    # the dbt of this environment (beside its python), whether or not its bin/ is on PATH
    exe = Path(sys.executable).with_name("dbt")
    return DbtCliResource(
        project_dir=str(PROJECT_DIR),
        profiles_dir=str(default_profiles_dir(cfg)),
        dbt_executable=str(exe) if exe.is_file() else "dbt",
    )


def build_sql_job(cfg: Config) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        SQL_JOB,
        selection=dg.AssetSelection.groups("sql_marts"),
        partitions_def=daily_partitions(cfg),
        executor_def=dg.in_process_executor,
        description="Refresh the date-partitioned SQL models (marts) of one day from the lake",
    )


def evaluate_sql_tick(
    instance: dg.DagsterInstance, cursor: str | None, limit: int = 500
) -> dg.SensorResult:
    """Dates with new lake data since the cursor -> one run per date not already in flight."""
    cur = lake_events.Cursor.parse(cursor)
    updates = lake_events.new_updates(instance, cur.after, limit)
    pending = set(cur.pending.get("dates", [])) | {u.date for u in updates}
    cur.after = lake_events.last_storage_id(updates, cur.after)
    busy = lake_events.active_tag_values(instance, SQL_JOB, TAG_DATE) if pending else set()
    requests = [
        dg.RunRequest(
            run_key=f"sql:{day}:{cur.after}",
            partition_key=day,
            tags={TAG_DATE: day},
        )
        for day in sorted(pending - busy)
    ]
    cur.pending = {"dates": sorted(pending & busy)} if pending & busy else {}
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cur.dump())
    why = (
        f"dates {sorted(pending & busy)} wait for their running SQL model runs"
        if pending
        else "no new lake data since the last tick"
    )
    return dg.SensorResult(skip_reason=dg.SkipReason(why), cursor=cur.dump())


def build_sql_sensor(cfg: Config) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job_name=SQL_JOB,
        minimum_interval_seconds=max(REFRESH_INTERVAL_S, cfg.dagster.sensor_interval_s),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New lake data (refinery materializations) -> refresh that day's SQL marts",
    )
    def sql_models_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return evaluate_sql_tick(context.instance, context.cursor)

    return sql_models_sensor


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_config()
    try:
        assets = build_sql_assets(cfg)
    except sql_models.SqlModelsError as exc:
        # a broken SQL project must not take the refinery's code location down with it
        log.error("SQL models not registered: %s", exc)
        return dg.Definitions()
    return dg.Definitions(
        assets=assets,
        jobs=[build_sql_job(cfg)],
        sensors=[build_sql_sensor(cfg)],
        resources={DBT_RESOURCE: dbt_resource(cfg)},
    )
