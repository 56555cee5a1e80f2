"""New lake data, as seen from the Dagster event log: the sensors that keep the SQL models and
the hot tables fresh read the refinery's `trades` materializations after a cursor.

The refinery multi-asset materializes every lake table in one step, `trades` included, for every
run (sensor batch, backfill or rebuild), so one `trades` materialization of a (date, source)
partition marks new lake data of that partition. The cursor is JSON: ``{"after": storage_id,
"pending": {...}}``; `pending` holds work a sensor could not request yet (a run for the same
partition was still queued or running), so nothing seen is ever dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

LAKE_MARKER = dg.AssetKey("trades")
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RUNNING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


@dataclass(frozen=True)
class LakeUpdate:
    """One refinery materialization: partition (source, date), run and its segment batch."""

    storage_id: int
    source: str
    date: str
    run_id: str
    segments: tuple[str, ...] | None  # None = the whole partition (backfill / rebuild)


@dataclass
class Cursor:
    after: int = 0
    pending: dict[str, Any] = field(default_factory=dict)
    checked: float = 0.0  # when failed runs were last looked for (epoch s)

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            int(data.get("after", 0)),
            dict(data.get("pending") or {}),
            float(data.get("checked", 0.0)),
        )

    def dump(self) -> str:
        data = {"after": self.after, "pending": self.pending, "checked": self.checked}
        return json.dumps(data, sort_keys=True)


def _segments_of(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...] | None:
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    ops = (run.run_config or {}).get("ops", {})
    names = ((ops.get("refinery") or {}).get("config") or {}).get("segments") or []
    return tuple(names) or None


def new_updates(
    instance: dg.DagsterInstance, after: int, limit: int = 500, with_segments: bool = False
) -> list[LakeUpdate]:
    """Refinery materializations stored after `after`, oldest first."""
    from fluxforge_dagster.defs.partitions import partition_of

    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LAKE_MARKER, after_storage_id=after or None),
        limit=limit,
        ascending=True,
    )
    out = []
    for record in result.records:
        if not record.partition_key:
            continue
        source, date = partition_of(record.partition_key)
        segments = _segments_of(instance, record.run_id) if with_segments else None
        out.append(LakeUpdate(record.storage_id, source, date, record.run_id, segments))
    return out


def active_tag_values(instance: dg.DagsterInstance, job_name: str, tag: str) -> set[str]:
    """Values of `tag` on the queued or running runs of `job_name`."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=ACTIVE), limit=1000)
    return {r.tags[tag] for r in runs if tag in r.tags}


def active_runs(
    instance: dg.DagsterInstance, job_name: str, statuses: list[dg.DagsterRunStatus] = ACTIVE
) -> int:
    """How many runs of `job_name` are in `statuses` (default: queued or running)."""
    return len(
        instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, statuses=statuses))
    )


def failed_tag_values(
    instance: dg.DagsterInstance, job_name: str, tag: str, since: float
) -> set[str]:
    """Values of `tag` on runs of `job_name` that failed or were canceled after `since`."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=job_name,
            statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
            updated_after=datetime.fromtimestamp(since, UTC),
        ),
        limit=1000,
    )
    return {r.tags[tag] for r in runs if tag in r.tags}


def last_storage_id(updates: Iterable[LakeUpdate], default: int) -> int:
    return max((u.storage_id for u in updates), default=default)
