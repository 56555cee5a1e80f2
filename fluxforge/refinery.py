"""The refinery without Dagster: ready segments -> lake tables, with book state carried across.

Lifecycle of a raw segment on the ETL input storage::

    raw/ready/{src}/X  --claim (atomic rename | S3 copy+delete)-->  raw/processing/{src}/X
        --demux, books, validate, write parts-->  raw/archive/{src}/X   (kept for rebuilds)
    on failure: retried in the run with backoff, then back to raw/ready/ with a failure
    count; the source stops there (its later segments wait) until it succeeds. Only an
    operator's ``fluxforge writeoff`` moves a segment to raw/failed/{src}/X, next to
    X.writeoff.json (reason, who, when), and lets the source go on after it.

Per-source order is a hard invariant: a segment is refined only when no earlier segment of its
source is still in ready/, processing/ (claimed by another run, or orphaned by a kill -9) or
failed/ without a write-off. Such a source is *held*: ``ProcessReport.held`` and ``fluxforge
status`` say by what, ``fluxforge process`` exits non-zero, and ``fluxforge recover`` (which
takes the refinery locks, so it never steals a live run's claims) releases orphans.

State on the ETL output storage (``Layout.state``):

- ``state/books/{src}/date={D}/{segment}.json``: the book engines' state AFTER that segment,
  for every (exchange, symbol) seen so far on the source. A segment starts from the latest
  checkpoint of an earlier segment of its source, so one-at-a-time, batches and ``rebuild`` of
  a day (which starts from the checkpoint of the segment before the day's first) all give the
  same tables.
  Days older than ``refinery.checkpoint_keep_days`` keep only their last checkpoint.
- ``state/segments/{src}/{segment}.json``: the part files a segment wrote, so reprocessing
  replaces them (and removes parts it no longer produces) instead of duplicating rows.
- ``state/failures/{src}/{segment}.json``: failure count and last error.
"""

from __future__ import annotations

import base64
import bisect
import datetime
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from fluxforge import feed_stats, lake, schemas, versions
from fluxforge.config import Config
from fluxforge.demux import (
    ALL_SYMBOLS,
    CtlEvent,
    DemuxResult,
    FastBook,
    cast_prices,
    demux_segment,
    gc_paused,
    merge_columns,
    split_by_partition,
)
from fluxforge.heap import keep_freed_memory
from fluxforge.locks import LockHeld, exclusive, refinery_lock_path
from fluxforge.redact import redact_exc
from fluxforge.segments import SegmentId, parse_segment_name
from fluxforge.storage import Layout, Storage, open_storage, sanitize_part
from fluxforge.tables import REFINERY_TABLES

log = logging.getLogger(__name__)

# waits between the attempts of one segment inside a run (then it goes back to ready/)
RETRY_WAITS_S = (1.0, 4.0)
WRITEOFF_SUFFIX = ".writeoff.json"
STAT_FIELDS = (
    "book_updates",
    "checksums_verified",
    "checksum_mismatches",
    "chain_links_verified",
    "chain_breaks",
    "snapshots",
    "gaps",
    "dropped_presync",
)


@dataclass(frozen=True, order=True)
class SegmentRef:
    source: str
    name: str  # segment_YYYYMMDDTHH_NNNNN.ndjson

    @property
    def date(self) -> str:
        return parse_segment_name(self.name).date

    @property
    def hour(self) -> str:
        return parse_segment_name(self.name).hour

    @property
    def counter(self) -> int:
        return parse_segment_name(self.name).counter

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".ndjson")

    @property
    def order_key(self) -> tuple[str, str, int]:
        sid = parse_segment_name(self.name)
        return (self.source, sid.hour, sid.counter)

    def __str__(self) -> str:
        return f"{self.source}/{self.name}"


@dataclass
class ProcessReport:
    segments: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    held: list[dict[str, str]] = field(default_factory=list)  # Hold.to_dict() per held source
    stray: list[str] = field(default_factory=list)  # files in ready/ or processing/ never taken
    bytes_in: int = 0
    lines: int = 0
    data: int = 0
    control: int = 0
    quarantined: int = 0
    trades: int = 0
    quotes: int = 0
    normalizer_errors: int = 0
    books: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(lake.TABLES, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(lake.TABLES, 0))
    files: list[str] = field(default_factory=list)
    max_ts_recv: int = -1
    seconds: float = 0.0

    def merge(self, other: ProcessReport) -> None:
        self.segments += other.segments
        self.failed += other.failed
        self.deferred += other.deferred
        self.held += [h for h in other.held if h not in self.held]
        self.stray += [k for k in other.stray if k not in self.stray]
        for name in (
            "bytes_in", "lines", "data", "control", "quarantined", "trades", "quotes",
            "normalizer_errors",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, stats in other.books.items():
            mine = self.books.setdefault(key, dict.fromkeys(STAT_FIELDS, 0))
            for k, v in stats.items():
                mine[k] = mine.get(k, 0) + v
        for table in lake.TABLES:
            self.rows[table] += other.rows.get(table, 0)
            self.bytes[table] += other.bytes.get(table, 0)
        self.files += other.files
        self.max_ts_recv = max(self.max_ts_recv, other.max_ts_recv)
        self.seconds += other.seconds

    @property
    def held_sources(self) -> set[str]:
        return {h["source"] for h in self.held}

    @property
    def lag_s(self) -> float | None:
        if self.max_ts_recv < 0:
            return None
        return round(time.time() - self.max_ts_recv / 1e9, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "segments": list(self.segments),
            "segments_processed": len(self.segments),
            "failed": list(self.failed),
            "deferred": list(self.deferred),
            "held": list(self.held),
            "stray": list(self.stray),
            "bytes_in": self.bytes_in,
            "lines": self.lines,
            "data": self.data,
            "control": self.control,
            "quarantined": self.quarantined,
            "trades": self.trades,
            "quotes": self.quotes,
            "normalizer_errors": self.normalizer_errors,
            "books": [
                {"exchange": ex, "symbol": sym, **stats}
                for (ex, sym), stats in sorted(self.books.items())
            ],
            "rows": dict(self.rows),
            "bytes": dict(self.bytes),
            "files": list(self.files),
            "lag_s": self.lag_s,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.bytes_in / 1e6 / self.seconds, 2) if self.seconds else None,
        }


