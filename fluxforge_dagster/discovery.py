"""Pure planning for the ready-segments sensor (no Dagster, no I/O): which segments go into
which run, the run keys, and the cursor.

The cursor holds the high-water mark of claimed segment names per source and a retry counter
per source. Segment names sort in write order and never repeat (docs/segment-format.md), so:

* every ``ready`` segment is unclaimed and is planned into a new batch (then claimed); one at
  or below the mark was put back by the refinery after a failed attempt, so its batch gets a
  fresh run key (``#retryN``) instead of colliding with the failed run's key;
* a ``processing`` segment above the cursor was claimed by a tick whose run requests never
  got committed (the cursor is committed together with the runs): it is re-requested, in
  batches formed the same way, so the run key is the same and Dagster dedupes it if the run
  did get launched;
* a ``processing`` segment at or below the cursor belongs to a launched run: in flight, or
  held by a run that failed without handing it back (a crashed or interrupted worker). Held
  segments are requested again under a ``#retryN`` key, up to ``MAX_HELD_RETRIES`` times per
  segment; after that they are only reported. Reprocessing replaces a segment's parts, so a
  retry never writes anything twice.

A batch holds consecutive segments of one source and one UTC date (one partition), at most
``max_per_run`` of them. Its run key is the identity of its first and last segment.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fluxforge.segments import parse_segment_name

MAX_BATCHES_PER_TICK = 10
MAX_HELD_RETRIES = 3


class SegmentLike(Protocol):
    source: str
    name: str


@dataclass(frozen=True)
class Batch:
    """One run: consecutive segments of one (source, date) partition."""

    source: str
    date: str
    names: tuple[str, ...]
    orphan: bool = False  # already in processing/ (uncommitted tick, or held by a failed run)
    attempt: int = 0  # > 0: a retry (segments put back to ready/, or held by a failed run)
    held: bool = False  # segments of a failed run, still in processing/

    @property
    def run_key(self) -> str:
        first = self.names[0].removesuffix(".ndjson")
        last = self.names[-1].removesuffix(".ndjson")
        key = f"{self.source}:{first}..{last}"
        return f"{key}#retry{self.attempt}" if self.attempt else key

    @property
    def partition(self) -> dict[str, str]:
        return {"date": self.date, "source": self.source}


@dataclass
class Cursor:
    last: dict[str, str] = field(default_factory=dict)  # source -> highest claimed segment
    retries: dict[str, int] = field(default_factory=dict)  # source -> retry batches so far
    held: dict[str, int] = field(default_factory=dict)  # "source/name" -> held-retries so far

    def copy(self) -> Cursor:
        return Cursor(dict(self.last), dict(self.retries), dict(self.held))


@dataclass
class Plan:
    batches: list[Batch]
    cursor: Cursor
    notes: list[str] = field(default_factory=list)
    deferred: int = 0  # segments left for the next tick (per-tick batch cap)


def parse_cursor(text: str | None) -> Cursor:
    """The cursor; an empty or foreign cursor means 'nothing claimed yet'."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    last, retries, held = data.get("last") or {}, data.get("retries") or {}, data.get("held") or {}
    return Cursor(
        {str(k): str(v) for k, v in last.items() if isinstance(v, str)},
        {str(k): int(v) for k, v in retries.items() if isinstance(v, int)},
        {str(k): int(v) for k, v in held.items() if isinstance(v, int)},
    )


def dump_cursor(cursor: Cursor) -> str:
    data = {
        "last": dict(sorted(cursor.last.items())),
        "retries": dict(sorted(cursor.retries.items())),
        "held": dict(sorted(cursor.held.items())),
    }
    return json.dumps(data, separators=(",", ":"))


def _date(name: str) -> str:
    return parse_segment_name(name).date


def _chunk(
    source: str, names: Iterable[str], max_per_run: int, orphan: bool, held: bool = False
) -> Iterable[Batch]:
    run: list[str] = []
    for name in sorted(names, key=parse_segment_name):
        if run and (len(run) >= max_per_run or _date(run[0]) != _date(name)):
            yield Batch(source, _date(run[0]), tuple(run), orphan, held=held)
            run = []
        run.append(name)
    if run:
        yield Batch(source, _date(run[0]), tuple(run), orphan, held=held)


