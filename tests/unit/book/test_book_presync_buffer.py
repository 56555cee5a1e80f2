"""Binance's documented order-book procedure: buffer the depth events while waiting for the REST
snapshot, then drop / bridge / chain. The recorded REST snapshots happen to arrive before their
bridging events; here they are moved to arrive after them (as they usually do live), and the
engine's book is compared level by level with a reference built from Binance's rules."""

from __future__ import annotations

import dataclasses
import itertools
from decimal import Decimal
from pathlib import Path

import capture_books as cb
import pyarrow as pa
import pytest

from fluxforge.book import BookEngine, BookStateError, BookStats
from fluxforge.events import CHAIN_BINANCE_FUTURES, CHAIN_BINANCE_SPOT, BookMessage

LATER = 3  # depth events received after the bridging one and before the moved snapshot

Book = tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]


def _snapshot_late(msgs: list[BookMessage], later: int = LATER) -> tuple[list[BookMessage], int]:
    """The stream with the REST snapshot received after its bridging event and `later` more
    events (receive time just after the event before it, seq renumbered in the new receive
    order); returns (stream, index of the snapshot)."""
    rest = next(m for m in msgs if m.from_rest)
    events = [m for m in msgs if not m.from_rest]
    bridge = next(i for i, m in enumerate(events) if m.final_id >= rest.final_id)
    assert events[bridge].first_id <= rest.final_id  # the capture's bridging event
    at = bridge + 1 + later
    moved = dataclasses.replace(rest, ts_recv=events[at - 1].ts_recv + 1)
    stream = [*events[:at], moved, *events[at:]]
    return [dataclasses.replace(m, seq=i + 1) for i, m in enumerate(stream)], at


def _reference(snapshot: BookMessage, events: list[BookMessage]) -> Book:
    """Binance USD-M futures rules, independently: the REST snapshot, then the events in
    receive order: drop u < lastUpdateId, the first applied one must satisfy
    U <= lastUpdateId <= u, every later one pu == previous u; sizes absolute, 0 deletes."""
    bids = {Decimal(p): Decimal(s) for p, s in snapshot.bids}
    asks = {Decimal(p): Decimal(s) for p, s in snapshot.asks}
    last = snapshot.final_id
    bridged = False
    for e in events:
        if not bridged:
            if e.final_id < last:
                continue
            assert e.first_id <= last <= e.final_id, "reference: no bridge"
            bridged = True
        else:
            assert e.prev_id == last, "reference: chain break"
        last = e.final_id
        for side, levels in ((bids, e.bids), (asks, e.asks)):
            for p, s in levels:
                if Decimal(s) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(s)
    return bids, asks


def _as_book(levels: tuple[list[tuple[str, str]], list[tuple[str, str]]]) -> Book:
    bids, asks = levels
    return (
        {Decimal(p): Decimal(s) for p, s in bids},
        {Decimal(p): Decimal(s) for p, s in asks},
    )


def _ordered(book: Book) -> tuple[list, list]:
    bids, asks = book
    return sorted(bids.items(), reverse=True), sorted(asks.items())


@pytest.fixture(scope="module")
def futures(captures: Path) -> dict[str, list[BookMessage]]:
    return cb.binance_futures(captures)[0]


def test_book_presync_snapshot_after_bridge_bridges_and_equals_reference(futures) -> None:
    total = BookStats()
    for sym, msgs in futures.items():
        stream, at = _snapshot_late(msgs)
        snap = stream[at]
        engine = BookEngine("binanceusdm", sym)
        for k, msg in enumerate(stream):
            total.add(engine.apply([msg]).stats)
            if k < at:
                assert not engine.valid and engine.buffered == k + 1
                continue
            events = [m for m in stream[: k + 1] if not m.from_rest]
            assert _ordered(_as_book(engine.levels())) == _ordered(_reference(snap, events))
        assert engine.valid and engine.buffered == 0
    assert (total.chain_breaks, total.gaps, total.bridges) == (0, 0, 4)
    assert total.chain_links_verified == 748 + 4  # every pu link of the capture, as recorded
    assert total.dropped_presync == 12  # the capture's stale events, now dropped at replay
    assert total.replayed == 4 * (1 + LATER)  # each bridging event and the LATER after it


def test_book_presync_without_buffer_breaks_the_chain(futures) -> None:
    """The failure the buffer fixes: dropping what arrived before the snapshot."""
    stream, _ = _snapshot_late(futures["SUSHI-USDT"])
    out = BookEngine("binanceusdm", "SUSHI-USDT", presync_buffer=0).apply(stream)
    assert (out.stats.chain_breaks, out.stats.buffered) == (1, 0)
    assert out.gaps.column("cause").to_pylist() == ["chain_break"]


