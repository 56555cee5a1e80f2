"""Schedules of the refinery layer. Lifecycle rotation (02:00) and raw-segment tiering are
registered by their own modules next to this one when they land."""

from datetime import timedelta

import dagster as dg

from fluxforge.config import Config, load_config
from fluxforge_dagster.defs.jobs import COVERAGE_JOB
from fluxforge_dagster.defs.partitions import partition_key


def build_coverage_schedule(cfg: Config) -> dg.ScheduleDefinition:
    sources = [s.name for s in cfg.sources]

    @dg.schedule(
        name="coverage_daily_0015",
        cron_schedule="15 0 * * *",
        job_name=COVERAGE_JOB,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Final coverage of yesterday (UTC) for every source, after its last segment",
    )
    def coverage_daily_0015(context: dg.ScheduleEvaluationContext):
        day = (context.scheduled_execution_time - timedelta(days=1)).strftime("%Y-%m-%d")
        return [
            dg.RunRequest(run_key=f"coverage:{s}:{day}", partition_key=partition_key(s, day))
            for s in sources
        ]

    return coverage_daily_0015


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(schedules=[build_coverage_schedule(load_config())])