def _group(refs: Iterable[SegmentLike]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ref in refs:
        out.setdefault(ref.source, []).append(ref.name)
    return out


def _above(name: str, mark: str | None) -> bool:
    return mark is None or parse_segment_name(name) > parse_segment_name(mark)


def plan_batches(
    ready: Sequence[SegmentLike],
    processing: Sequence[SegmentLike],
    cursor: Cursor,
    max_per_run: int,
    sources: Collection[str],
    max_batches: int = MAX_BATCHES_PER_TICK,
    held: Sequence[SegmentLike] = (),
) -> Plan:
    """Batches to request this tick, oldest first per source: segments held by failed runs,
    then orphans, then new segments. `held` comes from ``held_by_failed_runs``."""
    if max_per_run < 1:
        raise ValueError(f"max_segments_per_run={max_per_run}: must be >= 1")
    notes: list[str] = []
    unknown = sorted({r.source for r in (*ready, *processing)} - set(sources))
    if unknown:
        notes.append(
            f"segments of sources {unknown} are not partitions of this code location "
            f"(configured sources: {sorted(sources)}): add them to the config's sources"
        )
    batches: list[Batch] = []
    new = cursor.copy()
    ready_by = _group(r for r in ready if r.source in sources)
    proc_by = _group(r for r in processing if r.source in sources)
    held_by = _group(r for r in held if r.source in sources)
    in_processing = {f"{r.source}/{r.name}" for r in processing}
    new.held = {k: v for k, v in cursor.held.items() if k in in_processing}
    given_up = []
    for source in sorted(set(ready_by) | set(proc_by)):
        mark = cursor.last.get(source)
        retry = []
        for n in held_by.get(source, []):
            if new.held.get(f"{source}/{n}", 0) < MAX_HELD_RETRIES:
                retry.append(n)
            else:
                given_up.append(n)
        batches.extend(_chunk(source, retry, max_per_run, orphan=True, held=True))
        orphans = [n for n in proc_by.get(source, []) if _above(n, mark)]
        batches.extend(_chunk(source, orphans, max_per_run, orphan=True))
        batches.extend(_chunk(source, ready_by.get(source, []), max_per_run, orphan=False))
    # Interleave nothing: keep per-source order, but cap the tick so it stays short; the
    # remaining segments stay ready/claimed-orphan and come next tick in the same order.
    by_source: dict[str, list[Batch]] = {}
    for b in batches:
        by_source.setdefault(b.source, []).append(b)
    chosen: list[Batch] = []
    while len(chosen) < max_batches and any(by_source.values()):
        for source in sorted(by_source):
            if by_source[source] and len(chosen) < max_batches:
                chosen.append(by_source[source].pop(0))
    deferred = sum(len(b.names) for rest in by_source.values() for b in rest)
    numbered = []
    for b in chosen:
        mark = cursor.last.get(b.source)
        if b.held or (not b.orphan and any(not _above(n, mark) for n in b.names)):
            attempt = new.retries.get(b.source, 0) + 1
            new.retries[b.source] = attempt
            b = Batch(b.source, b.date, b.names, b.orphan, attempt, b.held)
            if b.held:
                for n in b.names:
                    new.held[f"{b.source}/{n}"] = new.held.get(f"{b.source}/{n}", 0) + 1
        numbered.append(b)
    if given_up:
        notes.append(
            f"{len(given_up)} segments stay in processing/ after {MAX_HELD_RETRIES} failed "
            f"runs (fix the cause, then re-execute the last run): {given_up[:5]}"
        )
    return Plan(numbered, new, notes, deferred)


def commit(plan: Plan, claimed: Mapping[tuple[str, str], bool]) -> Plan:
    """Drop segments whose claim failed (another process took them) and advance the cursor
    to the highest segment now owned per source. `claimed` maps (source, name) -> claim
    result for the new (non-orphan) batches; orphans are owned already."""
    batches: list[Batch] = []
    cursor = plan.cursor.copy()
    lost: list[str] = []
    for b in plan.batches:
        names = b.names if b.orphan else tuple(n for n in b.names if claimed.get((b.source, n)))
        lost.extend(n for n in b.names if n not in names)
        if not names:
            continue
        batches.append(Batch(b.source, b.date, names, b.orphan, b.attempt, b.held))
        if _above(names[-1], cursor.last.get(b.source)):
            cursor.last[b.source] = names[-1]
    notes = list(plan.notes)
    if lost:
        notes.append(f"{len(lost)} segments were claimed by another process first: {lost[:5]}")
    return Plan(batches, cursor, notes, plan.deferred)


def held_by_failed_runs(
    processing: Sequence[SegmentLike],
    cursor: Cursor,
    failed_ranges: Iterable[tuple[str, str, str]],
    active_ranges: Iterable[tuple[str, str, str]],
) -> list[SegmentLike]:
    """Processing segments (at or below the cursor) whose run failed for good: inside the
    (source, first, last) range of a failed run and of no queued/running run."""

    def inside(ref: SegmentLike, ranges: list[tuple[str, str, str]]) -> bool:
        key = parse_segment_name(ref.name)
        return any(
            s == ref.source and parse_segment_name(a) <= key <= parse_segment_name(z)
            for s, a, z in ranges
        )

    failed, active = list(failed_ranges), list(active_ranges)
    out = []
    for ref in processing:
        if _above(ref.name, cursor.last.get(ref.source)):
            continue
        if inside(ref, failed) and not inside(ref, active):
            out.append(ref)
    return out
