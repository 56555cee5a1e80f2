"""BookMessages of the real captures, through the venue normalizers (``venues.normalize``),
grouped by symbol in receive order (websocket and REST files merged by receive time)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson

from fluxforge import venues
from fluxforge.captures import exchange_from_filename, merge_captures
from fluxforge.events import BookMessage, EventSink, TopOfBook
from fluxforge.segments import Envelope

Books = dict[str, list[BookMessage]]


def _sink(files: list[Path]) -> EventSink:
    sink = EventSink()
    for seq, rec in enumerate(merge_captures(files), 1):
        if rec.kind not in ("recv", "rest"):
            continue
        kind = "msg" if rec.kind == "recv" else "rest"
        env = Envelope(
            rec.ts,
            "test",
            exchange_from_filename(rec.file),
            seq,
            kind,
            orjson.loads(rec.payload),
            rec.url,
        )
        venues.normalize(env, sink)
    return sink


def _by_symbol(sink: EventSink) -> Books:
    out: Books = defaultdict(list)
    for m in sink.books:
        out[m.symbol].append(m)
    return dict(out)


def kraken(captures: Path) -> Books:
    return _by_symbol(_sink([captures / "KRAKEN" / "KRAKEN.ws.50.0"]))


def okx_like(captures: Path, folder: str, file: str) -> Books:
    return _by_symbol(_sink([captures / folder / file]))


def binance_futures(captures: Path) -> tuple[Books, dict[str, list[TopOfBook]]]:
    sink = _sink(sorted((captures / "BINANCE_FUTURES").glob("*.*.*")))
    tops: dict[str, list[TopOfBook]] = defaultdict(list)
    for t in sink.tops:
        tops[t.symbol].append(t)
    return _by_symbol(sink), dict(tops)


def coinbase(captures: Path) -> Books:
    return _by_symbol(_sink([captures / "COINBASE" / "COINBASE.ws.28.0"]))
