"""Reader for cryptofeed raw captures (``../shared/data/captures``, see its README).

Record kinds::

    <url> <-> <ts>             connection opened            -> kind "open"
    <url> <- <ts>: <json>      message sent by the client   -> kind "sent"
    <url> -> <ts>: <json>      REST call and response body  -> kind "rest"
    <ts>: <json>               websocket frame received     -> kind "recv"
    configuration: <json>      recorder configuration       -> kind "config"
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LINE_RE = re.compile(rb"^(?:(\S+) (<->|<-|->) )?(\d+(?:\.\d+)?)(?:: (.*))?$", re.DOTALL)
_ARROWS = {b"<->": "open", b"<-": "sent", b"->": "rest"}

# capture file stem -> FluxForge exchange id
EXCHANGE_IDS = {
    "BINANCE_FUTURES": "binanceusdm",
    "BINANCE_DELIVERY": "binancecoinm",
    "BINANCE_US": "binanceus",
    "BINANCE": "binance",
    "COINBASE": "coinbase",
    "KRAKEN": "kraken",
    "KRAKEN_FUTURES": "krakenfutures",
    "OKX": "okx",
    "OKEX": "okx",
    "BITGET": "bitget",
}


class CaptureFormatError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    kind: str  # open | sent | rest | recv | config
    ts: int  # receive time, ns since epoch (0 for config)
    url: str | None
    payload: bytes  # JSON bytes verbatim (b"" for open)
    file: str
    line_no: int


def seconds_to_ns(text: str | bytes) -> int:
    """Exact decimal seconds -> integer ns (no float rounding)."""
    s = text.decode() if isinstance(text, bytes) else text
    whole, _, frac = s.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])


def exchange_from_filename(name: str) -> str:
    """``BINANCE_FUTURES.ws.1.0`` -> ``binanceusdm``; unknown stems are lower-cased."""
    stem = Path(name).name.split(".", 1)[0].upper()
    return EXCHANGE_IDS.get(stem, stem.lower())


def parse_capture_line(line: bytes, file: str = "", line_no: int = 0) -> CaptureRecord | None:
    """One record, or None for blank lines. Raises CaptureFormatError on anything else."""
    line = line.rstrip(b"\r\n")
    if not line.strip():
        return None
    if line.startswith(b"configuration: "):
        return CaptureRecord("config", 0, None, line[15:], file, line_no)
    m = LINE_RE.match(line)
    if not m:
        raise CaptureFormatError(f"{file}:{line_no}: not a capture record: {line[:80]!r}")
    url, arrow, ts, payload = m.groups()
    kind = _ARROWS[arrow] if arrow else "recv"
    return CaptureRecord(
        kind,
        seconds_to_ns(ts),
        url.decode() if url else None,
        payload or b"",
        file,
        line_no,
    )


def read_capture(path: str | Path) -> Iterator[CaptureRecord]:
    path = Path(path)
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            rec = parse_capture_line(line, path.name, n)
            if rec is not None:
                yield rec


def recording_key(path: str | Path) -> str:
    """Files of one recording share the exchange stem and counter: ``X.ws.N.0``/``X.http.N.0``
    belong to ``X``; we merge everything of one exchange stem in receive-time order."""
    return Path(path).name.split(".", 1)[0]


def merge_captures(paths: Iterable[str | Path]) -> Iterator[CaptureRecord]:
    """Records of several files merged by receive time (stable: file order breaks ties).

    Config records (ts 0) come first; within a file the original order is kept."""
    iters = [read_capture(p) for p in sorted(Path(p) for p in paths)]
    yield from heapq.merge(*iters, key=lambda r: r.ts)
