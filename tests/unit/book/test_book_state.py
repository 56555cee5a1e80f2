"""Segment-boundary invariance: one apply() over everything equals a chain of engines linked
through state(), byte for byte, wherever the stream is cut."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import capture_books as cb
import pyarrow as pa
import pytest

from fluxforge.book import BookEngine, BookStats
from fluxforge.events import BookMessage


def _chained(exchange: str, symbol: str, msgs: list[BookMessage], cuts: list[int], **kw):
    outs = []
    state = None
    bounds = [0, *cuts, len(msgs)]
    for a, b in itertools.pairwise(bounds):
        engine = BookEngine(exchange, symbol, state=state, **kw)
        outs.append(engine.apply(msgs[a:b]))
        state = engine.state()
    return outs, state


def _assert_same(exchange: str, symbol: str, msgs: list[BookMessage], cuts: list[int]) -> None:
    whole_engine = BookEngine(exchange, symbol, depth=20, snapshot_interval_ns=5_000_000_000)
    whole = whole_engine.apply(msgs)
    parts, state = _chained(
        exchange, symbol, msgs, cuts, depth=20, snapshot_interval_ns=5_000_000_000
    )
    for name in ("deltas", "snapshots", "gaps"):
        joined = pa.concat_tables([getattr(p, name) for p in parts])
        assert joined.equals(getattr(whole, name)), name
    assert [t for p in parts for t in p.tops] == whole.tops
    total = BookStats()
    for p in parts:
        total.add(p.stats)
    assert total == whole.stats
    assert state == whole_engine.state()
    assert whole.snapshots.num_rows > 1  # the short interval makes periodic rows to compare


@pytest.mark.parametrize("venue", ["kraken", "okx", "bitget", "binance", "coinbase"])
def test_book_split_anywhere_equals_one_pass(captures: Path, venue: str) -> None:
    books = {
        "kraken": lambda: cb.kraken(captures),
        "okx": lambda: cb.okx_like(captures, "OKX", "OKX.ws.1.0"),
        "bitget": lambda: cb.okx_like(captures, "BITGET", "BITGET.ws.2.0"),
        "binance": lambda: cb.binance_futures(captures)[0],
        "coinbase": lambda: cb.coinbase(captures),
    }[venue]()
    sym, msgs = max(books.items(), key=lambda kv: len(kv[1]))
    n = len(msgs)
    for cuts in ([1], [2, 3, 5, 8, n // 2], [n // 3, 2 * n // 3, n - 1]):
        _assert_same(msgs[0].exchange, sym, msgs, cuts)


def test_book_split_around_a_gap_equals_one_pass(captures: Path) -> None:
    msgs = cb.kraken(captures)["SC-EUR"]
    bad = dataclasses.replace(msgs[50], checksum=(msgs[50].checksum or 0) + 1)
    later = [
        dataclasses.replace(m, ts_recv=m.ts_recv + 10**11, ts_event=m.ts_event + 10**11)
        for m in msgs[:40]
    ]
    stream = [*msgs[:50], bad, *msgs[51:60], *later]
    for cuts in ([50], [51], [49, 52, 60, 61], [10, 70]):
        _assert_same("kraken", "SC-EUR", stream, cuts)


def test_book_state_bytes_are_deterministic(captures: Path) -> None:
    msgs = cb.coinbase(captures)["SKL-USD"]
    a = BookEngine("coinbase", "SKL-USD")
    a.apply(msgs)
    b = BookEngine("coinbase", "SKL-USD")
    for i in range(0, len(msgs), 97):
        b.apply(msgs[i : i + 97])
    assert a.state() == b.state()
    assert BookEngine("coinbase", "SKL-USD", state=a.state()).state() == a.state()