def test_book_presync_replayed_rows_sort_with_the_snapshot(futures) -> None:
    """Replayed updates carry the snapshot's ts_recv/seq (own ts_event/update_id); the
    rebuild's snapshot row is injected after the replay and shows the book after it, so the
    lake reader's rebuild (nearest snapshot row <= T, then deltas with a greater seq) equals
    the reference."""
    stream, at = _snapshot_late(futures["SUSHI-USDT"])
    snap = stream[at]
    out = BookEngine("binanceusdm", "SUSHI-USDT", depth=50).apply(stream)
    rows = out.deltas.to_pylist()
    replayed = [r for r in rows if not r["is_snapshot"] and r["seq"] == snap.seq]
    bridged = [m for m in stream[:at] if m.final_id >= snap.final_id]
    assert len(bridged) == 1 + LATER
    assert sorted({r["update_id"] for r in replayed}) == [m.final_id for m in bridged]
    assert {(r["ts_recv"], r["book_epoch"]) for r in replayed} == {(snap.ts_recv, 1)}
    assert {r["ts_event"] for r in replayed} == {m.ts_event for m in bridged}
    # receive order of the rows: the snapshot's levels, the replayed ones, then the live ones
    keys = [(r["ts_recv"], r["seq"]) for r in rows]
    assert keys == sorted(keys)
    assert rows[0]["is_snapshot"] and not any(
        r["is_snapshot"] for r in rows[len(snap.bids) + len(snap.asks) :]
    )

    first = out.snapshots.to_pylist()[0]
    assert (first["reason"], first["ts_recv"], first["seq"]) == ("sod", snap.ts_recv, snap.seq)
    assert (first["update_id"], first["ts_event"]) == (bridged[-1].final_id, bridged[-1].ts_event)
    after_replay = _ordered(_reference(snap, stream[:at]))
    assert list(zip(first["bid_px"], first["bid_sz"], strict=True)) == after_replay[0][:50]
    assert list(zip(first["ask_px"], first["ask_sz"], strict=True)) == after_replay[1][:50]

    # what fluxforge.query.Reader.book_at does, at the end of the stream
    snaps = out.snapshots.to_pylist()
    base = max(snaps, key=lambda r: (r["ts_recv"], r["seq"]))
    bids = dict(zip(base["bid_px"], base["bid_sz"], strict=True))
    asks = dict(zip(base["ask_px"], base["ask_sz"], strict=True))
    for r in sorted((r for r in rows if r["seq"] > base["seq"]), key=lambda r: r["seq"]):
        (bids if r["side"] == "bid" else asks)[r["price"]] = r["size"]
    ref_bids, ref_asks = _ordered(_reference(snap, [m for m in stream if not m.from_rest]))
    got_bids = sorted(((p, s) for p, s in bids.items() if s), reverse=True)
    got_asks = sorted((p, s) for p, s in asks.items() if s)
    assert got_bids[:10] == ref_bids[:10]
    assert got_asks[:10] == ref_asks[:10]


@pytest.mark.parametrize(
    ("limits", "kept"),
    [
        ({"presync_buffer": 2}, 2),  # the 2 newest updates
        ({"presync_window_ns": 1_000}, 1),  # 1 us: only the one received just before it
    ],
)
def test_book_presync_overflow_evicting_the_bridge_ends_in_a_gap(
    futures, limits: dict, kept: int
) -> None:
    stream, at = _snapshot_late(futures["SUSHI-USDT"])
    engine = BookEngine("binanceusdm", "SUSHI-USDT", **limits)
    out = engine.apply(stream[: at + 1])  # up to the snapshot
    s = out.stats
    assert (s.buffered, s.buffer_evicted) == (at + kept, at - kept)  # kept: replayed, re-held
    assert (s.chain_breaks, s.gaps, s.bridges, s.replayed) == (1, 1, 0, 0)
    gap = out.gaps.to_pylist()[0]
    assert gap["cause"] == "chain_break"
    assert gap["ts_to"] == stream[at].ts_recv  # found while replaying, at the snapshot
    evictions = f"{at - kept} updates buffered while waiting for the snapshot were evicted"
    assert evictions in gap["detail"]
    # never a silently wrong book: only the REST snapshot's own rows were written, and the
    # book waits (buffering again) for the next snapshot
    assert all(out.deltas.column("is_snapshot").to_pylist())
    assert (engine.valid, engine.buffered) == (False, kept)
    rest = engine.apply(stream[at + 1 :])
    assert (rest.deltas.num_rows, rest.gaps.num_rows, rest.stats.book_updates) == (0, 0, 0)


