"""The PostgreSQL hot tables as Dagster assets: ``hot/trades``, ``hot/quotes``,
``hot/book_snapshots`` and ``hot/bars_{interval}``, partitioned like the refinery (date x source).

A partition's run loads the lake part files of that (date, source) into the hot tables with one
call to ``fluxforge.hot.load_files`` (COPY, idempotent on natural keys, bars refreshed in
PostgreSQL); days before the hot window (the last ``lifecycle.hot_days``) are skipped, so a
backfill of old partitions loads nothing the 02:00 rotation would move out again.

``hot_store_sensor`` (running by default) follows the refinery: every refinery materialization
of a partition inside the hot window becomes a hot run for that partition with the same segment
batch (only those parts are read); a backfill or rebuild of a partition (no batch) reloads the
whole partition. At most one tick every 30 s and one run per partition at a time; batches seen
meanwhile are merged in the cursor and requested together. A hot run that failed (database
down, ...) makes its partition reload in full next, so no batch is left out of the hot tables.

The DSN is ``hot_store.dsn`` of the config (``FLUXFORGE_HOT_STORE__DSN`` overrides it; ``fluxforge
up`` sets it to the embedded server it starts). Read when a run starts, so no connection string
appears in the UI. Without a DSN nothing here is registered (logged), and neither is the
rotation job (``defs/lifecycle.py``).
"""

import logging
import time
from datetime import date
from typing import Any

import dagster as dg
from pydantic import Field

from fluxforge.config import Config, load_config
from fluxforge.redact import redact
from fluxforge_dagster import lake_events
from fluxforge_dagster.defs.partitions import partition_key, partition_of, refinery_partitions
from fluxforge_dagster.defs.resources import FluxForgeResource

log = logging.getLogger(__name__)

HOT_ASSET = "hot_store"
HOT_JOB = "hot_store_job"
SENSOR_NAME = "hot_store_sensor"
TAG_PARTITION = "fluxforge/hot_partition"
LAKE_TABLES = ("trades", "quotes", "book_snapshots")  # fluxforge.hot.LAKE_TABLES
WHOLE = "*"  # pending marker: reload the whole partition
# the hot tables lag the lake by at most about this much (plus the run): every run is a new
# process, ~10-40 s of launch on a busy 2-core machine, so one per demo segment would starve
# the refinery; batches seen meanwhile are merged into the next run
REFRESH_INTERVAL_S = 30


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (for logs): fluxforge.redact's one rule."""
    return redact(dsn)


def hot_dsn(cfg: Config) -> str | None:
    """The hot store DSN Dagster uses, or None (the hot assets are then not registered)."""
    return cfg.hot_store.dsn or None


def hot_keys(cfg: Config) -> list[dg.AssetKey]:
    tables = [*LAKE_TABLES, *(f"bars_{iv}" for iv in cfg.lifecycle.hot_intervals)]
    return [dg.AssetKey(["hot", t]) for t in tables]


class HotBatch(dg.Config):
    """Set by the sensor: the segment batch the refinery just wrote. Empty (a backfill or a
    manual launch) = the whole (date, source) partition."""

    segments: list[str] = Field(
        default_factory=list, description="raw segment names whose lake parts to load"
    )


def _part_keys(cfg: Config, source: str, day: str, segments: list[str]) -> list[str]:
    from fluxforge import quality, tiering
    from fluxforge.storage import Layout, open_storage

    if not segments:
        segments = [loc.name for loc in tiering.locate(cfg, source, day)]
    layer = cfg.storage.etl_output
    return quality.partition_parts(
        open_storage(layer), Layout.of(layer), LAKE_TABLES, source, day, segments
    )


def build_hot_assets(cfg: Config) -> list[dg.AssetsDefinition]:
    parts = refinery_partitions(cfg)
    specs = [
        dg.AssetSpec(
            dg.AssetKey(["hot", t]),
            deps=[t],
            partitions_def=parts,
            group_name="hot_store",
            kinds={"postgres"},
            owners=list(cfg.dagster.owners),
            description=f"PostgreSQL hot table `{t}` (day partitions, last hot_days)",
        )
        for t in LAKE_TABLES
    ]
    specs += [
        dg.AssetSpec(
            dg.AssetKey(["hot", f"bars_{iv}"]),
            deps=[dg.AssetKey(["hot", "trades"])],
            partitions_def=parts,
            group_name="hot_store",
            kinds={"postgres"},
            owners=list(cfg.dagster.owners),
            description=f"{iv} OHLCV bars computed in PostgreSQL from the hot trades",
        )
        for iv in cfg.lifecycle.hot_intervals
    ]

    @dg.multi_asset(
        name=HOT_ASSET,
        specs=specs,
        partitions_def=parts,
        description="Lake parts of a (date, source) partition -> PostgreSQL hot tables",
    )
    def hot_store(
        context: dg.AssetExecutionContext, config: HotBatch, fluxforge: FluxForgeResource
    ):
        from fluxforge import hot
        from fluxforge.lifecycle import today_in

        ff = fluxforge.load()
        dsn = hot_dsn(ff)
        if dsn is None:
            raise dg.Failure(description="hot_store.dsn is not set (FLUXFORGE_HOT_STORE__DSN)")
        source, day = partition_of(context.partition_key)
        today = today_in(ff.lifecycle.timezone)
        first = hot.window_start(today, ff.lifecycle.hot_days)
        keys = _part_keys(ff, source, day, list(config.segments))
        store = hot.HotStore(dsn, ff.lifecycle.hot_intervals)
        store.ensure_schema()  # the bars row counts below need the tables even when empty
        report = hot.load_files(ff, dsn, keys, today=today)
        in_window = date.fromisoformat(day) >= first
        for table in store.tables:
            meta: dict[str, Any] = {
                "rows_read": report.rows_read.get(table, 0),
                "rows_inserted": report.rows_inserted.get(table, 0),
                "files": report.files,
                "hot_window_start": first.isoformat(),
                "in_hot_window": in_window,
            }
            if table.startswith("bars_"):
                meta["rows_in_day"] = (
                    store.count(table, date.fromisoformat(day)) if in_window else 0
                )
            yield dg.MaterializeResult(asset_key=dg.AssetKey(["hot", table]), metadata=meta)

    return [hot_store]


