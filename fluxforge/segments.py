"""Raw segment format (docs/segment-format.md): envelope, names, reading, tailing.

One line per received message::

    {"ts":<ns>,"src":"<src>","ex":"<ex>","seq":<n>,"kind":"msg|rest|ctl",["url":..,]"data":<payload>}

Key order is fixed (the literals of ``fluxforge.wire.envelope``) and ``data`` is always last,
so the payload bytes can be sliced out of the line verbatim (``raw_payload``) without
re-encoding. The payload of ``msg``/``rest`` is the exchange's JSON exactly as received (bare
newlines, which JSON only allows as whitespace, are turned into spaces so that one frame stays
one line). A frame that is not valid JSON is embedded as a JSON string so the line stays
parseable; the refinery quarantines it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from fluxforge.wire.envelope import DATA, EX, HEAD, KIND, SEQ, SRC, URL

KINDS = ("msg", "rest", "ctl")
CTL_EVENTS = ("connect", "disconnect", "subscribe", "gap", "seal", "recover")
SEGMENT_RE = re.compile(r"^segment_(\d{8}T\d{2})_(\d{5,})\.ndjson$")
EXCHANGE_RE = re.compile(r"^[a-z0-9_]{1,32}$")


class EnvelopeError(ValueError):
    """A raw line is not a valid envelope; the message says what is wrong."""


def _json_str(text: str) -> bytes:
    return orjson.dumps(text)


def frame_payload(data: bytes | str, validate: bool = True) -> bytes:
    """Payload bytes to embed: verbatim JSON, or a JSON string when the frame is not JSON."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\r", b" ").replace(b"\n", b" ")
    if validate:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            return orjson.dumps(raw.decode("utf-8", "replace"))
    return raw


def encode_envelope(
    ts: int,
    src: str,
    ex: str,
    seq: int,
    kind: str,
    payload: bytes,
    url: str | None = None,
) -> bytes:
    """One newline-terminated line. `payload` must already be valid one-line JSON
    (see ``frame_payload``); it is embedded without re-encoding."""
    head = b"%b%d%b%b%b%b%b%d%b\"%b\"" % (
        HEAD, ts, SRC, _json_str(src), EX, _json_str(ex), SEQ, seq, KIND, kind.encode()
    )  # fmt: skip
    if url is not None:
        head += URL + _json_str(url)
    return head + DATA + payload + b"}\n"


def encode_ctl(ts: int, src: str, ex: str, seq: int, event: str, **fields: Any) -> bytes:
    if event not in CTL_EVENTS:
        raise ValueError(f"ctl event {event!r}: allowed {CTL_EVENTS}")
    return encode_envelope(ts, src, ex, seq, "ctl", orjson.dumps({"event": event, **fields}))


@dataclass(slots=True)
class Envelope:
    ts: int
    src: str
    ex: str
    seq: int
    kind: str
    data: Any
    url: str | None = None
    # the line it was parsed from: a venue that sends prices as JSON numbers (Kraken v2)
    # reads their exact text from it (``fluxforge.venues.common.exact_payload``)
    raw: bytes | None = field(default=None, repr=False, compare=False)


def parse_envelope(line: bytes) -> Envelope:
    """Parse and validate one line (without its newline)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not valid JSON/UTF-8: {exc}") from None
    if not isinstance(obj, dict):
        raise EnvelopeError("envelope is not a JSON object")
    try:
        ts, src, ex, seq, kind = obj["ts"], obj["src"], obj["ex"], obj["seq"], obj["kind"]
        data = obj["data"]
    except KeyError as exc:
        raise EnvelopeError(f"envelope misses key {exc.args[0]!r}") from None
    if type(ts) is not int or ts < 0:
        raise EnvelopeError(f"ts={ts!r}: must be a non-negative integer (ns since epoch)")
    if type(seq) is not int or seq < 0:
        raise EnvelopeError(f"seq={seq!r}: must be a non-negative integer")
    if kind not in KINDS:
        raise EnvelopeError(f"kind={kind!r}: allowed {KINDS}")
    if not isinstance(src, str) or not isinstance(ex, str):
        raise EnvelopeError("src and ex must be strings")
    return Envelope(ts, src, ex, seq, kind, data, obj.get("url"), line)


def raw_payload(line: bytes) -> bytes:
    """The verbatim payload bytes of an envelope line written by ``encode_envelope``."""
    idx = line.find(b',"data":')
    if idx < 0:
        raise EnvelopeError('envelope has no "data" key')
    end = len(line.rstrip(b"\r\n"))
    return line[idx + 8 : end - 1]


def segment_name(hour: datetime, counter: int) -> str:
    """``segment_{YYYYMMDDTHH}_{NNNNN}.ndjson`` for a UTC hour and a never-repeating counter."""
    return f"segment_{hour.astimezone(UTC):%Y%m%dT%H}_{counter:05d}.ndjson"


@dataclass(frozen=True, order=True)
class SegmentId:
    hour: str
    counter: int

    @property
    def date(self) -> str:
        return f"{self.hour[0:4]}-{self.hour[4:6]}-{self.hour[6:8]}"

    @property
    def start(self) -> datetime:
        return datetime.strptime(self.hour, "%Y%m%dT%H").replace(tzinfo=UTC)


def parse_segment_name(name: str) -> SegmentId:
    base = name.rsplit("/", 1)[-1]
    m = SEGMENT_RE.match(base)
    if not m:
        raise ValueError(
            f"{name!r} is not a segment name (expected segment_YYYYMMDDTHH_NNNNN.ndjson)"
        )
    return SegmentId(m.group(1), int(m.group(2)))


def iter_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, line bytes without newline) for every non-empty line.

    A final line without newline is yielded too: the caller decides whether it is torn."""
    start = 0
    n = 0
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        n += 1
        line = data[start:end]
        if line.strip():
            yield n, line
        start = end + 1


