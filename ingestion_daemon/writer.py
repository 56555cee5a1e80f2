"""Segment writer: one per source, appends envelopes to the active segment and seals it.

Durability model (docs/segment-format.md):

- Lines are buffered in memory and written to the active file in batches (``flush_max_lines``
  or every ``flush_interval_ms`` from the service tick). A line is *acknowledged* once flushed:
  a kill -9 loses only the unflushed buffer, never a flushed line.
- Sealing appends a ``ctl seal`` record, flushes, fsyncs, writes the source state, then renames
  the file into ready/ (one atomic rename).
- The source state (``{state_dir}/daemon/{source}.json``, written atomically) holds the next
  ``seq``, the next segment counter and ``pos``: how many source lines (everything except the
  writer's own seal/recover records) have been written so far. The state only ever claims lines
  that are already durable in a segment file, so after a crash the true values are the state's
  plus whatever the recovered active files hold beyond it (lines with ``seq >= state.next_seq``).
  The replay source uses ``pos`` as its input cursor: resuming skips exactly the records already
  written, so nothing is replayed twice or skipped.
- Recovery (``open()``): every file left in active/ is cut at its last complete, parseable line
  (the torn tail is counted and logged), a ``ctl recover`` record is appended, and it is sealed.
- Rotation: by size, by age (wall clock since the segment opened) and at every UTC hour of the
  line timestamps, so a segment holds one UTC hour only. For live sources (timestamps = clock)
  the tick also seals a segment as soon as the clock passes its hour.
- Hot-zone fill: before opening a segment on a local ingestion storage, the filesystem's fill is
  checked; past ``storage.shm_fill_threshold`` the new segment goes to ``storage.spill_dir``
  (``{spill_dir}/{raw_dir}/{active|ready}/{source}/``), with an ERROR log line per segment. A
  write that fails with ENOSPC seals what is on disk and continues in the spill dir. Sealed
  spilled segments are moved back into the hot ready/ (oldest first, before any newer hot
  segment) as soon as the hot zone is below the threshold again, so the refinery sees them.
- S3 ingestion storage: the segment is buffered in memory and uploaded straight to ready/ on seal
  by a background thread (the event loop never waits on S3); the state follows the upload.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fluxforge.config import Config
from fluxforge.locks import daemon_lock_path, exclusive
from fluxforge.segments import (
    CTL_EVENTS,
    EnvelopeError,
    cut_torn_tail,
    encode_envelope,
    iter_lines,
    parse_envelope,
    parse_segment_name,
    segment_name,
)
from fluxforge.storage import (
    Layout,
    LocalStorage,
    Storage,
    open_storage,
    parked_storage,
    sanitize_part,
)
from fluxforge.wire.envelope import DATA, EX, HEAD, KIND, SEQ, SRC
from ingestion_daemon.highwater import high_water

log = logging.getLogger("ingestion_daemon.writer")
_LINE = HEAD + b"%d%b%d%b%b}\n"  # ts, src..seq, seq, kind..data, payload

HOUR_NS = 3_600_000_000_000
# The writer's own bookkeeping records: not source lines, not counted in `pos`.
OWN_EVENTS = frozenset({"seal", "recover"})
_FLUSH_MAX_BYTES = 1 << 20


@dataclass
class SourceState:
    next_seq: int = 0
    next_counter: int = 1
    pos: int = 0
    segment: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "next_seq": self.next_seq,
                "next_counter": self.next_counter,
                "pos": self.pos,
                "segment": self.segment,
                "meta": self.meta,
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> SourceState:
        try:
            obj = orjson.loads(data)
            return cls(
                int(obj["next_seq"]),
                int(obj["next_counter"]),
                int(obj.get("pos", 0)),
                obj.get("segment"),
                dict(obj.get("meta") or {}),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"daemon state file {where} is corrupt: {exc}") from None


@dataclass
class RecoveryReport:
    segments: list[str] = field(default_factory=list)
    lines: int = 0
    torn_lines: int = 0
    torn_bytes: int = 0


def fs_fill(path: Path) -> float:
    """Used fraction of the filesystem holding `path` (0..1)."""
    st = os.statvfs(path)
    if not st.f_blocks:
        return 0.0
    return 1.0 - st.f_bavail / st.f_blocks


def _hour_start(ts: int) -> int:
    return ts - ts % HOUR_NS


class SegmentWriter:
    """Appends envelopes for one source. Not thread-safe: one asyncio loop owns it."""

    def __init__(
        self,
        cfg: Config,
        source: str,
        *,
        default_ex: str = "unknown",
        live: bool = True,
        clock: Callable[[], int] = time.time_ns,
        storage: Storage | None = None,
    ) -> None:
        ing = cfg.storage.ingestion
        self.cfg = cfg
        self.source = source
        self.default_ex = default_ex
        self.live = live
        self.clock = clock
        self.layout = Layout.of(ing)
        self.storage = storage or open_storage(ing)
        self.local = isinstance(self.storage, LocalStorage)
        self.spill: LocalStorage | None = (
            LocalStorage(cfg.storage.spill_dir) if cfg.storage.spill_dir and self.local else None
        )
        self.fill_threshold = cfg.storage.shm_fill_threshold
        icfg = cfg.ingestion
        self.max_bytes = icfg.segment_max_bytes
        self.max_age_ns = int(icfg.segment_max_age_s * 1e9)
        self.flush_max_lines = icfg.flush_max_lines
        self.state_key = self.layout.state("daemon", f"{source}.json")
        self.state_store: Storage = self.storage
        if icfg.state_dir and self.local:
            self.state_store = LocalStorage(icfg.state_dir)
        self.state = SourceState()
        self.sealed: list[str] = []  # names sealed by this writer (for logs and tests)
        self.spilled = 0
        # active segment
        self._name: str | None = None
        self._root: Storage | None = None
        self._fd = -1
        self._hour_start = 0
        self._hour_end = 0  # ts in [start, end) stays in this segment; 0/0 forces a roll
        self._opened_at = 0
        self._lines = 0
        self._size = 0  # bytes of the segment incl. buffered
        self._last_ts = 0
        self._seg_buf = bytearray()  # S3: the whole segment
        self._buf = bytearray()  # local: not yet flushed
        self._pending = 0
        self._heads: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._seq = 0
        self._pos = 0
        self._durable = (0, 0)  # (next_seq, pos) of the last line known to be on storage
        self._uploader: _Uploader | None = None if self.local else _Uploader(self)
        self._lock = contextlib.ExitStack()

    # ------------------------------------------------------------------ properties

    @property
    def next_seq(self) -> int:
        return self._seq

    @property
    def pos(self) -> int:
        """Source lines written so far (all lines but the writer's seal/recover records)."""
        return self._pos

    @property
    def active_name(self) -> str | None:
        return self._name

    # ------------------------------------------------------------------ start-up

    def _roots(self) -> list[Storage]:
        return [self.storage] + ([self.spill] if self.spill else [])

    def _load_state(self) -> SourceState:
        if not self.state_store.exists(self.state_key):
            return SourceState()
        return SourceState.from_bytes(
            self.state_store.read_bytes(self.state_key), self.state_store.uri(self.state_key)
        )

    def _save_state(self) -> None:
        """Persist the state with the last *durable* seq/pos (never lines still in memory).
        With S3 the write is queued behind the pending uploads, so it follows them."""
        self.state.next_seq, self.state.pos = self._durable
        snapshot = SourceState(
            self.state.next_seq,
            self.state.next_counter,
            self.state.pos,
            self.state.segment,
            dict(self.state.meta),
        )
        if self._uploader is not None:
            self._uploader.put_state(snapshot)
        else:
            self.state_store.write_bytes(self.state_key, snapshot.to_bytes())

    def open(self) -> RecoveryReport:
        """Take the source's exclusive lock (one daemon per source and store), load the
        state and recover whatever a crash left behind. Call once; ``close`` releases it."""
        self._lock.enter_context(
            exclusive(
                daemon_lock_path(self.storage, self.source),
                "ingestion daemon",
                f"ingestion daemon, source {self.source}",
            )
        )
        try:
            return self._open_locked()
        except BaseException:
            self._lock.close()
            raise

    def _open_locked(self) -> RecoveryReport:
        self.state = self._load_state()
        # names and seq never reused: the state may be lost or stale, so the counters are
        # also taken from every tier that holds the source's segments
        roots = self._roots() + ([] if self.local else [parked_storage(self.cfg.storage)])
        hw = high_water(self.cfg, self.source, roots)
        if hw.seq >= self.state.next_seq and not self.state.segment:
            log.warning(
                "%s: no daemon state (%s) but %s holds seq %d: continuing after it",
                self.source,
                self.state_store.uri(self.state_key),
                hw.places[0] if hw.places else "a raw tier",
                hw.seq,
            )
        # lines after the state (active/, a ready segment sealed after the last state write)
        # are accounted below and advance pos too; this floor covers lost or stale state
        self._seq = max(self.state.next_seq, hw.seq + 1)
        self._pos = self.state.pos
        self._durable = (self._seq, self._pos)
        report = RecoveryReport()
        self.state.next_counter = max(self.state.next_counter, hw.counter + 1)
        # A segment sealed after the last state write (S3: uploaded, state not yet written)
        # is still in ready/: count what it holds beyond the state.
        if self.state.segment:
            for root in self._roots():
                key = self.layout.segment("ready", self.source, self.state.segment)
                if root.exists(key):
                    self._account(root.read_bytes(key))
        if self.local:
            self._recover_active(report)
        self._durable = (self._seq, self._pos)
        self._save_state()
        return report

    def _account(self, data: bytes) -> tuple[int, int]:
        """Advance seq/pos past the lines of `data` not covered by the state.
        Returns (lines, last ts)."""
        lines = 0
        last_ts = 0
        for _, line in iter_lines(data):
            try:
                env = parse_envelope(line)
            except EnvelopeError:
                continue
            lines += 1
            last_ts = env.ts
            if env.src != self.source or env.seq < self.state.next_seq:
                continue
            self._seq = max(self._seq, env.seq + 1)
            own = env.kind == "ctl" and isinstance(env.data, dict)
            if not (own and env.data.get("event") in OWN_EVENTS):
                self._pos += 1
        return lines, last_ts

    def _recover_active(self, report: RecoveryReport) -> None:
        found: list[tuple[int, Storage, str]] = []
        for root in self._roots():
            for key in root.list(self.layout.raw_state_dir("active", self.source), "segment_*"):
                try:
                    found.append((parse_segment_name(key).counter, root, key))
                except ValueError:
                    log.warning("%s: ignoring foreign file %s in active/", self.source, key)
        found.sort(key=lambda item: item[0])
        # first account for every file, so the recover records get seqs after all of them
        scanned = []
        for _, root, key in found:
            path = root.local_path(key)
            assert path is not None
            kept, cut = cut_torn_tail(path.read_bytes())
            lines, last_ts = self._account(kept)
            scanned.append((root, key, path, len(kept), cut, lines, last_ts))
        to_seal: list[tuple[Storage, str, str]] = []
        for root, key, path, kept_len, cut, lines, last_ts in scanned:
            torn = 1 if cut else 0
            name = key.rsplit("/", 1)[-1]
            if not lines:
                log.warning(
                    "%s: recovered %s is empty (%d torn bytes): removed", self.source, key, cut
                )
                path.unlink()
                report.torn_bytes += cut
                report.torn_lines += torn
                continue
            hour = parse_segment_name(name).start
            start = int(hour.timestamp()) * 1_000_000_000
            ts = self._seal_ts(start, last_ts)
            rec = encode_envelope(
                ts,
                self.source,
                self.default_ex,
                self._seq,
                "ctl",
                orjson.dumps(
                    {
                        "event": "recover",
                        "segment": name,
                        "lines": lines,
                        "torn_lines": torn,
                        "torn_bytes": cut,
                    }
                ),
            )
            self._seq += 1
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.ftruncate(fd, kept_len)
                os.lseek(fd, 0, os.SEEK_END)
                _write_all(fd, rec)
                os.fsync(fd)
            finally:
                os.close(fd)
            log.warning(
                "%s: recovered %s after an unclean stop: %d lines kept, torn tail cut: "
                "%d line(s), %d bytes",
                self.source,
                key,
                lines,
                torn,
                cut,
            )
            report.segments.append(name)
            report.lines += lines
            report.torn_lines += torn
            report.torn_bytes += cut
            to_seal.append((root, key, name))
        if to_seal:
            # state first (it claims only lines already fsynced above), then the renames
            self._durable = (self._seq, self._pos)
            self._save_state()
            for root, key, name in to_seal:
                root.move(key, self.layout.segment("ready", self.source, name))
                self.sealed.append(name)
                log.info("%s: sealed %s (recovered)", self.source, name)

    # ------------------------------------------------------------------ append path

    def _heads_for(self, ex: str, kind: str) -> tuple[bytes, bytes]:
        # the envelope layout of fluxforge.wire.envelope: HEAD ts SRC "src" EX "ex" SEQ seq ...
        head = (
            SRC + orjson.dumps(self.source) + EX + orjson.dumps(ex) + SEQ,
            KIND + b'"' + kind.encode() + b'"' + DATA,
        )
        self._heads[(ex, kind)] = head
        return head

    def append(self, ts: int, payload: bytes, kind: str = "msg", ex: str | None = None) -> int:
        """Append one line; `payload` must be valid one-line JSON (``frame_payload``).
        Returns the line's seq."""
        if not self._hour_start <= ts < self._hour_end:
            self._roll(ts)
        ex = ex or self.default_ex
        head = self._heads.get((ex, kind)) or self._heads_for(ex, kind)
        seq = self._seq
        line = _LINE % (ts, head[0], seq, head[1], payload)
        self._seq = seq + 1
        self._pos += 1
        self._last_ts = ts
        self._lines += 1
        self._size += len(line)
        if self.local:
            self._buf += line
            self._pending += 1
            if self._pending >= self.flush_max_lines or len(self._buf) >= _FLUSH_MAX_BYTES:
                self.flush()
        else:
            self._seg_buf += line
        if self._size >= self.max_bytes:
            self.seal("size")
        return seq

    def append_rest(self, ts: int, payload: bytes, url: str, ex: str | None = None) -> int:
        if not self._hour_start <= ts < self._hour_end:
            self._roll(ts)
        return self._append_line(
            ts,
            encode_envelope(
                ts, self.source, ex or self.default_ex, self._seq, "rest", payload, url
            ),
        )

    def ctl(self, event: str, ts: int | None = None, ex: str | None = None, **fields: Any) -> int:
        """A control record (connect, disconnect, subscribe, gap) from the source."""
        if event not in CTL_EVENTS:
            raise ValueError(f"ctl event {event!r}: allowed {CTL_EVENTS}")
        ts = self.clock() if ts is None else ts
        if not self._hour_start <= ts < self._hour_end:
            self._roll(ts)
        payload = orjson.dumps({"event": event, **fields})
        return self._append_line(
            ts, encode_envelope(ts, self.source, ex or self.default_ex, self._seq, "ctl", payload)
        )

    def _append_line(self, ts: int, line: bytes, own: bool = False) -> int:
        seq = self._seq
        self._seq += 1
        if not own:
            self._pos += 1
        self._last_ts = max(self._last_ts, ts)
        self._lines += 1
        self._size += len(line)
        if self.local:
            self._buf += line
            self._pending += 1
            if self._pending >= self.flush_max_lines:
                self.flush()
        else:
            self._seg_buf += line
        if self._size >= self.max_bytes and not own:
            self.seal("size")
        return seq

    def flush(self) -> None:
        """Write the buffered lines to the active file (local storage)."""
        if not self._buf:
            return
        try:
            _write_all(self._fd, self._buf)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self._out_of_space()
            return
        self._buf.clear()
        self._pending = 0

    def _out_of_space(self) -> None:
        """The hot zone is full mid-segment: cut the file back to its last flushed line, seal
        it, and write the buffered lines into a new segment on the spill disk."""
        flushed = self._size - len(self._buf)
        os.ftruncate(self._fd, flushed)  # drop a partly written batch: it is still in _buf
        if self.spill is None or self._root is self.spill:
            log.error(
                "%s: NO SPACE LEFT writing %s and nowhere to spill: keeping %d lines in memory, "
                "retrying at the next flush",
                self.source,
                self._name,
                self._pending,
            )
            return
        pending = bytes(self._buf)
        pending_lines = self._pending
        log.error(
            "%s: NO SPACE LEFT writing %s (hot zone full): sealing it and spilling to %s",
            self.source,
            self._name,
            self.cfg.storage.spill_dir,
        )
        self._buf.clear()
        self._pending = 0
        self._size = flushed
        self._lines -= pending_lines
        self._close_file(seal_record=False, reason="nospace")
        self._open_segment(self._last_ts, force_spill=True)
        self._buf += pending
        self._pending = self._lines = pending_lines
        self._size += len(pending)
        self.flush()

    # ------------------------------------------------------------------ rotation

    def _roll(self, ts: int) -> None:
        if self._name is not None:
            self.seal("hour")
        self._open_segment(ts)

    def _open_segment(self, ts: int, force_spill: bool = False) -> None:
        start = _hour_start(ts)
        counter = self.state.next_counter
        name = segment_name(datetime.fromtimestamp(start // 1_000_000_000, UTC), counter)
        self.state.next_counter = counter + 1
        self.state.segment = name
        root = self.storage
        if self.local:
            root = self._choose_root(force_spill)
        # the counter is persisted before the file exists, so it never repeats
        self._save_state()
        self._name = name
        self._root = root
        self._hour_start = start
        self._hour_end = start + HOUR_NS
        self._opened_at = self.clock()
        self._lines = 0
        self._size = 0
        if self.local:
            path = root.local_path(self.layout.segment("active", self.source, name))
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            # a new name: never an existing file, never through a symlink planted in active/
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW
            self._fd = os.open(path, flags, 0o644)
        log.debug("%s: opened %s", self.source, name)

    def _choose_root(self, force_spill: bool) -> Storage:
        if force_spill and self.spill is not None:
            self.spilled += 1
            return self.spill
        root_path = self.storage.local_path("")
        assert root_path is not None
        root_path.mkdir(parents=True, exist_ok=True)
        fill = fs_fill(root_path)
        if fill < self.fill_threshold:
            if self.spill is not None:
                self.drain_spill()  # older spilled segments reach ready/ before this one
            return self.storage
        if self.spill is None:
            log.error(
                "%s: HOT ZONE %s is %.1f%% full (threshold %.1f%%) and no storage.spill_dir is "
                "configured: still writing there",
                self.source,
                root_path,
                fill * 100,
                self.fill_threshold * 100,
            )
            return self.storage
        self.spilled += 1
        log.error(
            "%s: HOT ZONE %s is %.1f%% full (threshold %.1f%%): SPILLING new segment to %s",
            self.source,
            root_path,
            fill * 100,
            self.fill_threshold * 100,
            self.spill.local_path(""),
        )
        return self.spill

    def drain_spill(self, limit: int | None = None) -> int:
        """Move sealed spilled segments (oldest first) back into the hot ready/ while the hot
        zone is below its threshold, so the refinery, which reads the hot ready/, sees them.
        Returns how many moved."""
        if self.spill is None:
            return 0
        keys = self.spill.list(self.layout.raw_state_dir("ready", self.source), "segment_*")
        moved = 0
        hot_root = self.storage.local_path("")
        for key in keys[:limit]:
            if hot_root is None or fs_fill(hot_root) >= self.fill_threshold:
                break
            src = self.spill.local_path(key)
            dst = self.storage.local_path(key)
            assert src is not None and dst is not None
            _move_file(src, dst)
            moved += 1
            log.warning(
                "%s: hot zone has room again: moved spilled %s to %s", self.source, key, dst
            )
        return moved

    def tick(self) -> None:
        """Called periodically by the service: flush, rotate by age / clock hour, and bring one
        spilled segment back when the hot zone has room."""
        if self.spill is not None:
            self.drain_spill(limit=1)
        if self._uploader is not None:
            self._uploader.retry_parked_soon()
        if self._name is None:
            return
        self.flush()
        now = self.clock()
        if self.live and now >= self._hour_end:
            self.seal("hour")
        elif now - self._opened_at >= self.max_age_ns:
            self.seal("age")

    def _seal_ts(self, hour_start: int, last_ts: int) -> int:
        """Timestamp of a writer record: now when inside the segment's hour, else the last
        line's time (a sealed segment never holds a line outside its hour)."""
        now = self.clock()
        if hour_start <= now < hour_start + HOUR_NS:
            return max(now, last_ts)
        return max(last_ts, hour_start)

    def seal(self, reason: str = "shutdown") -> str | None:
        """Close the active segment: seal record, flush, fsync, state, rename to ready/."""
        if self._name is None:
            return None
        return self._close_file(seal_record=True, reason=reason)

    def _close_file(self, seal_record: bool, reason: str) -> str:
        name = self._name
        assert name is not None
        if seal_record:
            ts = self._seal_ts(self._hour_start, self._last_ts)
            payload = orjson.dumps(
                {"event": "seal", "reason": reason, "segment": name, "lines": self._lines}
            )
            self._append_line(
                ts,
                encode_envelope(ts, self.source, self.default_ex, self._seq, "ctl", payload),
                own=True,
            )
        lines, size = self._lines, self._size
        ready_key = self.layout.segment("ready", self.source, name)
        if self.local:
            self.flush()
            if self._buf:
                # no space anywhere: sealing now would mark lines that exist only in memory
                # as durable (the state would skip them after a restart): keep the segment
                # active; a restart with space recovers it and resumes after its last line
                raise OSError(
                    errno.ENOSPC,
                    f"{self.source}: NO SPACE LEFT to seal {name}: {self._pending} line(s) "
                    "not written; the segment stays in active/ for recovery",
                )
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._durable = (self._seq, self._pos)
            self._save_state()
            root = self._root
            assert root is not None
            root.move(self.layout.segment("active", self.source, name), ready_key)
            where = root.local_path(ready_key)
            self.sealed.append(name)
            log.info(
                "%s: sealed %s (%s): %d lines, %d bytes -> %s",
                self.source,
                name,
                reason,
                lines,
                size,
                where,
            )
        else:
            assert self._uploader is not None
            data = bytes(self._seg_buf)
            self._seg_buf.clear()
            self._uploader.put_segment(name, ready_key, data)
            self._durable = (self._seq, self._pos)
            self._save_state()  # queued: written once the upload is done
            self.sealed.append(name)
            log.info(
                "%s: sealed %s (%s): %d lines, %d bytes -> upload",
                self.source,
                name,
                reason,
                lines,
                size,
            )
        self._name = None
        self._root = None
        self._hour_start = self._hour_end = 0
        return name

    def close(self) -> None:
        """Flush, seal the active segment, finish uploads, release the source's lock."""
        try:
            self.seal("shutdown")
            if self._uploader is not None:
                self._uploader.close()
        finally:
            self._lock.close()


def _move_file(src: Path, dst: Path) -> None:
    """Rename, or (another filesystem) copy + fsync + atomic rename + unlink: the target only
    ever appears complete."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst.with_name(f".tmp-{dst.name}")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dst)
    src.unlink()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    # The view is released even when os.write fails (ENOSPC): a view kept alive by the
    # exception's traceback would pin the bytearray, and the out-of-space path's clear()
    # would raise BufferError instead of spilling.
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])


PARKED_RETRY_S = 30.0  # how often parked segments are offered to S3 again
UPLOAD_ATTEMPTS = 5  # of one upload before the segment is parked
UPLOAD_BACKOFF_S = 1.0  # first wait between attempts, doubled up to 30 s
_RETRY = ("", "", b"retry")  # queue item: retry the parked segments now


class _Uploader:
    """Background uploads of sealed S3 segments and state writes, strictly in order.

    A segment S3 keeps refusing is parked on local disk (never lost), and is offered again on
    start-up and every ``PARKED_RETRY_S`` until it is in S3. Nothing overtakes it: while a
    segment is parked, later ones are parked behind it, so the refinery never sees a source's
    later segment before an earlier one."""

    def __init__(self, writer: SegmentWriter) -> None:
        self.writer = writer
        self.queue: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue()
        self.failed: list[str] = []
        self.parked = parked_storage(writer.cfg.storage)
        self.next_retry = 0.0
        self.thread = threading.Thread(
            target=self._run, name=f"upload-{sanitize_part(writer.source)}", daemon=True
        )
        self.thread.start()

    def put_segment(self, name: str, key: str, data: bytes) -> None:
        self.queue.put((name, key, data))

    def put_state(self, state: SourceState) -> None:
        self.queue.put(("", self.writer.state_key, state.to_bytes()))

    def retry_parked_soon(self, now: float | None = None) -> None:
        """Offer the parked segments to S3 again (start-up, then every PARKED_RETRY_S)."""
        now = time.monotonic() if now is None else now
        if now >= self.next_retry:
            self.next_retry = now + PARKED_RETRY_S
            self.queue.put(_RETRY)

    def _parked_keys(self) -> list[str]:
        w = self.writer
        return self.parked.list(w.layout.raw_state_dir("ready", w.source), "segment_*")

    def _retry_parked(self) -> None:
        w = self.writer
        for key in self._parked_keys():
            try:
                w.storage.write_bytes(key, self.parked.read_bytes(key))
            except OSError as exc:
                log.error("%s: parked %s still not uploaded: %s", w.source, key, exc)
                return
            self.parked.delete(key)
            log.warning("%s: parked %s uploaded to %s", w.source, key, w.storage.uri(key))

    def _run(self) -> None:
        w = self.writer
        while True:
            item = self.queue.get()
            if item is None:
                return
            if item is _RETRY:
                self._retry_parked()
                continue
            name, key, data = item
            if name and self._parked_keys():
                self._retry_parked()
                if self._parked_keys():  # an earlier one still waits: stay behind it
                    self._fallback(name, data)
                    continue
            delay = UPLOAD_BACKOFF_S
            for attempt in range(1, UPLOAD_ATTEMPTS + 1):
                try:
                    w.storage.write_bytes(key, data)
                    break
                except OSError as exc:
                    log.error(
                        "%s: S3 write of %s failed (attempt %d): %s", w.source, key, attempt, exc
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
            else:
                if name:
                    self._fallback(name, data)
                continue
            if name:
                log.info(
                    "%s: uploaded %s (%d bytes) to %s",
                    w.source,
                    name,
                    len(data),
                    w.storage.uri(key),
                )

    def _fallback(self, name: str, data: bytes) -> None:
        """S3 kept failing: keep the bytes on local disk rather than lose them; retried."""
        w = self.writer
        key = w.layout.segment("ready", w.source, name)
        self.parked.write_bytes(key, data)
        self.failed.append(name)
        log.error(
            "%s: S3 UPLOAD FAILED for %s: parked locally at %s, retried every %.0f s",
            w.source,
            name,
            self.parked.uri(key),
            PARKED_RETRY_S,
        )

    def close(self) -> None:
        """Finish the queue, offering the parked segments once more."""
        self.queue.put(_RETRY)
        self.queue.put(None)
        self.thread.join()
