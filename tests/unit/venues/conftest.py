"""Helpers for the venue normalizer tests: captures normalized once per session, fixtures."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from fluxforge import venues
from fluxforge.captures import CaptureRecord, exchange_from_filename, read_capture
from fluxforge.events import EventSink, NormalizeError
from fluxforge.segments import Envelope

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "venues"


@dataclass
class Normalized:
    """One capture folder run through ``venues.normalize``, line by line."""

    sink: EventSink
    classes: collections.Counter = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    records: list[tuple[CaptureRecord, str]] = field(default_factory=list)  # (record, class)

    def trade_rows(self) -> list[dict]:
        t = self.sink.trades
        return [dict(zip(t, row, strict=True)) for row in zip(*t.values(), strict=True)]

    def quote_rows(self) -> list[dict]:
        q = self.sink.quotes
        return [dict(zip(q, row, strict=True)) for row in zip(*q.values(), strict=True)]


def envelope(rec: CaptureRecord, ex: str, seq: int) -> Envelope:
    kind = "msg" if rec.kind == "recv" else "rest"
    return Envelope(rec.ts, "test", ex, seq, kind, orjson.loads(rec.payload), rec.url)


def normalize_folder(folder: Path) -> Normalized:
    out = Normalized(EventSink())
    seq = 0
    for path in sorted(folder.iterdir()):
        ex = exchange_from_filename(path.name)
        for rec in read_capture(path):
            if rec.kind not in ("recv", "rest"):
                continue
            seq += 1
            try:
                cls = venues.normalize(envelope(rec, ex, seq), out.sink)
            except NormalizeError as exc:
                out.errors.append(f"{path.name}:{rec.line_no}: {exc}")
                cls = "error"
            out.classes[cls] += 1
            out.records.append((rec, cls))
    return out


@pytest.fixture(scope="session")
def normalized(captures: Path) -> dict[str, Normalized]:
    return {d.name: normalize_folder(d) for d in sorted(captures.iterdir()) if d.is_dir()}


def fixture_envelopes(name: str) -> list[Envelope]:
    envs = []
    for seq, line in enumerate((FIXTURES / name).read_bytes().splitlines(), 1):
        obj = orjson.loads(line)
        envs.append(
            Envelope(obj["ts"], "test", obj["ex"], seq, obj["kind"], obj["data"], obj.get("url"))
        )
    return envs


def _run_fixture(name: str) -> tuple[EventSink, list[str]]:
    sink = EventSink()
    classes = [venues.normalize(env, sink) for env in fixture_envelopes(name)]
    return sink, classes


@pytest.fixture
def run_fixture():
    """``run_fixture("okx_misc.ndjson") -> (sink, [class per line])``."""
    return _run_fixture
