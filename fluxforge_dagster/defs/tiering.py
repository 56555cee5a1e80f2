"""Raw-segment tiering (docs/architecture.md, "Tiering and the reader") as a Dagster job on the
``tiering.schedule`` cron (UTC).

The op makes one call to ``fluxforge.tiering.tier``: archived raw segments move hot (shm) ->
warm (disk) -> cold (S3 or another directory) by age, and the manifest records where each one
is (the backfill path finds them there). Metadata: moves, bytes moved, segments per tier,
manifest repairs and segments missing from every tier.
"""

from datetime import UTC

import dagster as dg
from pydantic import Field

from fluxforge.config import Config, load_config
from fluxforge_dagster.defs.resources import FluxForgeResource

TIERING_JOB = "tiering_job"
TIERING_OP = "tier_raw_segments"
SCHEDULE_NAME = "tiering_schedule"


class TieringRun(dg.Config):
    dry_run: bool = Field(default=False, description="plan the moves, change nothing")


@dg.op(name=TIERING_OP, out=dg.Out(dg.Nothing), description="fluxforge.tiering.tier")
def tier_raw_segments(
    context: dg.OpExecutionContext, config: TieringRun, fluxforge: FluxForgeResource
) -> None:
    from fluxforge.tiering import tier

    report = tier(fluxforge.load(), dry_run=config.dry_run).to_dict()
    moved_to: dict[str, int] = {}
    for move in report["moves"]:
        moved_to[move["to_tier"]] = moved_to.get(move["to_tier"], 0) + 1
    if report["missing"]:
        context.log.warning(f"segments missing from every tier: {report['missing'][:10]}")
    context.add_output_metadata(
        {
            "dry_run": report["dry_run"],
            "moved": report["moved"],
            "moved_to": dg.MetadataValue.json(moved_to),
            "bytes_moved": report["bytes_moved"],
            "registered": report["registered"],
            "repaired": len(report["repaired"]),
            "missing": len(report["missing"]),
            "segments_per_tier": dg.MetadataValue.json(report["segments"]),
        }
    )


@dg.job(name=TIERING_JOB, description="Move archived raw segments hot -> warm -> cold by age")
def tiering_job() -> None:
    tier_raw_segments()


def build_tiering_schedule(cfg: Config) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=cfg.tiering.schedule,
        execution_timezone="UTC",
        job=tiering_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Raw-segment tiering at {cfg.tiering.schedule} (UTC)",
    )
    def tiering_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.astimezone(UTC).strftime("%Y%m%dT%H%M")
        return dg.RunRequest(run_key=f"tier:{tick}")

    return tiering_schedule


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(jobs=[tiering_job], schedules=[build_tiering_schedule(load_config())])