class _Ctx:
    """Storages and layouts of one run, opened once."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.inp: Storage = open_storage(cfg.storage.etl_input)
        self.out: Storage = open_storage(cfg.storage.etl_output)
        self.lin = Layout.of(cfg.storage.etl_input)
        self.lout = Layout.of(cfg.storage.etl_output)
        self.lake = lake.Lake(self.out, self.lout)

    def raw(self, state: str, ref: SegmentRef) -> str:
        return self.lin.segment(state, ref.source, ref.name)


# ---------------------------------------------------------------- segment discovery / claim


def list_segments(cfg: Config, state: str = "ready", source: str | None = None) -> list[SegmentRef]:
    """Segments in a raw state directory, in processing order (source, hour, counter). Files
    that are not segments (misnamed, or directly in the state directory) are not returned:
    ``stray_files`` reports them."""
    ctx = _Ctx(cfg)
    if source is not None:
        prefix = ctx.lin.raw_state_dir(state, source)
    else:
        prefix = ctx.lin.raw_sources(state)
    depth = prefix.count("/") + (1 if source is not None else 2)
    refs = []
    for key in ctx.inp.list(prefix, "segment_*.ndjson", recursive=source is None):
        parts = key.split("/")
        if key.count("/") != depth:
            continue  # a file directly in the state directory (no source folder) or deeper
        try:
            parse_segment_name(parts[-1])
        except ValueError:
            continue
        refs.append(SegmentRef(parts[-2], parts[-1]))
    return sorted(refs, key=lambda r: r.order_key)


def stray_files(cfg: Config, state: str = "ready") -> list[str]:
    """Keys in a raw state directory that no refinery will ever take: not named like a
    segment, or not in a source folder. Reported (status, process), never read."""
    ctx = _Ctx(cfg)
    prefix = ctx.lin.raw_sources(state)
    depth = prefix.count("/") + 2
    out = []
    for key in ctx.inp.list(prefix, "*", recursive=True):
        name = key.rsplit("/", 1)[-1]
        if state == "failed" and name.endswith((WRITEOFF_SUFFIX, ".reason.txt")):
            continue
        try:
            parse_segment_name(name)
            ok = key.count("/") == depth and name.endswith(".ndjson")
        except ValueError:
            ok = False
        if not ok:
            out.append(key)
    return out


@dataclass(frozen=True)
class Hold:
    """Why a source's later segments wait: the earliest unsettled segment before them."""

    source: str
    segment: str
    state: str  # processing | failed | ready
    reason: str

    @property
    def order_key(self) -> tuple[str, str, int]:
        return SegmentRef(self.source, self.segment).order_key

    def line(self) -> str:
        return f"{self.source}: held at {self.segment} ({self.state}/): {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "segment": self.segment,
            "state": self.state,
            "reason": self.reason,
        }


def written_off(cfg: Config, source: str | None = None) -> set[SegmentRef]:
    """Segments an operator wrote off (``fluxforge writeoff``): their source goes on."""
    ctx = _Ctx(cfg)
    prefix = ctx.lin.raw_state_dir("failed", source) if source else ctx.lin.raw_sources("failed")
    out = set()
    for key in ctx.inp.list(prefix, f"*{WRITEOFF_SUFFIX}", recursive=source is None):
        parts = key.split("/")
        out.add(SegmentRef(parts[-2], parts[-1].removesuffix(WRITEOFF_SUFFIX)))
    return out


def holds(cfg: Config, ignore: Iterable[SegmentRef] = ()) -> dict[str, Hold]:
    """source -> the earliest segment in processing/ or failed/ (not written off) that holds
    back the source's later segments. `ignore`: claims of the caller itself."""
    skip = set(ignore) | written_off(cfg)
    found: dict[str, tuple[tuple[str, str, int], Hold]] = {}
    reasons = {
        "processing": "claimed by a run that is still going, queued, or was killed; if no "
        "refinery run is active, `fluxforge recover` releases it",
        "failed": "given up and not written off: `fluxforge writeoff SOURCE/SEGMENT --reason "
        "...` to go on without it, or move it back to ready/ to retry",
    }
    for state in ("processing", "failed"):
        for ref in list_segments(cfg, state):
            if ref in skip:
                continue
            best = found.get(ref.source)
            if best is None or ref.order_key < best[0]:
                hold = Hold(ref.source, ref.name, state, reasons[state])
                found[ref.source] = (ref.order_key, hold)
    return {src: hold for src, (_, hold) in found.items()}


def claim(cfg: Config, ref: SegmentRef) -> bool:
    """ready -> processing. False when the segment is gone (claimed by someone else)."""
    ctx = _Ctx(cfg)
    return ctx.inp.move(ctx.raw("ready", ref), ctx.raw("processing", ref))


def release_processing(cfg: Config) -> list[SegmentRef]:
    """Move every segment left in processing/ by a killed run back to ready/: ``fluxforge
    recover``. Safe at any time: it takes the refinery lock of the store (no ``process`` run
    beside it) and each source's lock, and leaves the claims of a source whose lock a live run
    holds (a Dagster run) alone."""
    ctx = _Ctx(cfg)
    moved = []
    with exclusive(refinery_lock_path(ctx.inp), "refinery", "fluxforge recover"):
        for ref in list_segments(cfg, "processing"):
            try:
                with exclusive(
                    refinery_lock_path(ctx.inp, ref.source), "refinery", "fluxforge recover"
                ):
                    if ctx.inp.move(ctx.raw("processing", ref), ctx.raw("ready", ref)):
                        log.warning("segment %s: released from processing/ back to ready/", ref)
                        moved.append(ref)
            except LockHeld as exc:
                log.warning("segment %s: left in processing/, its run is live: %s", ref, exc)
    return moved


def writeoff(cfg: Config, ref: SegmentRef, reason: str) -> dict[str, Any]:
    """An operator gives a segment up: it moves to failed/ (from ready/, processing/ or
    failed/) with ``X.writeoff.json`` (reason, who, when), its lake parts are removed, and an
    empty book checkpoint is written for it, so the next segment's books start afresh (the
    book epochs end there: the next exchange snapshot starts new ones) instead of from the
    state before the gap. Its source then goes on after it."""
    import getpass
    import socket

    if not reason.strip():
        raise ValueError("a write-off needs a reason (--reason)")
    ctx = _Ctx(cfg)
    store_lock = exclusive(refinery_lock_path(ctx.inp), "refinery", "fluxforge writeoff")
    source_lock = exclusive(
        refinery_lock_path(ctx.inp, ref.source), "refinery", "fluxforge writeoff"
    )
    with store_lock, source_lock:
        where = next(
            (st for st in ("failed", "processing", "ready") if ctx.inp.exists(ctx.raw(st, ref))),
            None,
        )
        if where is None:
            raise FileNotFoundError(
                f"{ref}: not in ready/, processing/ or failed/ (archived or unknown): "
                "nothing to write off"
            )
        if where != "failed" and not ctx.inp.move(ctx.raw(where, ref), ctx.raw("failed", ref)):
            raise FileNotFoundError(f"{ref}: vanished from {where}/ while writing it off")
        _withdraw(ctx, ref, "failed")
        gaps = _record_writeoff_gaps(ctx, ref, reason)
        save_book_state(ctx.out, ctx.lout, ref, {})
        record = {
            "segment": str(ref),
            "reason": reason,
            "was_in": where,
            "gap_rows": gaps,
            "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "at": time.time(),
        }
        ctx.inp.write_bytes(ctx.raw("failed", ref) + WRITEOFF_SUFFIX, orjson.dumps(record))
        ctx.out.write_bytes(
            ctx.lout.state("writeoffs", ref.source, f"{ref.stem}.json"), orjson.dumps(record)
        )
    log.warning("segment %s written off (%s): %s", ref, where, reason)
    return record


