"""Shapes the captures lack, built from the venues' documentation (tests/fixtures/doc_shapes.py):
the scanners take every book, trade and quote shape on the fast path, and the result equals the
per-line path's."""

from __future__ import annotations

import re

import pytest

from fluxforge.demux import demux_segment
from tests.fixtures import doc_shapes
from tests.unit.demux_compare import assert_same, both_paths

# shapes with no scanner (none left): the per-line path would take them, with the same result
PER_LINE_SHAPES: set[tuple[str, str]] = set()


def _left_to_per_line(venue: str, line: bytes) -> bool:
    return any(v == venue and key.encode() in line for v, key in PER_LINE_SHAPES)


@pytest.mark.parametrize("venue", doc_shapes.VENUES)
def test_doc_shapes_every_book_trade_and_quote_line_takes_the_fast_path(venue: str) -> None:
    for line in doc_shapes.lines(venue):
        res = demux_segment(line, doc_shapes.SEGMENT, fast=True)
        assert res.quarantined == 0, res.quarantine.column("reason").to_pylist()
        assert res.lines_in == 1
        want = 1 if _left_to_per_line(venue, line) else 0
        assert res.per_line == want, line[:200]


@pytest.mark.parametrize("venue", [*doc_shapes.VENUES, None])
def test_doc_shapes_fast_path_equals_per_line_path(
    venue: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = doc_shapes.segment(0.05, venue)
    fast, slow = both_paths(data, monkeypatch, doc_shapes.SEGMENT)
    assert fast.lines_in > 20 and fast.quarantined == 0
    assert_same(fast, slow)


def test_binance_frame_without_event_time_takes_the_receive_time_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule lives once (``binance.event_time``): a spot bookTicker has no ``E``, so its
    quote's event time is the receive time, from the scanner and from the per-line path."""
    line = next(x for x in doc_shapes.lines("binance") if b"bnbusdt@bookTicker" in x)
    assert b'"E"' not in line
    fast, slow = both_paths(line, monkeypatch, doc_shapes.SEGMENT)
    assert fast.per_line == 0 and slow.per_line == 1
    for res in (fast, slow):
        rows = res.quotes.select(["ts_event", "ts_recv"]).to_pylist()
        assert rows == [
            {"ts_event": 1_700_000_000_000_040_000, "ts_recv": 1_700_000_000_000_040_000}
        ]


@pytest.mark.parametrize("update_time", ["2023-11-14T22:13:21.500000Z", "1970-01-01T00:00:00Z"])
def test_coinbase_book_event_time_rule_same_on_both_paths(
    update_time: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule lives once (``coinbase.book_event_time``): an Advanced Trade book event takes
    its updates' latest time, else (epoch times only) the message timestamp, on both paths."""
    line = next(x for x in doc_shapes.lines("coinbase") if b'"l2_data"' in x)
    line = line.replace(
        b'"event_time":"2023-11-14T22:13:20.000000Z"', f'"event_time":"{update_time}"'.encode()
    )
    fast, slow = both_paths(line, monkeypatch, doc_shapes.SEGMENT)
    assert fast.per_line == 0 and fast.quarantined == 0
    assert_same(fast, slow)
    (_ln, msg), *_ = slow.books_by_instrument_all()
    want = (
        1_700_000_001_500_000_000 if update_time.startswith("2023") else 1_700_000_000_000_000_000
    )
    assert msg.ts_event == want


def test_bitget_ticker_without_time_takes_the_receive_time_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule lives once (``bitget.ticker_event_time``): a ticker with neither ``systemTime``
    nor ``ts`` takes the receive time, from the scanner and from the per-line path."""
    line = next(x for x in doc_shapes.lines("bitget") if b'"systemTime"' in x)
    line = re.sub(rb',"systemTime":\d+', b"", line)
    assert b'"systemTime"' not in line
    fast, slow = both_paths(line, monkeypatch, doc_shapes.SEGMENT)
    assert fast.per_line == 0 and fast.quarantined == 0 and slow.per_line == 1
    assert_same(fast, slow)
    for res in (fast, slow):
        (row,) = res.quotes.select(["ts_event", "ts_recv"]).to_pylist()
        assert row["ts_event"] == row["ts_recv"]


def test_coinbase_exchange_ticker_and_snapshot_take_the_receive_time_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rule lives once (``coinbase.event_time``): an Exchange ticker without ``time`` and
    an Exchange snapshot (no time) take the receive time, from the scanner and per line."""
    ticker = next(x for x in doc_shapes.lines("coinbase") if b'"type":"ticker"' in x)
    ticker = re.sub(rb',"time":"[^"]*"', b"", ticker)
    assert b'"time"' not in ticker
    snap = next(x for x in doc_shapes.lines("coinbase") if b'"type":"snapshot"' in x)
    fast, slow = both_paths(ticker + b"\n" + snap, monkeypatch, doc_shapes.SEGMENT)
    assert fast.per_line == 0 and fast.quarantined == 0 and slow.per_line == 2
    assert_same(fast, slow)
    for res in (fast, slow):
        (row,) = res.quotes.select(["ts_event", "ts_recv"]).to_pylist()
        assert row["ts_event"] == row["ts_recv"]
        (_ln, msg), *_ = res.books_by_instrument_all()
        assert msg.ts_event == msg.ts_recv


@pytest.mark.parametrize("venue", ["okx", "bitget"])
@pytest.mark.parametrize("action", [None, "snapshot", "update", "delete"])
def test_okx_bitget_action_words_same_on_both_paths(
    venue: str, action: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The words live once (``okx.ACTIONS``): a full-depth ``books`` push is an update only
    with "update", a snapshot with "snapshot" or no action, and another word is quarantined,
    by the scanner and by the per-line path."""
    line = next(x for x in doc_shapes.lines(venue) if b'"action":"update"' in x)
    assert b'"channel":"books"' in line
    new = b"" if action is None else f'"action":"{action}",'.encode()
    line = line.replace(b'"action":"update",', new)
    fast, slow = both_paths(line, monkeypatch, doc_shapes.SEGMENT)
    assert_same(fast, slow)
    if action == "delete":
        assert fast.quarantined == slow.quarantined == 1
        return
    assert fast.per_line == 0 and fast.quarantined == 0
    for res in (fast, slow):
        (_ln, msg), *_ = res.books_by_instrument_all()
        assert msg.is_snapshot == (action != "update")


@pytest.mark.parametrize("channel", ["books", "books1", "books5", "books15"])
def test_bitget_top_n_channel_is_always_a_snapshot_on_both_paths(
    channel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule lives once (``bitget.book_is_snapshot``): an "update" push on a ``booksN``
    channel is still a whole top-N snapshot; on ``books`` it is an update, on both paths."""
    line = next(x for x in doc_shapes.lines("bitget") if b'"action":"update"' in x)
    line = line.replace(b'"channel":"books"', f'"channel":"{channel}"'.encode())
    fast, slow = both_paths(line, monkeypatch, doc_shapes.SEGMENT)
    assert fast.per_line == 0 and fast.quarantined == 0
    assert_same(fast, slow)
    for res in (fast, slow):
        (_ln, msg), *_ = res.books_by_instrument_all()
        assert msg.is_snapshot == (channel != "books")


def test_kraken_v1_control_event_is_control_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A v1 control event (``kraken.CONTROL_EVENTS``) is control from the scanner too, with
    plain keys beside it (tests/unit/test_demux_kraken_control.py has more); another word or
    a repeated key is left to the per-line path."""
    from fluxforge.segments import encode_envelope

    payloads = [
        b'{"event":"heartbeat"}', b'{"event":"pong"}', b'{ "event" : "heartbeat" }',
        b'{"event":"heartbeat","reqid":1}', b'{"event":"heartbeats"}', b'{"event":1}',
        b'{"reqid":1,"event":"pong"}', b'{"event":"heartbeat","event":"pong"}',
    ]  # fmt: skip
    lines = [
        encode_envelope(1_700_000_000_000_000_000 + i, "docs", "kraken", i, "msg", p, None)
        for i, p in enumerate(payloads)
    ]
    fast, slow = both_paths(b"".join(lines), monkeypatch, doc_shapes.SEGMENT)
    assert_same(fast, slow)
    assert fast.per_line == 3  # the first four and the seventh: control from the scanner
    assert slow.control == 6 and slow.quarantined == 2  # (a repeated key: the last wins)