def _spot(t: int, first: int, final: int, snap: bool = False) -> BookMessage:
    return BookMessage(
        "binance", "A-B", "AB", "depth", t * 10, t * 10 + 1, t, snap,
        [(f"{t}.5", "1")], [("999", "0" if t % 2 else "2")],
        first_id=first, final_id=final, chain=CHAIN_BINANCE_SPOT, from_rest=snap,
    )  # fmt: skip


SPOT = [
    _spot(1, 80, 89),  # stale: dropped at replay
    _spot(2, 90, 100),  # u <= lastUpdateId: dropped (futures would bridge on it)
    _spot(3, 101, 105),  # U <= lastUpdateId + 1 <= u: the bridge
    _spot(4, 106, 110),  # U == previous u + 1
    dataclasses.replace(  # the REST snapshot, lastUpdateId 100, received late
        _spot(5, -1, 100, snap=True), bids=[("50", "1")], asks=[("1000", "1")]
    ),
    _spot(6, 111, 115),  # live again
    _spot(7, 116, 116),
]


def test_book_presync_spot_chain_replays_and_bridges() -> None:
    engine = BookEngine("binance", "A-B")
    out = engine.apply(SPOT)
    s = out.stats
    assert (s.buffered, s.replayed, s.dropped_presync, s.bridges) == (4, 2, 2, 1)
    assert (s.chain_links_verified, s.chain_breaks, s.gaps) == (4, 0, 0)
    assert [t[1] for t in out.tops] == [100, 105, 110, 115, 116]
    assert [t[0] for t in out.tops] == [51, 51, 51, 61, 71]  # replayed: the snapshot's ts_recv
    bids, asks = engine.levels()
    assert bids == [("50", "1"), ("7.5", "1"), ("6.5", "1"), ("4.5", "1"), ("3.5", "1")]
    assert asks == [("1000", "1")]  # 999: set by 4 (replayed) and 6, deleted by 7
    snaps = out.snapshots.to_pylist()
    assert [(r["reason"], r["update_id"], r["seq"]) for r in snaps] == [("sod", 110, 5)]


def test_book_presync_futures_bridges_on_u_equal_last_update_id() -> None:
    futures = [
        dataclasses.replace(m, chain=CHAIN_BINANCE_FUTURES, prev_id=p)
        for m, p in zip(SPOT, [79, 89, 100, 105, -1, 110, 115], strict=True)
    ]
    out = BookEngine("binance", "A-B").apply(futures)
    s = out.stats
    # futures keep u == lastUpdateId (event 2 bridges), so event 3 links on pu == 100
    assert (s.replayed, s.dropped_presync, s.bridges, s.chain_breaks) == (3, 1, 1, 0)


def test_book_presync_non_chain_venue_still_drops() -> None:
    msgs = [dataclasses.replace(m, chain=None, first_id=-1) for m in SPOT]
    out = BookEngine("binance", "A-B").apply(msgs)
    assert (out.stats.buffered, out.stats.dropped_presync, out.stats.book_updates) == (0, 4, 3)


def _assert_split_equals_whole(msgs: list[BookMessage], cuts: list[int], **kw) -> None:
    kw = {"depth": 20, "snapshot_interval_ns": 5_000_000_000, **kw}
    whole_engine = BookEngine(msgs[0].exchange, msgs[0].symbol, **kw)
    whole = whole_engine.apply(msgs)
    parts = []
    state = None
    for a, b in itertools.pairwise([0, *cuts, len(msgs)]):
        engine = BookEngine(msgs[0].exchange, msgs[0].symbol, state=state, **kw)
        parts.append(engine.apply(msgs[a:b]))
        state = engine.state()
    for name in ("deltas", "snapshots", "gaps"):
        joined = pa.concat_tables([getattr(p, name) for p in parts])
        assert joined.equals(getattr(whole, name)), (name, cuts)
    assert [t for p in parts for t in p.tops] == whole.tops
    total = BookStats()
    for p in parts:
        total.add(p.stats)
    assert total == whole.stats
    assert state == whole_engine.state()