def process_ready(
    cfg: Config, progress: Callable[[str], None] | None = None, recover: bool = False
) -> ProcessReport:
    """Claim the ready segments every source may refine now, in order, and process them (with
    `recover`, first release segments a killed run left in processing/). A source held by an
    earlier unsettled segment is not touched: ``report.held`` says why."""
    ctx = _Ctx(cfg)
    with exclusive(refinery_lock_path(ctx.inp), "refinery", "fluxforge process"):
        if recover:
            release_processing(cfg)
        held = holds(cfg)
        claimed: list[SegmentRef] = []
        for ref in list_segments(cfg, "ready"):
            hold = held.get(ref.source)
            if hold is not None and ref.order_key > hold.order_key:
                continue
            if claim(cfg, ref):
                claimed.append(ref)
            else:
                # another worker took it: the later segments of the source wait for its run
                held[ref.source] = Hold(
                    ref.source, ref.name, "processing", "claimed by another run just now"
                )
        report = process_claimed(cfg, claimed, progress=progress)
        for hold in held.values():
            if hold.source not in report.held_sources:
                report.held.append(hold.to_dict())
        report.stray = stray_files(cfg, "ready") + stray_files(cfg, "processing")
    return report


def process_claimed(
    cfg: Config,
    refs: Iterable[SegmentRef],
    progress: Callable[[str], None] | None = None,
) -> ProcessReport:
    """Process claimed segments (in processing/) in order, then archive them.

    Per source, under the source's refinery lock (a source another process is refining is
    left to it: the claims go back to ready/). A segment is refined only when no earlier
    segment of its source is unsettled elsewhere (ready/, processing/ outside this batch,
    failed/ without a write-off); otherwise it and the later ones go back to ready/ and the
    source is reported held. A failing segment is retried with backoff (``RETRY_WAITS_S``),
    then goes back to ready/ with its count; the later ones of the source go back too."""
    ctx = _Ctx(cfg)
    report = ProcessReport()
    batch = sorted(set(refs), key=lambda r: r.order_key)
    by_source: dict[str, list[SegmentRef]] = defaultdict(list)
    for ref in batch:
        by_source[ref.source].append(ref)
    if not by_source:
        return report
    blocking = holds(cfg, ignore=batch)
    for source in sorted(by_source):
        group = by_source[source]
        try:
            with exclusive(
                refinery_lock_path(ctx.inp, source), "refinery", f"refinery of {source}"
            ):
                _process_group(ctx, cfg, group, blocking.get(source), report, progress)
        except LockHeld as exc:
            _defer(ctx, group, report)
            report.held.append(Hold(source, group[0].name, "processing", str(exc)).to_dict())
    if report.segments or report.failed:
        try:
            record_run(ctx.out, ctx.lout, report, kind="process")
        except OSError as exc:  # bookkeeping only (full output disk): the segments are settled
            log.error("could not record the run under state/runs/: %s", exc)
    return report


def _defer(ctx: _Ctx, refs: Iterable[SegmentRef], report: ProcessReport) -> None:
    for ref in refs:
        if ctx.inp.move(ctx.raw("processing", ref), ctx.raw("ready", ref)):
            report.deferred.append(str(ref))


def _process_group(
    ctx: _Ctx,
    cfg: Config,
    group: list[SegmentRef],
    hold: Hold | None,
    report: ProcessReport,
    progress: Callable[[str], None] | None,
) -> None:
    source = group[0].source
    earlier_ready = [
        r for r in list_segments(cfg, "ready", source) if r.order_key < group[0].order_key
    ]
    if earlier_ready and (hold is None or earlier_ready[0].order_key < hold.order_key):
        hold = Hold(
            source,
            earlier_ready[0].name,
            "ready",
            "an earlier segment is waiting in ready/ (released or retried): the next run takes "
            "it first",
        )
    for i, ref in enumerate(group):
        if hold is not None and ref.order_key > hold.order_key:
            log.error("%s and %d later segment(s): %s", ref, len(group) - i - 1, hold.line())
            _defer(ctx, group[i:], report)
            report.held.append(hold.to_dict())
            return
        if not ctx.inp.exists(ctx.raw("processing", ref)):
            log.warning("%s: no longer in processing/ (released by recover?): skipped", ref)
            _defer(ctx, group[i + 1 :], report)
            return
        try:
            seg = _with_retries(ctx, ref)
            if not ctx.inp.move(ctx.raw("processing", ref), ctx.raw("archive", ref)):
                raise FileNotFoundError(f"{ref}: vanished from processing/ before archiving")
            ctx.out.delete(ctx.lout.state("failures", ref.source, f"{ref.stem}.json"))
        except Exception as exc:
            log.exception("segment %s failed", ref)
            failure = _handle_failure(ctx, ref, exc)
            report.failed.append(failure)
            _defer(ctx, group[i + 1 :], report)
            report.held.append(
                Hold(
                    source,
                    ref.name,
                    "ready",
                    f"failed {failure['failures']} time(s), retried next run: {failure['error']}",
                ).to_dict()
            )
            return
        report.merge(seg)
        if progress:
            progress(_progress_line(ref, seg))


