"""The dbt-like SQL models (``dbt_like_sql/``) as Dagster assets, one per model.

- Dependencies are the ``ref()`` graph; a model's ``source('lake', t)`` is a dependency on the
  refinery's lake asset ``t`` (trades, book_snapshots, gap_ledger, ...).
- Models materialized as tables and partitioned by ``date`` (the marts) get daily UTC partitions
  (the date dimension of the refinery's partitions): a run rebuilds exactly those ``date=`` files
  (``sqlmodels.run(dates=...)``); a backfill over a range is one run (single-run policy). Views
  (staging) are unpartitioned: materializing one validates its SQL against the lake.
- A model's YAML tests and the singular tests it owns are its asset checks, evaluated right
  after the model is built; failing ``error``-severity checks of a mart are blocking, so the
  marts built from it in the same run are skipped instead of built from bad data. Singular tests
  that compare a model with a staging view read the lake as it is *now*: when one fails while
  the refinery was writing during the run, the result is inconclusive and reported as a warning
  (the new lake data triggers another run, which checks again).
- Freshness: the sensor ``sql_models_sensor`` (running by default) watches the refinery's
  lake materializations and requests ``sql_models_job`` for every date that got new lake data,
  at most one run per date in flight (dates seen meanwhile wait in the cursor). A sensor rather
  than declarative automation: the refinery's partitions are date x source and a date rarely
  has every source, which the eager condition treats as missing upstream data.
"""

import logging
from collections.abc import Callable
from typing import Any

import dagster as dg

from fluxforge import sqlmodels
from fluxforge.config import Config, load_config
from fluxforge_dagster import lake_events
from fluxforge_dagster.defs.partitions import start_date
from fluxforge_dagster.defs.resources import FluxForgeResource

log = logging.getLogger(__name__)

SQL_JOB = "sql_models_job"
SENSOR_NAME = "sql_models_sensor"
TAG_DATE = "fluxforge/sql_date"
# bars lag new lake data by at most about this much (plus the run): the marts of a whole day
# are rebuilt per run, so refreshing on every 5 s demo segment would only burn the CPU
REFRESH_INTERVAL_S = 60


def daily_partitions(cfg: Config) -> dg.DailyPartitionsDefinition:
    """The date dimension of the refinery partitions (same start, UTC, today included)."""
    return dg.DailyPartitionsDefinition(start_date=start_date(cfg), timezone="UTC", end_offset=1)


def is_dated(model: sqlmodels.Model) -> bool:
    return model.materialized == "table" and "date" in model.partition_by


def model_deps(model: sqlmodels.Model) -> list[dg.AssetKey]:
    """Upstream assets: the models it refs, then the lake tables it reads."""
    deps = [dg.AssetKey(r) for r in model.deps]
    deps += [dg.AssetKey(t) for s, t in model.sources if s == "lake"]
    return deps


def _check_specs(project: sqlmodels.Project, model: sqlmodels.Model) -> list[dg.AssetCheckSpec]:
    blocking_model = is_dated(model)
    return [
        dg.AssetCheckSpec(
            t.name,
            asset=model.name,
            # a singular test reads other models too: they are built first in the same run
            additional_deps=[r for r in t.refs if r != model.name],
            blocking=blocking_model and t.severity == "error",
            description=f"{t.kind} test ({t.path or 'project'}); severity {t.severity}",
        )
        for t in project.tests_for(model.name)
    ]


def live_lake_tests(project: sqlmodels.Project) -> set[str]:
    """Singular tests comparing models with a staging view, i.e. with the lake as it is now."""
    return {
        t.name
        for t in project.singular_tests
        if any(project.models[r].materialized == "view" for r in t.refs)
    }