def build_hot_job(cfg: Config) -> "dg.UnresolvedAssetJobDefinition":
    return dg.define_asset_job(
        HOT_JOB,
        selection=dg.AssetSelection.assets(*hot_keys(cfg)),
        partitions_def=refinery_partitions(cfg),
        executor_def=dg.in_process_executor,
        description="Load a (date, source) partition of the lake into the PostgreSQL hot tables",
    )


def evaluate_hot_tick(
    cfg: Config, instance: dg.DagsterInstance, cursor: str | None, limit: int = 500
) -> dg.SensorResult:
    """Refinery materializations since the cursor -> hot runs per (date, source) partition."""
    from fluxforge import hot
    from fluxforge.lifecycle import today_in

    cur = lake_events.Cursor.parse(cursor)
    updates = lake_events.new_updates(instance, cur.after, limit, with_segments=True)
    cur.after = lake_events.last_storage_id(updates, cur.after)
    first = hot.window_start(today_in(cfg.lifecycle.timezone), cfg.lifecycle.hot_days).isoformat()
    pending: dict[str, list[str]] = {k: list(v) for k, v in cur.pending.items()}
    now = time.time()
    if cur.checked:
        # a failed hot run's batch is not loaded: reload its whole partition (idempotent)
        for key in lake_events.failed_tag_values(instance, HOT_JOB, TAG_PARTITION, cur.checked):
            pending[key] = [WHOLE]
    cur.checked = now
    skipped = 0
    for u in updates:
        if u.date < first:
            skipped += 1
            continue
        key = f"{u.date}|{u.source}"
        have = pending.setdefault(key, [])
        if u.segments is None or WHOLE in have:
            pending[key] = [WHOLE]
        else:
            pending[key] = sorted(set(have) | set(u.segments))
    busy = lake_events.active_tag_values(instance, HOT_JOB, TAG_PARTITION) if pending else set()
    requests = []
    for key in sorted(set(pending) - busy):
        day, _, source = key.partition("|")
        batch = pending.pop(key)
        segments = [] if WHOLE in batch else batch
        requests.append(
            dg.RunRequest(
                run_key=f"hot:{key}:{cur.after}",
                partition_key=partition_key(source, day),
                run_config={"ops": {HOT_ASSET: {"config": {"segments": segments}}}},
                tags={TAG_PARTITION: key},
            )
        )
    cur.pending = pending
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=cur.dump())
    why = []
    if skipped:
        why.append(f"{skipped} refinery runs of days before the hot window ({first})")
    if pending:
        why.append(f"partitions {sorted(pending)} wait for their running hot loads")
    return dg.SensorResult(
        skip_reason=dg.SkipReason("; ".join(why) or "no new lake data since the last tick"),
        cursor=cur.dump(),
    )


def build_hot_sensor(cfg: Config) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job_name=HOT_JOB,
        minimum_interval_seconds=max(REFRESH_INTERVAL_S, cfg.dagster.sensor_interval_s),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Refinery runs inside the hot window -> load their parts into PostgreSQL",
    )
    def hot_store_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        return evaluate_hot_tick(cfg, context.instance, context.cursor)

    return hot_store_sensor


@dg.definitions
def defs() -> dg.Definitions:
    cfg = load_config()
    dsn = hot_dsn(cfg)
    if dsn is None:
        log.warning(
            "hot store assets not registered: hot_store.dsn is not set (set it, or "
            "FLUXFORGE_HOT_STORE__DSN; `fluxforge up` sets it to its embedded PostgreSQL)"
        )
        return dg.Definitions()
    log.info("hot store assets on %s", redact_dsn(dsn))
    return dg.Definitions(
        assets=build_hot_assets(cfg),
        jobs=[build_hot_job(cfg)],
        sensors=[build_hot_sensor(cfg)],
    )