def _with_retries(ctx: _Ctx, ref: SegmentRef) -> ProcessReport:
    """``_process_one`` retried with backoff: a transient error (disk full for a moment, a
    storage hiccup) does not stop the source; each attempt starts from the same checkpoint
    and replaces the parts of the one before."""
    for attempt, wait in enumerate((*RETRY_WAITS_S, None), start=1):
        try:
            return _process_one(ctx, ref, "processing")
        except Exception as exc:
            if wait is None:
                raise
            log.warning(
                "segment %s: attempt %d failed (%s); retrying in %.1f s",
                ref,
                attempt,
                redact_exc(exc),
                wait,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def record_run(storage: Storage, layout: Layout, report: ProcessReport, kind: str) -> str:
    """Append one run record under ``state/runs/`` (read by ``fluxforge status``)."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:]
    key = layout.state("runs", f"{stamp}-{kind}.json")
    body = {
        "kind": kind,
        "finished_at": now,
        "segments": report.segments,
        "failed": report.failed,
        "lines": report.lines,
        "quarantined": report.quarantined,
        "max_ts_recv": report.max_ts_recv,
        "lag_s": report.lag_s,
        "seconds": round(report.seconds, 3),
    }
    storage.write_bytes(key, orjson.dumps(body))
    return key


def rebuild(
    cfg: Config,
    source: str | None,
    date: str,
    progress: Callable[[str], None] | None = None,
) -> ProcessReport:
    """Re-derive `date` from its archived raw segments (after a parser fix, or for stale
    partitions) and replace the day's rows in ONE commit per table.

    A day's partitions hold every source of a venue (and compaction merges them), so the
    rebuild re-derives every source with archived segments on `date`; `source` only checks
    that the source has segments there. Each source starts from its book checkpoint before the
    day, so the rows equal those of the original processing with today's code. Rows written by
    ``history`` are kept."""
    from fluxforge.tiering import restore

    ctx = _Ctx(cfg)
    sources = sorted(
        {r.source for r in list_segments(cfg, "archive")} | set(filter(None, [source]))
    )
    refs: list[SegmentRef] = []
    for src in sources:
        # segments already tiered to warm/cold come back into the hot archive first
        restore(cfg, src, date)
        refs += [r for r in list_segments(cfg, "archive", src) if r.date == date]
    if source is not None and not any(r.source == source for r in refs):
        raise FileNotFoundError(
            f"rebuild {source} {date}: no archived segment of that source on that date "
            "(see `fluxforge status`)"
        )
    report = ProcessReport()
    staged: dict[str, list[lake.Staged]] = defaultdict(list)
    for ref in sorted(refs, key=lambda r: r.order_key):
        seg = _process_one(ctx, ref, "archive", rebuild_into=staged)
        report.merge(seg)
        if progress:
            progress(_progress_line(ref, seg))
    exchanges = {f.exchange for files in staged.values() for f in files}
    meta = {
        **versions.commit_metadata(exchanges),
        "fluxforge.operation": "rebuild",
        "fluxforge.date": date,
        "fluxforge.sources": ",".join(sorted({r.source for r in refs})),
    }
    for table in REFINERY_TABLES:
        old = [
            f
            for f in ctx.lake.files(table, date=date)
            if not f.name.startswith(lake.HISTORY_PREFIX)
        ]
        new = staged.get(table, [])
        same = {f.key for f in old} & {f.key for f in new}  # unchanged files stay as they are
        old = [f for f in old if f.key not in same]
        new = [f for f in new if f.key not in same]
        if old or new:
            ctx.lake.commit(table, new, remove=old, metadata=meta)
    return report


def _progress_line(ref: SegmentRef, seg: ProcessReport) -> str:
    return (
        f"{ref}: {seg.lines} lines, {seg.trades} trades, {seg.quotes} quotes, "
        f"{seg.rows['book_deltas']} book deltas, {seg.quarantined} quarantined, "
        f"{seg.bytes_in / 1e6:.1f} MB in {seg.seconds:.2f}s"
    )


def _handle_failure(ctx: _Ctx, ref: SegmentRef, exc: Exception) -> dict[str, Any]:
    """Count the failure and put the segment back in ready/: never to failed/ by itself (a
    transient error must not become a permanent hole; ``fluxforge writeoff`` is the operator's
    way to give a segment up)."""
    key = ctx.lout.state("failures", ref.source, f"{ref.stem}.json")
    count = 0
    if ctx.out.exists(key):
        try:
            count = int(orjson.loads(ctx.out.read_bytes(key)).get("failures", 0))
        except (orjson.JSONDecodeError, ValueError, AttributeError):
            count = 0
    count += 1
    error = redact_exc(exc)
    try:
        ctx.out.write_bytes(
            key, orjson.dumps({"segment": str(ref), "failures": count, "error": error})
        )
    except OSError as write_exc:
        # the output storage may be what failed (full disk): still put the segment back
        log.error("segment %s: could not record the failure: %s", ref, write_exc)
    if isinstance(exc, AlreadyPublished):
        return _refuse_copy(ctx, ref, error, count)
    moved = ctx.inp.move(ctx.raw("processing", ref), ctx.raw("ready", ref))
    if not moved:
        log.error("segment %s: could not move back from processing/ (gone?)", ref)
    return {"segment": str(ref), "error": error, "failures": count, "moved_to": "ready"}


# ---------------------------------------------------------------- one segment


def _process_one(
    ctx: _Ctx,
    ref: SegmentRef,
    raw_state: str,
    rebuild_into: dict[str, list[lake.Staged]] | None = None,
) -> ProcessReport:
    if ctx.cfg.refinery.keep_freed_memory:
        keep_freed_memory()
    with gc_paused():
        return _process_segment(ctx, ref, raw_state, rebuild_into)


def _process_segment(
    ctx: _Ctx,
    ref: SegmentRef,
    raw_state: str,
    rebuild_into: dict[str, list[lake.Staged]] | None = None,
) -> ProcessReport:
    """Refine one segment and publish it: one commit per lake table carrying the app
    transaction (source, last seq), or with `rebuild_into`, stage its files there for the
    caller's replacing commit."""
    t0 = time.perf_counter()
    cfg = ctx.cfg
    # mapped, not copied, on local storage: the demux only reads it
    data = ctx.inp.read_mapped(ctx.raw(raw_state, ref))
    seq_range = segment_seq_range(data)
    dem = demux_segment(data, ref.name)
    del data  # peak memory: the raw bytes are not needed past the demux
    checkpoint = find_book_checkpoint(ctx.out, ctx.lout, ref)
    states = read_book_state(ctx.out, checkpoint)
    max_ts = _max_ts(dem)
    book_parts, new_states, book_stats = _run_books(cfg, ref, dem, states)
    dem.book_messages, dem.book_lines, dem.fast_books, dem.tops = [], [], {}, []

    parts: dict[tuple[str, str, str, str], list[pa.Table]] = defaultdict(list)

    def add(table: str, split: dict[tuple[str, str, str], pa.Table]) -> None:
        for (ex, sym, date), part in split.items():
            parts[(table, sanitize_part(ex), sanitize_part(sym), date)].append(part)

    add("trades", split_by_partition(cast_prices(dem.trades, "trades")))
    add("quotes", split_by_partition(cast_prices(dem.quotes, "quotes")))
    for table, splits in book_parts.items():
        for split in splits:
            add(table, split)
    quarantine = dem.quarantine
    for ex in sorted(set(quarantine.column("exchange").to_pylist())):
        mask = pc.equal(quarantine.column("exchange"), ex)
        rows = quarantine.filter(mask).drop_columns(["exchange"])
        parts[("quarantine", sanitize_part(ex), ALL_SYMBOLS, dem.date)].append(rows)
    for (ex, sym, date), rows in feed_stats.segment_parts(parts, dem.ctl, str(ref)).items():
        parts[("feed_stats", ex, sym, date)].append(rows)

    # validate everything before the first commit: a segment that fails a blocking check
    # publishes nothing (docs/data-guide.md, "Publication")
    report = ProcessReport(segments=[str(ref)])
    merged_parts: dict[str, list[tuple[pa.Table, str, str, str]]] = defaultdict(list)
    for (table, ex, sym, date), tables in sorted(parts.items()):
        merged = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        if merged.num_rows:
            merged_parts[table].append((merged, ex, sym, date))
    for table, items in merged_parts.items():
        schemas.validate_parts(table, items)
    _check_line_accounting(ref, dem)
    _check_no_duplicated_trades(ref, merged_parts.get("trades", []))
    staged: dict[str, list[lake.Staged]] = defaultdict(list)
    published = _published(ctx, ref, seq_range) if rebuild_into is None else {}
    # the parts' fsyncs overlap each other and the encoding of the next parts; the block ends
    # when all of them are on disk, before the checkpoint and the commits that reference them
    with ctx.out.durable_batch():
        for table, items in sorted(merged_parts.items()):
            for merged, ex, sym, date in items:
                report.rows[table] += merged.num_rows
                # a table an earlier attempt committed: the same name, nothing written again
                one = _stage_part(
                    ctx, ref, table, merged, ex, sym, date, write=table not in published
                )
                staged[table].append(one)
                report.bytes[table] += one.size
    # the checkpoint first: a retry after a crash below recomputes the same state from the
    # previous checkpoint, so writing it early costs nothing and a failed write publishes nothing
    save_book_state(ctx.out, ctx.lout, ref, new_states)
    if rebuild_into is not None:
        for table, files in staged.items():
            rebuild_into[table].extend(files)
    else:
        _publish(ctx, ref, staged, seq_range, published)
    _write_manifest(ctx, ref, staged, _coverage_rows(merged_parts), seq_range)
    day = parse_segment_name(ref.name).date
    if checkpoint is None or not checkpoint.startswith(_day_prefix(ctx.lout, ref.source, day)):
        # the source's first segment of a day: older days keep only what a rebuild needs
        keep = datetime.timedelta(days=cfg.refinery.checkpoint_keep_days)
        before = datetime.date.fromisoformat(day) - keep
        pruned = prune_book_checkpoints(ctx.out, ctx.lout, ref.source, before)
        if pruned:
            log.info("%s: pruned %d book checkpoints before %s", ref, pruned, before)

    report.files = sorted(f.key for files in staged.values() for f in files)
    report.bytes_in = dem.bytes_in
    report.lines = dem.lines_in
    report.data = dem.data
    report.control = dem.control
    report.quarantined = dem.quarantined
    report.trades = dem.trades.num_rows
    report.quotes = dem.quotes.num_rows
    report.normalizer_errors = dem.normalizer_errors
    report.books = book_stats
    report.max_ts_recv = max_ts
    report.seconds = time.perf_counter() - t0
    return report


def _stage_part(
    ctx: _Ctx,
    ref: SegmentRef,
    table: str,
    merged: pa.Table,
    ex: str,
    sym: str,
    date: str,
    write: bool = True,
) -> lake.Staged:
    # book_deltas row groups break at snapshot windows so book_at prunes to one window
    window = int(ctx.cfg.refinery.snapshot_interval_s * 1e9) if table == "book_deltas" else None
    return ctx.lake.stage(
        table,
        merged,
        ex,
        sym,
        date,
        _part_stem(ref),
        ctx.cfg.refinery.row_group_size,
        window,
        write=write,
    )


def _part_stem(ref: SegmentRef) -> str:
    # the source is part of the name: two sources can seal segments with the same name
    return f"{ref.source}-{ref.stem}"


def _max_ts(dem: DemuxResult) -> int:
    best = -1
    for table in (dem.trades, dem.quotes):
        if table.num_rows:
            best = max(best, pc.max(table.column("ts_recv")).as_py())
    if dem.book_messages:
        best = max(best, max(m.ts_recv for m in dem.book_messages))
    for fast in dem.fast_books.values():
        best = max(best, int(fast.ts_recv.max()))
    return best


def _manifest_key(ctx: _Ctx, ref: SegmentRef) -> str:
    return ctx.lout.state("segments", ref.source, f"{ref.stem}.json")


def _coverage_rows(parts: dict[str, list[tuple[pa.Table, str, str, str]]]) -> list[list[Any]]:
    """The segment's share of the ``coverage`` view: [date, exchange, symbol, channel, hour
    (epoch s), rows, first ts_recv, last ts_recv, gaps], the rules of ``quality.coverage`` (gap
    rows count against the ``book`` channel of their hour, where it has rows). Kept in the
    manifest so a partition's coverage sums small summaries instead of re-reading every part
    of the day on each run (``quality.partition_coverage``); per part in numpy, because a
    row-level table of exchange/symbol strings costs ~2 bytes of peak memory per input byte."""
    from fluxforge.quality import COVERAGE_CHANNELS, HOUR_NS
    from fluxforge.tables import at_lake_precision

    rows: dict[tuple[str, str, str, str, int], list[int]] = {}
    for table, channel in COVERAGE_CHANNELS.items():
        for t, ex, sym, date in parts.get(table, []):
            ts = t["ts_recv"].to_numpy()
            lo, hi = int(ts.min()), int(ts.max())
            if lo // HOUR_NS == hi // HOUR_NS:  # the usual part: one hour, told by its extremes
                # at the lake's precision, like quality.coverage of the rows read back
                span = [len(ts), at_lake_precision(lo), at_lake_precision(hi), 0]
                rows[(date, ex, sym, channel, lo // HOUR_NS)] = span
                continue
            hours = ts // HOUR_NS
            order = np.argsort(hours, kind="stable")
            hours, ts = hours[order], ts[order]
            starts = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1]])
            counts = np.diff(np.r_[starts, len(hours)])
            first = at_lake_precision(np.minimum.reduceat(ts, starts))
            last = at_lake_precision(np.maximum.reduceat(ts, starts))
            for h, n, lo, hi in zip(
                hours[starts].tolist(), counts.tolist(), first.tolist(), last.tolist(), strict=True
            ):
                rows[(date, ex, sym, channel, h)] = [n, lo, hi, 0]
    for t, ex, sym, date in parts.get("gap_ledger", []):
        hours, counts = np.unique(t["ts_to"].to_numpy() // HOUR_NS, return_counts=True)
        for h, n in zip(hours.tolist(), counts.tolist(), strict=True):
            row = rows.get((date, ex, sym, "book", h))
            if row is not None:
                row[3] += n
    return [[d, ex, sym, ch, h * 3600, *v] for (d, ex, sym, ch, h), v in sorted(rows.items())]


def app_id(source: str) -> str:
    """The Delta app transaction id of a source's segments (its version: the last seq)."""
    return f"fluxforge/{source}"


class AlreadyPublished(RuntimeError):
    """The segment's content (its seq range) is already in the lake: a retry of a published
    segment is fine, but a second file with published seqs is refused (exactly-once by
    content, whatever the file name)."""


def segment_bounds(data: bytes) -> tuple[Any, Any] | None:
    """The first and last readable envelopes of a segment; None when it has none."""
    from fluxforge.segments import iter_lines, parse_envelope

    def first(lines: Iterable[tuple[int, bytes]]) -> Any:
        for _, line in lines:
            try:
                return parse_envelope(line)
            except (ValueError, TypeError):
                continue
        return None

    head = first(iter_lines(data))
    if head is None:
        return None
    tail = data[-(1 << 16) :] if len(data) > (1 << 16) else data
    lines = list(iter_lines(tail))
    if len(data) > len(tail):
        lines = lines[1:]  # the first line of the tail is cut
    last = first(reversed(lines))
    return head, last if last is not None and last.seq >= head.seq else head


def segment_seq_range(data: bytes) -> tuple[int, int] | None:
    """(first, last) daemon seq of a segment's readable envelopes; None when it has none."""
    bounds = segment_bounds(data)
    return None if bounds is None else (int(bounds[0].seq), int(bounds[1].seq))


def _record_writeoff_gaps(ctx: _Ctx, ref: SegmentRef, reason: str) -> int:
    """One gap_ledger row per book the source had before the written-off segment (cause
    ``writeoff``, spanning the segment's receive times): the book epochs end there, and a
    reader asking for a book inside that span is told why it has none."""
    bounds = segment_bounds(ctx.inp.read_bytes(ctx.raw("failed", ref)))
    books = read_book_state(ctx.out, find_book_checkpoint(ctx.out, ctx.lout, ref))
    if bounds is None or not books:
        return 0
    head, last = bounds
    day = parse_segment_name(ref.name).date
    rows = 0
    for ex, sym in sorted(books):
        gap = pa.table(
            {
                "channel": ["book"],
                "ts_from": pa.array([head.ts], pa.int64()),
                "ts_to": pa.array([last.ts], pa.int64()),
                "cause": ["writeoff"],
                "book_epoch": pa.array([-1], pa.int32()),
                "detail": [f"segment written off: {reason}"],
                "segment": [ref.name],
            }
        )
        lake.publish(
            ctx.out, ctx.lout, "gap_ledger", [(gap, ex, sym, day)], f"writeoff-{_part_stem(ref)}"
        )
        rows += 1
    return rows


def _published(ctx: _Ctx, ref: SegmentRef, seq_range: tuple[int, int] | None) -> dict[str, int]:
    """Tables that already hold this segment (a re-run of a published segment, or a retry
    after a crash mid-publication); raises AlreadyPublished when the lake holds some of its
    seqs under another segment (a copy with another name, or reused seq numbers)."""
    if seq_range is None:
        return {}
    lo, hi = seq_range
    done: dict[str, int] = {}
    mine: bool | None = None
    for table in REFINERY_TABLES:
        version = ctx.lake.transaction_version(table, app_id(ref.source))
        if version is None or version < lo:
            continue
        if mine is None:
            mine = _published_as(ctx, ref, table, seq_range)
        if not mine:
            raise AlreadyPublished(
                f"{ref}: seqs {lo}..{hi} overlap what the lake already published for source "
                f"{ref.source} (up to seq {version} in {table}) under another segment: a copy of "
                "a published segment or a daemon that reused seq numbers; not published again"
            )
        done[table] = version
    return done


def _published_as(ctx: _Ctx, ref: SegmentRef, table: str, seq_range: tuple[int, int]) -> bool:
    """Whether THIS segment published `seq_range`: its manifest says so, or (a crash before
    the manifest was written) the table's newest commit carrying that seq range names it."""
    key = _manifest_key(ctx, ref)
    if ctx.out.exists(key):
        manifest = orjson.loads(ctx.out.read_bytes(key))
        if manifest.get("seq") == list(seq_range):
            return True
    wanted = f"{seq_range[0]}-{seq_range[1]}"
    handle = ctx.lake.table(table)
    for commit in handle.history(limit=200) if handle is not None else []:
        if commit.get("fluxforge.seq") == wanted:
            return commit.get("fluxforge.segment") == str(ref)
    return False


def _publish(
    ctx: _Ctx,
    ref: SegmentRef,
    staged: dict[str, list[lake.Staged]],
    seq_range: tuple[int, int] | None,
    published: dict[str, int],
) -> None:
    """One commit per refinery table, each carrying (source, last seq): a table gets the
    segment's files in one commit or not at all, and a retry skips what an earlier attempt
    committed. Every table gets the commit, with or without rows, so each one knows which
    segments it holds."""
    if seq_range is None:
        return
    exchanges = {f.exchange for files in staged.values() for f in files}
    meta = {
        **versions.commit_metadata(exchanges),
        "fluxforge.segment": str(ref),
        "fluxforge.seq": f"{seq_range[0]}-{seq_range[1]}",
    }
    for table in REFINERY_TABLES:
        if table in published:
            continue
        ctx.lake.commit(
            table, staged.get(table, []), app=(app_id(ref.source), seq_range[1]), metadata=meta
        )


def _withdraw(ctx: _Ctx, ref: SegmentRef, raw_state: str) -> None:
    """Remove a written-off segment's rows from every table that committed them (one commit
    per table) and move its source's app transaction back before its first seq, so that if the
    segment is ever put back in ready/, it is published again."""
    rng = segment_seq_range(ctx.inp.read_bytes(ctx.raw(raw_state, ref)))
    prefix = f"part-{sanitize_part(_part_stem(ref))}-v"
    for table in REFINERY_TABLES:
        version = ctx.lake.transaction_version(table, app_id(ref.source))
        mine = [f for f in ctx.lake.files(table) if f.name.startswith(prefix)]
        holds = rng is not None and version is not None and version >= rng[0]
        if mine or holds:
            app = (app_id(ref.source), rng[0] - 1) if holds and rng is not None else None
            ctx.lake.commit(
                table,
                [],
                remove=mine,
                app=app,
                rewind=True,
                metadata={"fluxforge.operation": "withdraw", "fluxforge.segment": str(ref)},
            )


def _refuse_copy(ctx: _Ctx, ref: SegmentRef, error: str, count: int) -> dict[str, Any]:
    """A segment whose seqs the lake already holds under another segment is held in failed/
    at once, with the reason: retrying cannot help, and nothing of it is lost (its content is
    published). A refusal record (like a write-off's, without removing any rows or resetting
    the books) keeps it from holding back its source."""
    ctx.inp.write_bytes(ctx.raw("failed", ref) + ".reason.txt", f"{error}\n".encode())
    moved = ctx.inp.move(ctx.raw("processing", ref), ctx.raw("failed", ref))
    record = {"segment": str(ref), "reason": error, "refused": True, "at": time.time()}
    ctx.inp.write_bytes(ctx.raw("failed", ref) + WRITEOFF_SUFFIX, orjson.dumps(record))
    if not moved:
        log.error("segment %s: could not move to failed/ (gone?)", ref)
    log.error("segment %s refused: %s", ref, error)
    return {"segment": str(ref), "error": error, "failures": count, "moved_to": "failed"}


def _check_line_accounting(ref: SegmentRef, dem: DemuxResult) -> None:
    """Lines in = data + control + quarantined: a line counted nowhere is a defect of ours and
    blocks publication."""
    if dem.lines_in != dem.data + dem.control + dem.quarantined:
        raise schemas.SchemaViolation(
            f"{ref}: line accounting: {dem.lines_in} lines in != {dem.data} data + "
            f"{dem.control} control + {dem.quarantined} quarantined"
        )


def _check_no_duplicated_trades(
    ref: SegmentRef, items: list[tuple[pa.Table, str, str, str]]
) -> None:
    """One raw line never yields the same trade twice: a repeated (seq, trade_id) is a row we
    duplicated, and blocks publication. (The same trade id on two lines is the venue's repeat:
    published, and flagged by the trade_ids_unique asset check.)"""
    for data, ex, sym, date in items:
        if data.num_rows < 2:
            continue
        # a pair can only repeat where a seq does (a line with several trades): the rows of
        # those seqs, found over every row, are the only ones grouped (usually none or few)
        seq = data.column("seq").to_numpy()
        ordered = seq if bool(np.all(seq[1:] >= seq[:-1])) else np.sort(seq)
        again = ordered[1:][ordered[1:] == ordered[:-1]]
        if not len(again):
            continue
        ids = data.select(["seq", "trade_id"]).filter(np.isin(seq, again))
        ids = ids.filter(pc.and_(pc.is_valid(ids["trade_id"]), pc.not_equal(ids["trade_id"], "")))
        if ids.num_rows < 2:
            continue  # venues without trade ids (some Kraken shapes) cannot be checked here
        counts = ids.group_by(["seq", "trade_id"]).aggregate([([], "count_all")])
        dupes = counts.filter(pc.greater(counts["count_all"], 1))
        if dupes.num_rows:
            first = dupes.slice(0, 1).to_pylist()[0]
            raise schemas.SchemaViolation(
                f"{ref}: trades {ex}/{sym}/{date}: {dupes.num_rows} (seq, trade_id) pairs written "
                f"more than once, e.g. seq {first['seq']} trade {first['trade_id']!r}"
            )


def _write_manifest(
    ctx: _Ctx,
    ref: SegmentRef,
    staged: dict[str, list[lake.Staged]],
    coverage: list[list[Any]],
    seq_range: tuple[int, int] | None,
) -> None:
    """The segment's coverage summary (read by quality.partition_coverage), the files it
    published and its seq range (what tells a re-run of it from a copy under another name)."""
    files = sorted(f.key for items in staged.values() for f in items)
    done = {
        "segment": str(ref),
        "state": "done",
        "files": files,
        "coverage": coverage,
        "seq": list(seq_range) if seq_range else None,
    }
    ctx.out.write_bytes(_manifest_key(ctx, ref), orjson.dumps(done))


# ---------------------------------------------------------------- books


def _run_books(
    cfg: Config, ref: SegmentRef, dem: DemuxResult, states: dict[tuple[str, str], bytes]
) -> tuple[
    dict[str, list[dict[tuple[str, str, str], pa.Table]]],
    dict[tuple[str, str], bytes],
    dict[tuple[str, str], dict[str, int]],
]:
    """Feed each (exchange, symbol) its messages in receive order, with the venue's reconnects
    (ctl connect/disconnect/gap) at their place in the stream. Each instrument's columns leave
    `dem.fast_books` once fed: the next instrument's run does not hold them (peak memory)."""
    from fluxforge.book import BookEngine

    by_inst = dem.books_by_instrument()
    ctl: dict[str, list[CtlEvent]] = defaultdict(list)
    for ev in dem.ctl:
        ctl[ev.exchange].append(ev)
    instruments = set(by_inst) | set(dem.fast_books) | {key for key in states if key[0] in ctl}
    out: dict[str, list[dict[tuple[str, str, str], pa.Table]]] = defaultdict(list)
    new_states = dict(states)
    stats_out: dict[tuple[str, str], dict[str, int]] = {}
    interval_ns = int(cfg.refinery.snapshot_interval_s * 1_000_000_000)
    for ex, sym in sorted(instruments):
        engine = BookEngine(
            ex,
            sym,
            depth=cfg.refinery.snapshot_depth,
            snapshot_interval_ns=interval_ns,
            segment=ref.name,
            state=states.get((ex, sym)),
            presync_buffer=cfg.refinery.presync_buffer,
            presync_window_ns=int(cfg.refinery.presync_window_s * 1_000_000_000),
            record_tops=False,  # (never read here; and the columns are spent as applied)
        )
        fast = dem.fast_books.pop((ex, sym), None)
        fed = (ex, sym) in by_inst or fast is not None or (ex, sym) in states
        alive, stats = _feed(
            engine,
            (ex, sym),
            ref.name,
            by_inst.pop((ex, sym), []),
            fast,
            ctl.get(ex, []),
            (ex, sym) in states,
            out,
        )
        del fast
        if alive:
            new_states[(ex, sym)] = engine.state()
        if fed:
            stats_out[(ex, sym)] = stats
    return out, new_states, stats_out


def _feed(
    engine: Any,
    key: tuple[str, str],
    segment: str,
    msgs: list[tuple[int, Any]],
    fast: FastBook | None,
    events: list[CtlEvent],
    alive: bool,
    out: dict[str, list[dict[tuple[str, str, str], pa.Table]]],
) -> tuple[bool, dict[str, int]]:
    """Apply one instrument's messages (per-line objects and/or fast-path columns) in line
    order, calling reconnect() at each ctl event's line.

    An engine that never saw a message has no epoch to end: skipping its reconnects keeps the
    output independent of where segment boundaries fall."""
    columns: FastBook | None = None
    if fast is not None:
        columns = merge_columns(fast, msgs)
        if columns is None:  # shapes the columns cannot carry: everything as objects
            msgs = sorted([*msgs, *fast.to_messages()], key=lambda item: item[0])
    positions = columns.line.tolist() if columns is not None else [pos for pos, _ in msgs]
    stats = dict.fromkeys(STAT_FIELDS, 0)
    ex, sym = key
    start = 0
    bounds: list[tuple[int, CtlEvent | None]] = [
        (bisect.bisect_left(positions, ev.book_pos), ev) for ev in events
    ]
    bounds.append((len(positions), None))
    pending = False  # a reconnect's gap row is delivered with the next apply()

    def run(lo: int, hi: int) -> None:
        if columns is not None and hi > lo:
            # the columns are this run's own (popped from the demux result, or merged): the
            # levels the engine has applied are handed back as it goes (peak memory)
            base = int(columns.level_offsets[lo])
            result = engine.apply_batch(
                columns.batch(lo, hi),
                segment,
                spent=lambda a, b: columns.release(base + a, base + b),
            )
        else:
            result = engine.apply([m for _, m in msgs[lo:hi]], segment)
        # every counter the engine reports (contract fields + extras such as crossed)
        for f, v in result.stats.to_dict().items():
            stats[f] = stats.get(f, 0) + int(v)
        out["book_deltas"].append(split_by_partition(result.deltas, "ts_recv", ex, sym))
        out["book_snapshots"].append(split_by_partition(result.snapshots, "ts_recv", ex, sym))
        out["gap_ledger"].append(split_by_partition(result.gaps, "ts_to", ex, sym))
        out["book_drift"].append(split_by_partition(result.drift, "ts_recv", ex, sym))

    for end, ev in bounds:
        if end > start:
            run(start, end)
            start = end
            alive = True
            pending = False
        if ev is not None and alive:
            engine.reconnect(ev.ts_recv, segment, ev.reason)
            pending = True
    if pending:
        # flush the gap row now: it belongs to this segment whatever comes after
        run(0, 0)
    return alive, stats


def _state_prefix(layout: Layout, source: str) -> str:
    return layout.state("books", source)


def _day_prefix(layout: Layout, source: str, day: str) -> str:
    return f"{_state_prefix(layout, source)}/date={day}"


def _checkpoint_id(key: str) -> SegmentId | None:
    name = key.rsplit("/", 1)[-1].removesuffix(".json") + ".ndjson"
    try:
        return parse_segment_name(name)
    except ValueError:
        return None


def _latest_before(keys: Iterable[str], limit: tuple[str, int]) -> str | None:
    best: tuple[tuple[str, int], str] | None = None
    for key in keys:
        sid = _checkpoint_id(key)
        order = None if sid is None else (sid.hour, sid.counter)
        if order is not None and order < limit and (best is None or order > best[0]):
            best = (order, key)
    return None if best is None else best[1]


def find_book_checkpoint(storage: Storage, layout: Layout, ref: SegmentRef) -> str | None:
    """Key of the latest checkpoint of ref's source that precedes ref (None: start empty).

    Checkpoints are filed per day, so the usual case lists one small folder (ref's day, else the
    day before); only a source that was idle for longer pays for a listing of all its days."""
    sid = parse_segment_name(ref.name)
    limit = (sid.hour, sid.counter)
    day = datetime.date.fromisoformat(sid.date)
    for back in (0, 1):
        prefix = _day_prefix(layout, ref.source, str(day - datetime.timedelta(days=back)))
        key = _latest_before(storage.list(prefix, "segment_*.json"), limit)
        if key is not None:
            return key
    every = storage.list(_state_prefix(layout, ref.source), "segment_*.json", recursive=True)
    return _latest_before(every, limit)


def load_book_state(
    storage: Storage, layout: Layout, ref: SegmentRef
) -> dict[tuple[str, str], bytes]:
    """Book states after the latest checkpointed segment of ref's source that precedes ref."""
    return read_book_state(storage, find_book_checkpoint(storage, layout, ref))


def read_book_state(storage: Storage, key: str | None) -> dict[tuple[str, str], bytes]:
    if key is None:
        return {}
    blob = orjson.loads(storage.read_bytes(key))
    return {(ex, sym): base64.b64decode(b64) for ex, sym, b64 in blob["books"]}


def save_book_state(
    storage: Storage, layout: Layout, ref: SegmentRef, states: dict[tuple[str, str], bytes]
) -> None:
    blob = {
        "segment": ref.name,
        "books": [
            [ex, sym, base64.b64encode(states[(ex, sym)]).decode()] for ex, sym in sorted(states)
        ],
    }
    day = parse_segment_name(ref.name).date
    key = f"{_day_prefix(layout, ref.source, day)}/{sanitize_part(ref.stem)}.json"
    storage.write_bytes(key, orjson.dumps(blob))


def prune_book_checkpoints(
    storage: Storage, layout: Layout, source: str, before: datetime.date
) -> int:
    """Thin the checkpoints of days before `before` to each day's last one (what a ``rebuild``
    of the next day starts from); returns how many were deleted. Reprocessing a single segment
    of a thinned day would start from the wrong state, so keep `before` well behind any retry."""
    deleted = 0
    by_day: dict[str, list[tuple[tuple[str, int], str]]] = defaultdict(list)
    for key in storage.list(_state_prefix(layout, source), "segment_*.json", recursive=True):
        sid = _checkpoint_id(key)
        if sid is not None and datetime.date.fromisoformat(sid.date) < before:
            by_day[sid.date].append(((sid.hour, sid.counter), key))
    for entries in by_day.values():
        for _, key in sorted(entries)[:-1]:
            storage.delete(key)
            deleted += 1
    return deleted