def lake_changed_during(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why the lake may have changed since run `run_id` started (None when it did not): a
    refinery materialization since then, or a refinery run still writing."""
    from fluxforge_dagster.defs.jobs import REFINERY_JOB

    record = instance.get_run_record_by_id(run_id)
    since = (record.start_time or record.create_timestamp.timestamp()) if record else None
    if since is not None:
        seen = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=lake_events.LAKE_MARKER, after_timestamp=since),
            limit=1,
        )
        if seen.records:
            return "the refinery wrote lake data while this run built and tested the model"
    if lake_events.active_runs(instance, REFINERY_JOB, lake_events.RUNNING):
        return "a refinery run was writing the lake while this run tested the model"
    return None


def check_results(
    result: sqlmodels.TestResult, live: set[str], lake_changed: Callable[[], str | None]
) -> list[dg.AssetCheckResult]:
    """Test runs -> check results. A failed live-lake test while the lake was changing compares
    a model built from an older lake with the newer lake: inconclusive, so it is reported as a
    warning (not blocking); the new lake data triggers another run, which checks again."""
    out = []
    for t in result.tests:
        meta: dict[str, Any] = {"failing_rows": t.failures, "kind": t.kind, "status": t.status}
        if t.column:
            meta["column"] = t.column
        if t.error:
            meta["error"] = t.error
        severity = (
            dg.AssetCheckSeverity.WARN if t.severity == "warn" else dg.AssetCheckSeverity.ERROR
        )
        if t.status == "fail" and severity == dg.AssetCheckSeverity.ERROR and t.name in live:
            why = lake_changed()
            if why:
                meta["inconclusive"] = why
                severity = dg.AssetCheckSeverity.WARN
        out.append(
            dg.AssetCheckResult(
                check_name=t.name, passed=t.status == "pass", severity=severity, metadata=meta
            )
        )
    return out


def _model_asset(
    cfg: Config, project: sqlmodels.Project, model: sqlmodels.Model
) -> dg.AssetsDefinition:
    name = model.name
    dated = is_dated(model)
    specs = _check_specs(project, model)
    live = live_lake_tests(project)

    @dg.asset(
        name=name,
        deps=model_deps(model),
        group_name=f"sql_{model.group}",
        kinds={"duckdb", "parquet"} if model.materialized == "table" else {"duckdb"},
        partitions_def=daily_partitions(cfg) if dated else None,
        backfill_policy=dg.BackfillPolicy.single_run() if dated else None,
        check_specs=specs,
        owners=list(cfg.dagster.owners),
        description=model.description or f"SQL model {model.path}",
        metadata={"sql_path": model.path, "materialized": model.materialized},
    )
    def _asset(context: dg.AssetExecutionContext, fluxforge: FluxForgeResource):
        ff = fluxforge.load()
        dates = list(context.partition_keys) if dated else None
        run = sqlmodels.run(ff, select=[name], project=project, dates=dates).model(name)
        if run.status not in ("success", "view"):
            raise dg.Failure(description=f"SQL model {name}: {run.error or run.status}")
        meta: dict[str, Any] = {
            "rows": run.rows,
            "files": run.files,
            "bytes": run.bytes,
            "partitions": run.partitions,
            "seconds": round(run.seconds, 3),
        }
        if run.uri:
            meta["uri"] = run.uri
        if dates:
            meta["dates"] = ", ".join(dates)
        checks = []
        if specs:
            tested = sqlmodels.test(ff, select=[name], project=project)
            checks = check_results(
                tested, live, lambda: lake_changed_during(context.instance, context.run_id)
            )
        return dg.MaterializeResult(metadata=meta, check_results=checks)

    return _asset


def build_sql_assets(
    cfg: Config, project: sqlmodels.Project | None = None
) -> list[dg.AssetsDefinition]:
    """One asset per enabled model, in the project's run order."""
    project = project or sqlmodels.load_project()
    return [_model_asset(cfg, project, project.models[n]) for n in project.order]


def dated_model_names(project: sqlmodels.Project | None = None) -> list[str]:
    project = project or sqlmodels.load_project()
    return [n for n in project.order if is_dated(project.models[n])]


def build_sql_job(
    cfg: Config, project: sqlmodels.Project | None = None
) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        SQL_JOB,
        selection=dg.AssetSelection.assets(*dated_model_names(project)),
        partitions_def=daily_partitions(cfg),
        executor_def=dg.in_process_executor,
        description="Rebuild the date-partitioned SQL models (marts) of one day from the lake",
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
        description="New lake data (refinery materializations) -> rebuild that day's SQL marts",
    )
    def sql_models_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return evaluate_sql_tick(context.instance, context.cursor)

    return sql_models_sensor


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_config()
    try:
        project = sqlmodels.load_project()
    except sqlmodels.ProjectError as exc:
        # a broken SQL project must not take the refinery's code location down with it
        log.error("SQL models not registered: %s", exc)
        return dg.Definitions()
    return dg.Definitions(
        assets=build_sql_assets(cfg, project),
        jobs=[build_sql_job(cfg, project)],
        sensors=[build_sql_sensor(cfg)],
    )
