"""`ready_segments_sensor`: sealed raw segments -> claimed -> refinery runs.

Discovery and batching are pure (`fluxforge_dagster.discovery`); this adapter lists, claims
(ready -> processing, atomic) and turns the plan into run requests. Runs of one source are
serialized by the run queue (dagster.yaml: tag concurrency 1 per source), so segments of a
source are refined in write order and book state carries over correctly.
"""

import logging

import dagster as dg

from fluxforge.config import Config, load_config
from fluxforge_dagster import discovery
from fluxforge_dagster.defs.jobs import REFINERY_JOB
from fluxforge_dagster.defs.partitions import partition_key
from fluxforge_dagster.defs.resources import FluxForgeResource

_log = logging.getLogger(__name__)
SENSOR_NAME = "ready_segments_sensor"
TAG_SOURCE, TAG_FIRST, TAG_LAST = "fluxforge/source", "fluxforge/first", "fluxforge/last"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _ranges(instance: dg.DagsterInstance, statuses: list[dg.DagsterRunStatus]):
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=REFINERY_JOB, statuses=statuses), limit=200
    )
    return [
        (r.tags[TAG_SOURCE], r.tags[TAG_FIRST], r.tags[TAG_LAST])
        for r in runs
        if {TAG_SOURCE, TAG_FIRST, TAG_LAST} <= set(r.tags)
    ]


def _queued_sources(instance: dg.DagsterInstance | None) -> set[str]:
    if instance is None:
        return set()
    queued = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=REFINERY_JOB, statuses=queued), limit=200
    )
    return {r.tags[TAG_SOURCE] for r in runs if TAG_SOURCE in r.tags}


def run_request(batch: discovery.Batch) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch.run_key,
        partition_key=partition_key(batch.source, batch.date),
        run_config={"ops": {"refinery": {"config": {"segments": list(batch.names)}}}},
        tags={
            TAG_SOURCE: batch.source,
            TAG_FIRST: batch.names[0],
            TAG_LAST: batch.names[-1],
            "fluxforge/segments": str(len(batch.names)),
        },
    )


def evaluate_tick(
    cfg: Config,
    cursor: str | None,
    instance: dg.DagsterInstance | None,
    log: logging.Logger | None = None,
) -> dg.SensorResult:
    """One sensor tick: list, plan, claim, request. Also used by tests directly."""
    from fluxforge import refinery

    sources = [s.name for s in cfg.sources]
    waiting = _queued_sources(instance)
    # a source whose previous run has not started yet gets no new run: its segments wait in
    # ready/ and go into one bigger batch next tick instead of a queue of tiny runs
    ready = [r for r in refinery.list_segments(cfg, "ready") if r.source not in waiting]
    processing = refinery.list_segments(cfg, "processing")
    mark = discovery.parse_cursor(cursor)
    held = []
    if instance is not None and processing:
        held = discovery.held_by_failed_runs(
            processing,
            mark,
            _ranges(instance, [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]),
            _ranges(instance, _ACTIVE),
        )
    plan = discovery.plan_batches(
        ready, processing, mark, cfg.dagster.max_segments_per_run, sources, held=held
    )
    claimed = {
        (b.source, name): refinery.claim(cfg, refinery.SegmentRef(b.source, name))
        for b in plan.batches
        if not b.orphan
        for name in b.names
    }
    plan = discovery.commit(plan, claimed)
    notes = list(plan.notes)
    new_cursor = discovery.dump_cursor(plan.cursor)
    if not plan.batches:
        where = f"{cfg.storage.etl_input.base_dir}/{cfg.storage.etl_input.paths.raw_dir}"
        reason = f"no ready segments under {where} for sources {sorted(sources)}"
        if waiting:
            reason += f" (sources {sorted(waiting)} wait for their queued run)"
        return dg.SensorResult(
            skip_reason=dg.SkipReason("; ".join([reason, *notes])), cursor=new_cursor
        )
    if plan.deferred:
        notes.append(f"{plan.deferred} more segments wait for the next tick")
    for note in notes:
        (log or _log).warning(note)
    return dg.SensorResult(run_requests=[run_request(b) for b in plan.batches], cursor=new_cursor)


def build_sensor(cfg: Config) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job_name=REFINERY_JOB,
        minimum_interval_seconds=cfg.dagster.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Claims sealed raw segments and requests refinery runs, batched per "
        "(source, date), run_key = first..last segment",
    )
    def ready_segments_sensor(context: dg.SensorEvaluationContext, fluxforge: FluxForgeResource):
        return evaluate_tick(fluxforge.load(), context.cursor, context.instance, context.log)

    return ready_segments_sensor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[build_sensor(load_config())])
