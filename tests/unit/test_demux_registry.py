"""A scanner reads the rows of its own exchange's lines only; ``ScanResult.in_segment`` turns
what it took back into the segment's lines."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fluxforge.demux.binance import FastTickers
from fluxforge.demux.fastbook import FastBook
from fluxforge.demux.registry import ScanResult


def _book(lines: list[int]) -> FastBook:
    n = len(lines)
    ints = np.arange(n, dtype=np.int64)
    return FastBook(
        exchange="x", symbol="A-B", venue_symbol="AB", channel="depth",
        line=np.asarray(lines, np.int64), ts_event=ints, ts_recv=ints, seq=ints,
        is_snapshot=np.zeros(n, bool), final_id=ints, level_offsets=np.zeros(n + 1, np.int64),
        side=np.zeros(0, np.uint8), arena=np.zeros(0, np.uint8),
        arena_offsets=np.zeros(1, np.int64), price_key=np.zeros(0), size_key=np.zeros(0),
    )  # fmt: skip


def _tickers(lines: list[int]) -> FastTickers:
    n = len(lines)
    ints = np.arange(n, dtype=np.int64)
    text = pa.array(["1"] * n, pa.string())
    return FastTickers(
        exchange="x", line=np.asarray(lines, np.int64), symbol=text, venue_symbol=text,
        update_id=ints, bid_px=text, bid_sz=text, ask_px=text, ask_sz=text, ts_event=ints,
        ts_recv=ints, seq=ints,
    )  # fmt: skip


def test_in_segment_maps_rows_to_the_segments_lines() -> None:
    lines = np.array([2, 5, 6, 9], np.int64)  # the exchange's lines among 11
    table = pa.table({"seq": [1, 2]})
    got = ScanResult(
        taken=np.array([True, False, True, True]),
        control=np.array([False, True, False, False]),
        books={("x", "A-B"): _book([1, 3])},  # line numbers: row + 1
        tickers=[_tickers([3])],
        trades=[(np.array([0, 2], np.int64), table)],
        quotes=[(np.array([3], np.int64), table)],
    ).in_segment(lines, 11)
    assert np.flatnonzero(got.taken).tolist() == [2, 6, 9]
    assert got.control is not None and np.flatnonzero(got.control).tolist() == [5]
    assert len(got.taken) == len(got.control) == 11
    assert got.books[("x", "A-B")].line.tolist() == [3, 7]  # lines 2 and 6, numbered from 1
    assert got.tickers[0].line.tolist() == [9]
    assert got.trades[0][0].tolist() == [2, 6] and got.trades[0][1] is table
    assert got.quotes[0][0].tolist() == [9]


def test_in_segment_keeps_no_control_mask_absent() -> None:
    got = ScanResult(taken=np.array([True])).in_segment(np.array([4], np.int64), 5)
    assert got.control is None
    assert np.flatnonzero(got.taken).tolist() == [4]
