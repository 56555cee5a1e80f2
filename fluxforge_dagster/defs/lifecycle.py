"""Lifecycle rotation (docs/architecture.md, "Hot store and rotation") as a Dagster job and the
schedule ``rotation_daily_0200``.

The schedule fires at ``lifecycle.schedule`` (02:00 by default) in ``lifecycle.timezone`` and
passes the local date of its tick as ``today``, so a late or re-executed run rotates exactly what
that tick would have. The op makes one call to ``fluxforge.lifecycle.rotate`` (two-phase per
hot day: cold Parquet copy written and verified, only then the hot partition dropped, then
ANALYZE) and reports days, rows per table, bytes written and partitions dropped.

``lifecycle.enabled: false`` leaves the schedule stopped and makes its ticks skip; a manual run
then does nothing unless its config says ``force: true`` (like ``fluxforge rotate --force``).
Registered only when the hot store has a DSN (see ``defs/hot_store.py``).
"""

import logging
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from fluxforge.config import Config, load_config
from fluxforge_dagster.defs.hot_store import hot_dsn
from fluxforge_dagster.defs.resources import FluxForgeResource

log = logging.getLogger(__name__)

ROTATION_JOB = "rotation_job"
ROTATION_OP = "rotate_hot_days"
SCHEDULE_NAME = "rotation_daily_0200"


class RotationConfig(dg.Config):
    """The options of `fluxforge rotate`, plus the day the rotation counts from."""

    dry_run: bool = Field(default=False, description="plan only, change nothing")
    analyze_only: bool = Field(default=False, description="only ANALYZE the hot tables")
    force: bool = Field(default=False, description="run even if lifecycle.enabled is false")
    hot_days: int | None = Field(default=None, ge=1, description="window (default: config)")
    today: str | None = Field(
        default=None, description="YYYY-MM-DD in lifecycle.timezone (default: now)"
    )


def rotation_metadata(out: dict[str, Any]) -> dict[str, Any]:
    """Days, rows per table, bytes and partitions dropped of a plan or result."""
    if "skipped" in out:
        return {"skipped": out["skipped"]}
    if "plan" not in out and "analyzed" in out:
        return {"analyzed": ", ".join(out["analyzed"])}
    plan = out.get("plan", out)
    rows = out.get("rows", plan.get("rows", {}))
    meta: dict[str, Any] = {
        "days": ", ".join(plan.get("days", [])) or "none",
        "first_hot_day": plan.get("first_hot_day", ""),
        "rows": dg.MetadataValue.json(rows),
        "rows_total": int(sum(rows.values())),
        "dry_run": bool(out.get("dry_run", False)),
    }
    if not out.get("dry_run"):
        meta.update(
            {
                "partitions_dropped": out["partitions_dropped"],
                "bytes_written": out["bytes_written"],
                "cold_copies_reused": out["cold_reused"],
                "analyzed": ", ".join(out["analyzed"]),
                "seconds": round(out["seconds"], 3),
            }
        )
        if out.get("rows_per_s") is not None:
            meta["rows_per_s"] = out["rows_per_s"]
    return meta


@dg.op(name=ROTATION_OP, out=dg.Out(dg.Nothing), description="fluxforge.lifecycle.rotate")
def rotate_hot_days(
    context: dg.OpExecutionContext, config: RotationConfig, fluxforge: FluxForgeResource
) -> None:
    from fluxforge.lifecycle import rotate

    cfg = fluxforge.load()
    dsn = hot_dsn(cfg)
    if dsn is None:
        raise dg.Failure(description="hot_store.dsn is not set (FLUXFORGE_HOT_STORE__DSN)")
    out = rotate(
        cfg,
        dsn,
        dry_run=config.dry_run,
        analyze_only=config.analyze_only,
        force=config.force,
        hot_days=config.hot_days,
        today=date.fromisoformat(config.today) if config.today else None,
    )
    if "skipped" in out:
        context.log.info(out["skipped"])
    context.add_output_metadata(rotation_metadata(out))


@dg.job(name=ROTATION_JOB, description="Move hot days older than hot_days to cold Parquet")
def rotation_job() -> None:
    rotate_hot_days()


def build_rotation_schedule(cfg: Config) -> dg.ScheduleDefinition:
    tz = cfg.lifecycle.timezone
    enabled = cfg.lifecycle.enabled

    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=cfg.lifecycle.schedule,
        execution_timezone=tz,
        job=rotation_job,
        default_status=dg.DefaultScheduleStatus.RUNNING
        if enabled
        else dg.DefaultScheduleStatus.STOPPED,
        description=f"Lifecycle rotation at {cfg.lifecycle.schedule} ({tz})",
    )
    def rotation_daily_0200(context: dg.ScheduleEvaluationContext):
        if not enabled:
            return dg.SkipReason("lifecycle.enabled is false")
        today = context.scheduled_execution_time.astimezone(ZoneInfo(tz)).date().isoformat()
        return dg.RunRequest(
            run_key=f"rotation:{today}",
            run_config={"ops": {ROTATION_OP: {"config": {"today": today}}}},
            tags={"fluxforge/rotation_day": today},
        )

    return rotation_daily_0200


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_config()
    if hot_dsn(cfg) is None:
        log.warning("rotation job not registered: the hot store has no DSN (hot_store.dsn)")
        return dg.Definitions()
    return dg.Definitions(jobs=[rotation_job], schedules=[build_rotation_schedule(cfg)])
