"""Replay of recorded captures and of FluxForge's own raw segments.

Config: ``{name, type: replay, path: GLOB, exchange: ID, speed: 0|1|N, resume: true}``.

- Capture files (``../shared/data/captures``, cryptofeed format) are read with
  ``fluxforge.captures.merge_captures``: every file the glob matches is merged in receive-time
  order, so a ``X.http.N.0`` REST snapshot lands where it was taken within ``X.ws.N.0``.
  Received frames -> ``msg`` with the capture's receive time as ``ts``; REST responses ->
  ``rest`` with ``url``; connection lines -> ``ctl connect``; sent lines -> ``ctl subscribe``
  (the request embedded verbatim); the recorder's configuration line is not market data and is
  skipped. ``exchange`` defaults to the capture file's stem (``BINANCE_FUTURES`` ->
  ``binanceusdm``).
- Segment files (``segment_*.ndjson``): each line is re-emitted with its original ts, ex, kind,
  url and the payload bytes verbatim (``raw_payload``); control records keep their data, except
  the original writer's own seal/recover records, which described the original files.
- ``speed``: 0 = as fast as possible, 1 = real time, N = N times faster.
- Resume: the input is deterministic, so the writer's ``pos`` (source lines durably written, see
  writer.py) is the cursor. After a crash or a stop the replay skips exactly the records already
  written and goes on; when the whole input has been written, a restart writes nothing. A
  different input (other file names) starts from the top. ``resume: false`` always restarts.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import heapq
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.config import Config, SourceConfig
from fluxforge.segments import (
    CTL_EVENTS,
    SEGMENT_RE,
    EnvelopeError,
    frame_payload,
    is_own_ctl,
    iter_lines,
    parse_envelope,
    raw_payload,
)
from ingestion_daemon.sources import SourceConfigError, option_error
from ingestion_daemon.writer import SegmentWriter

log = logging.getLogger("ingestion_daemon.replay")


@dataclass(slots=True)
class ReplayRecord:
    ts: int
    kind: str  # msg | rest | ctl
    ex: str
    payload: bytes = b""
    url: str | None = None
    ctl: dict[str, Any] = field(default_factory=dict)


def resolve_inputs(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


class ReplaySource:
    live = False

    def __init__(self, src: SourceConfig, cfg: Config) -> None:
        self.name = src.name
        pattern = src.option("path")
        if not pattern or not isinstance(pattern, str):
            raise option_error(src, "path", pattern, "a glob of capture or segment files")
        self.files = resolve_inputs(pattern)
        if not self.files:
            raise SourceConfigError(
                f"sources[{src.name}].path = {pattern!r}: matches no file "
                f"(relative to {Path.cwd()})"
            )
        self.exchange = src.option("exchange")
        speed = src.option("speed", 0)
        if not isinstance(speed, int | float) or speed < 0:
            raise option_error(src, "speed", speed, "0 (as fast as possible), 1 (real time) or N")
        self.speed = float(speed)
        self.resume = bool(src.option("resume", True))
        self.default_ex = self.exchange or exchange_from_filename(self.files[0].name)
        self.skip = 0
        self.written = 0
        self.counts: dict[str, int] = {}

    def fingerprint(self) -> str:
        return hashlib.sha1("\n".join(p.name for p in self.files).encode()).hexdigest()

    def prepare(self, writer: SegmentWriter) -> None:
        fp = self.fingerprint()
        meta = writer.state.meta.get("replay") or {}
        same_input = self.resume and meta.get("input") == fp
        base = int(meta.get("base", 0)) if same_input else writer.pos
        writer.state.meta["replay"] = {"input": fp, "base": base, "files": len(self.files)}
        self.skip = writer.pos - base
        if self.skip:
            log.info(
                "%s: resuming replay after %d records already written (%d files)",
                self.name,
                self.skip,
                len(self.files),
            )

    # ------------------------------------------------------------------ input

    def _capture_records(self, paths: list[Path]) -> Iterator[ReplayRecord]:
        for rec in merge_captures(paths):
            ex = self.exchange or exchange_from_filename(rec.file)
            if rec.kind == "recv":
                yield ReplayRecord(rec.ts, "msg", ex, frame_payload(rec.payload))
            elif rec.kind == "rest":
                yield ReplayRecord(rec.ts, "rest", ex, frame_payload(rec.payload), rec.url)
            elif rec.kind == "open":
                yield ReplayRecord(rec.ts, "ctl", ex, ctl={"event": "connect", "url": rec.url})
            elif rec.kind == "sent":
                request = orjson.Fragment(frame_payload(rec.payload))
                fields = {"event": "subscribe", "url": rec.url, "request": request}
                yield ReplayRecord(rec.ts, "ctl", ex, ctl=fields)

    def _segment_records(self, path: Path) -> Iterator[ReplayRecord]:
        for n, line in iter_lines(path.read_bytes()):
            try:
                env = parse_envelope(line)
            except EnvelopeError as exc:
                log.error("%s: %s line %d skipped: %s", self.name, path, n, exc)
                continue
            ex = self.exchange or env.ex
            if env.kind == "ctl":
                if is_own_ctl(env) or not isinstance(env.data, dict):
                    continue
                if env.data.get("event") not in CTL_EVENTS:
                    log.error("%s: %s line %d: unknown ctl event skipped", self.name, path, n)
                    continue
                yield ReplayRecord(env.ts, "ctl", ex, ctl=dict(env.data))
            else:
                yield ReplayRecord(env.ts, env.kind, ex, raw_payload(line), env.url)

    def records(self) -> Iterator[ReplayRecord]:
        """Every record of the input, in replay order (deterministic)."""
        segments = [p for p in self.files if SEGMENT_RE.match(p.name)]
        captures = [p for p in self.files if not SEGMENT_RE.match(p.name)]
        streams: list[Iterator[ReplayRecord]] = []
        if captures:
            streams.append(self._capture_records(captures))
        if segments:
            streams.append(
                heapq.merge(*(self._segment_records(p) for p in segments), key=lambda r: r.ts)
            )
        return heapq.merge(*streams, key=lambda r: r.ts)

    # ------------------------------------------------------------------ run

    async def run(self, writer: SegmentWriter, stop: asyncio.Event) -> None:
        skip = self.skip
        started = time.monotonic()
        first_ts: int | None = None
        n = 0
        for rec in self.records():
            if stop.is_set():
                return
            if skip:
                skip -= 1
                continue
            if self.speed > 0:
                if first_ts is None:
                    first_ts = rec.ts
                due = (rec.ts - first_ts) / 1e9 / self.speed - (time.monotonic() - started)
                if due > 0.001:
                    await asyncio.sleep(due)
                    if stop.is_set():
                        return
            elif n % 256 == 255:
                await asyncio.sleep(0)  # let signals, ticks and other sources run
            n += 1
            if rec.kind == "msg":
                writer.append(rec.ts, rec.payload, "msg", rec.ex)
            elif rec.kind == "rest":
                writer.append_rest(rec.ts, rec.payload, rec.url or "", rec.ex)
            else:
                fields = dict(rec.ctl)
                event = fields.pop("event")
                writer.ctl(event, rec.ts, rec.ex, **fields)
            self.written += 1
            self.counts[rec.kind] = self.counts.get(rec.kind, 0) + 1
        log.info(
            "%s: replay input ended: %d records written now (%s), %d skipped as already written",
            self.name,
            self.written,
            ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())),
            self.skip,
        )