def iter_segment(data: bytes) -> Iterator[Envelope]:
    """Envelopes of a sealed segment; raises EnvelopeError naming the bad line."""
    for n, line in iter_lines(data):
        try:
            yield parse_envelope(line)
        except EnvelopeError as exc:
            raise EnvelopeError(f"line {n}: {exc}") from None


def cut_torn_tail(data: bytes) -> tuple[bytes, int]:
    """Drop a last line that has no newline or does not parse. Returns (kept, bytes cut)."""
    if not data:
        return data, 0
    end = len(data)
    if not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
    kept = data[:end]
    # a line that has its newline but is still not a valid envelope can only be the last
    # one written when the kill landed between write() calls of a batch
    if kept:
        last_start = kept.rfind(b"\n", 0, len(kept) - 1) + 1
        try:
            parse_envelope(kept[last_start:-1])
        except EnvelopeError:
            kept = kept[:last_start]
    return kept, len(data) - len(kept)


def is_own_ctl(env: Envelope) -> bool:
    """True for the daemon's bookkeeping records (seal / recover), not part of any feed."""
    return (
        env.kind == "ctl"
        and isinstance(env.data, dict)
        and env.data.get("event")
        in (
            "seal",
            "recover",
        )
    )


class SegmentTailer:
    """Follows one source's segments while the daemon writes them (local storage).

    The "strategy reads the raw queue" use: ``poll()`` returns the complete lines appended since
    the last call, in write order, across rotations: when the active segment is sealed, the rest
    of it is read from ready/ and the tailer moves on to the next segment. By default it starts at
    the beginning of the segment that is active when it is created (``start_after`` = a segment
    name starts right after that segment instead). ``roots`` are the ingestion base dir and,
    if configured, the spill dir. Lines are bytes without the newline (``parse_envelope`` them).
    """

    def __init__(
        self,
        roots: str | Path | list[str | Path],
        source: str,
        names: Any = None,
        *,
        start_after: str | None = None,
    ) -> None:
        from fluxforge.config import PathNames

        names = names or PathNames()
        root_list = roots if isinstance(roots, list) else [roots]
        self.roots = [Path(r) for r in root_list]
        self.source = source
        self._active = [r / names.raw_dir / names.active_subdir / source for r in self.roots]
        self._ready = [r / names.raw_dir / names.ready_subdir / source for r in self.roots]
        self.current: str | None = None
        self._dir = 0
        self._offset = 0
        self._partial = b""
        self.missed: list[str] = []  # segments claimed by someone before we finished them
        if start_after is not None:
            self._last = parse_segment_name(start_after).counter
        else:
            active = self._active_segments()
            self._last = active[0][0] - 1 if active else self._highest_ready()

    def _list(self, dirs: list[Path]) -> list[tuple[int, int, str]]:
        out = []
        for i, d in enumerate(dirs):
            if not d.is_dir():
                continue
            for entry in d.iterdir():
                m = SEGMENT_RE.match(entry.name)
                if m:
                    out.append((int(m.group(2)), i, entry.name))
        return sorted(out)

    def _active_segments(self) -> list[tuple[int, int, str]]:
        return self._list(self._active)

    def _highest_ready(self) -> int:
        ready = self._list(self._ready)
        return ready[-1][0] if ready else 0

    def _read_from(self, path: Path) -> bytes | None:
        try:
            with path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return None
        self._offset += len(data)
        return data

    def _take(self, data: bytes, out: list[bytes], final: bool) -> None:
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        out.extend(line for line in data[:end].split(b"\n") if line)
        if final and self._partial.strip():
            out.append(self._partial)
        if final:
            self._partial = b""

    def poll(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            if self.current is None:
                nxt = [s for s in self._active_segments() if s[0] > self._last]
                if not nxt:
                    # sealed before we ever saw it active (fast rotation): take it from ready/
                    nxt = [s for s in self._list(self._ready) if s[0] > self._last]
                if not nxt:
                    return out
                _, self._dir, self.current = nxt[0]
                self._offset = 0
                self._partial = b""
            name = self.current
            data = self._read_from(self._active[self._dir] / name)
            if data is not None:
                self._take(data, out, final=False)
                if (self._active[self._dir] / name).exists():
                    return out
            # sealed: the rest of it is in ready/ (same bytes, renamed)
            rest = self._read_from(self._ready[self._dir] / name)
            if rest is None:
                self.missed.append(name)
                rest = b""
            self._take(rest, out, final=True)
            self._last = parse_segment_name(name).counter
            self.current = None

    def follow(
        self, stop: Callable[[], bool] | None = None, interval_s: float = 0.005
    ) -> Iterator[Envelope]:
        """Envelopes as they are written, until `stop()` returns True."""
        import time

        while not (stop and stop()):
            lines = self.poll()
            if not lines:
                time.sleep(interval_s)
                continue
            for line in lines:
                yield parse_envelope(line)