@pytest.mark.parametrize("limits", [{}, {"presync_buffer": 2}, {"presync_window_ns": 10**8}])
def test_book_presync_split_with_snapshot_in_later_segment_equals_one_pass(
    futures, limits: dict
) -> None:
    stream, at = _snapshot_late(futures["SUSHI-USDT"])
    for cuts in ([1], [2, at], [at - 1], [1, 2, 3, at - 2, at + 1], [at + 1, at + 2]):
        _assert_split_equals_whole(stream, cuts, **limits)


def test_book_presync_spot_split_anywhere_equals_one_pass() -> None:
    for cut in range(1, len(SPOT)):
        _assert_split_equals_whole(SPOT, [cut])
    _assert_split_equals_whole(SPOT, list(range(1, len(SPOT))))


def test_book_presync_buffer_survives_a_checkpoint_byte_for_byte(futures) -> None:
    stream, at = _snapshot_late(futures["SUSHI-USDT"])
    engine = BookEngine("binanceusdm", "SUSHI-USDT", presync_buffer=3)
    engine.apply(stream[:at])
    state = engine.state()
    assert b'"buffer"' in state and b'"buffer_evicted":' in state
    again = BookEngine("binanceusdm", "SUSHI-USDT", presync_buffer=3, state=state)
    assert again.buffered == 3
    assert again.state() == state
    # an engine with nothing buffered writes the checkpoint as before the buffer existed
    assert b'"buffer' not in BookEngine("binanceusdm", "SUSHI-USDT").state()


def test_book_presync_corrupt_buffer_in_checkpoint_is_rejected(futures) -> None:
    stream, at = _snapshot_late(futures["SUSHI-USDT"])
    engine = BookEngine("binanceusdm", "SUSHI-USDT")
    engine.apply(stream[:at])
    state = engine.state()
    bad = state.replace(b'"chain":[1,', b'"chain":[1,1,')
    bad = (
        bad[:8]
        + (len(bad) - len(state) + int.from_bytes(state[8:12], "little")).to_bytes(4, "little")
        + bad[12:]
    )
    with pytest.raises(BookStateError, match="buffer"):
        BookEngine("binanceusdm", "SUSHI-USDT", state=bad)


def test_book_presync_reconnect_discards_the_buffer(futures) -> None:
    stream, at = _snapshot_late(futures["SUSHI-USDT"])
    engine = BookEngine("binanceusdm", "SUSHI-USDT")
    engine.apply(stream[:at])
    engine.reconnect(stream[at].ts_recv)
    engine = BookEngine("binanceusdm", "SUSHI-USDT", state=engine.state())
    assert engine.buffered == 0
    out = engine.apply(stream[at:])
    assert out.stats.dropped_presync >= at  # the discarded buffer, reported here
    assert out.gaps.column("cause").to_pylist()[0] == "reconnect"
    assert out.stats.chain_breaks == 1  # the bridge is gone with the buffer: a gap, not a guess


def test_book_presync_limits_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="presync_buffer"):
        BookEngine("x", "A-B", presync_buffer=-1)
    with pytest.raises(ValueError, match="presync_window_ns"):
        BookEngine("x", "A-B", presync_window_ns=-1)


def test_book_rest_snapshot_refetched_while_valid_is_skipped_if_not_newer(futures) -> None:
    """A REST snapshot re-fetched while the chain is intact (a client re-syncing on its own)
    and no newer than the last applied update would rewind the book: it is skipped and
    counted; the chain goes on unbroken and the book equals the reference."""
    msgs = futures["SUSHI-USDT"]
    rest = next(m for m in msgs if m.from_rest)
    events = [m for m in msgs if not m.from_rest and m.ts_recv > rest.ts_recv]
    assert len(events) > 20
    half = len(events) // 2
    again = dataclasses.replace(rest, ts_recv=events[half - 1].ts_recv + 1)
    stream = [rest, *events[:half], again, *events[half:]]
    stream = [dataclasses.replace(m, seq=i + 1) for i, m in enumerate(stream)]
    engine = BookEngine("binanceusdm", "SUSHI-USDT")
    out = engine.apply(stream)
    assert out.stats.stale_rest_snapshots == 1
    assert (out.stats.chain_breaks, out.stats.gaps, out.stats.bridges) == (0, 0, 1)
    assert _ordered(_as_book(engine.levels())) == _ordered(_reference(rest, events))
    # a newer REST snapshot still replaces the book (new epoch, bridged again)
    newer = dataclasses.replace(
        rest, ts_recv=events[-1].ts_recv + 1, final_id=events[-1].final_id + 1, seq=10**6
    )
    assert engine.apply([newer]).stats.stale_rest_snapshots == 0
