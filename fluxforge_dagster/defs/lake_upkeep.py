"""Lake upkeep in Dagster: compaction + vacuum as a job on ``lake.compact_schedule`` (after the
day closes), a rebuild job for stale dates, and the ``lake_tables_current`` asset check that
flags partitions built with older normalizer / book-engine versions. Bodies call
``fluxforge.lake_upkeep``."""

from typing import Any

import dagster as dg
from pydantic import Field

from fluxforge.config import Config, load_config
from fluxforge.tables import REFINERY_TABLES
from fluxforge_dagster.defs.resources import FluxForgeResource

UPKEEP_JOB = "lake_upkeep_job"
SCHEDULE_NAME = "lake_upkeep_daily"
REBUILD_JOB = "lake_rebuild_job"


class UpkeepConfig(dg.Config):
    dry_run: bool = Field(default=False, description="plan only, change nothing")
    date: str | None = Field(default=None, description="compact only this date (YYYY-MM-DD)")
    vacuum: bool = Field(default=True, description="vacuum after compacting")


@dg.op(out=dg.Out(dg.Nothing), description="fluxforge.lake_upkeep.compact, then vacuum")
def compact_and_vacuum(
    context: dg.OpExecutionContext, config: UpkeepConfig, fluxforge: FluxForgeResource
) -> None:
    from fluxforge.lake_upkeep import compact, vacuum

    cfg = fluxforge.load()
    done = compact(cfg, date=config.date, dry_run=config.dry_run).to_dict()
    meta: dict[str, Any] = {
        "partitions_compacted": done["partitions_compacted"],
        "files_in": done["files_in"],
        "files_out": done["files_out"],
        "dry_run": config.dry_run,
    }
    if config.vacuum:
        meta["files_vacuumed"] = vacuum(cfg, dry_run=config.dry_run).to_dict()["files_vacuumed"]
    context.log.info(f"lake upkeep: {meta}")


class RebuildConfig(dg.Config):
    dates: list[str] = Field(default_factory=list, description="dates; empty = every stale one")


@dg.op(out=dg.Out(dg.Nothing), description="fluxforge.refinery.rebuild of each date")
def rebuild_dates(
    context: dg.OpExecutionContext, config: RebuildConfig, fluxforge: FluxForgeResource
) -> None:
    from fluxforge.lake_upkeep import stale_dates
    from fluxforge.refinery import rebuild

    cfg = fluxforge.load()
    for day in config.dates or stale_dates(cfg):
        report = rebuild(cfg, None, day)
        context.log.info(f"rebuilt {day} from {len(report.segments)} segments")


@dg.job(name=UPKEEP_JOB, description="Compact closed days of the lake tables, then vacuum")
def lake_upkeep_job() -> None:
    compact_and_vacuum()


@dg.job(name=REBUILD_JOB, description="Re-derive dates (default: every stale one) from raw")
def lake_rebuild_job() -> None:
    rebuild_dates()


def build_upkeep_schedule(cfg: Config) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=SCHEDULE_NAME,
        cron_schedule=cfg.lake.compact_schedule,
        job=lake_upkeep_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Compaction of closed days and vacuum of replaced files",
    )


@dg.asset_check(
    asset="trades",
    name="lake_tables_current",
    description="No lake partition was built with an older normalizer / book-engine version",
    additional_deps=[dg.AssetKey(t) for t in REFINERY_TABLES if t != "trades"],
)
def lake_tables_current(fluxforge: FluxForgeResource) -> dg.AssetCheckResult:
    from fluxforge.lake_upkeep import stale

    found = stale(fluxforge.load())
    return dg.AssetCheckResult(
        passed=not found,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "stale_partitions": len(found),
            "stale_dates": ", ".join(sorted({p.date for p in found})[:20]) or "none",
            "next_step": "fluxforge rebuild --stale (or run lake_rebuild_job)",
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_config()
    return dg.Definitions(
        jobs=[lake_upkeep_job, lake_rebuild_job],
        schedules=[build_upkeep_schedule(cfg)],
        asset_checks=[lake_tables_current],
    )
