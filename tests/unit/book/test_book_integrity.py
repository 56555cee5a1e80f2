"""Gaps never go silent: an altered level, a missing update or a reconnect ends the epoch,
writes a gap row, and the book only comes back at the next exchange snapshot."""

from __future__ import annotations

import dataclasses
import zlib
from decimal import Decimal
from pathlib import Path

import capture_books as cb
import pytest

from fluxforge.book import BookEngine, BookInputError, BookStateError
from fluxforge.events import CHECKSUM_KRAKEN, BookMessage

SHIFT = 10**12  # ns added to the re-sent snapshot and its updates


def _shifted(msgs: list[BookMessage]) -> list[BookMessage]:
    return [
        dataclasses.replace(m, ts_event=m.ts_event + SHIFT, ts_recv=m.ts_recv + SHIFT) for m in msgs
    ]


def _altered(msg: BookMessage) -> BookMessage:
    """One price level moved by one unit of its last decimal place, same string shape."""
    side = "bids" if msg.bids else "asks"
    levels = list(getattr(msg, side))
    px, sz = levels[0]
    digits = px.replace(".", "")
    bumped = str(int(digits) + 1).rjust(len(digits), "0")
    dot = px.find(".")
    new_px = (
        bumped
        if dot < 0
        else bumped[: len(bumped) - (len(px) - dot - 1)]
        + "."
        + bumped[len(bumped) - (len(px) - dot - 1) :]
    )
    assert Decimal(new_px) != Decimal(px)
    levels[0] = (new_px, sz)
    return dataclasses.replace(msg, **{side: levels})


@pytest.fixture(scope="module")
def kraken_xmr(captures: Path) -> list[BookMessage]:
    return cb.kraken(captures)["XMR-USD"]


def test_book_altered_level_mismatch_ends_epoch_until_next_snapshot(
    kraken_xmr: list[BookMessage],
) -> None:
    snap, ups = kraken_xmr[0], kraken_xmr[1:]
    k = 100
    stream = [snap, *ups[:k], _altered(ups[k]), *ups[k + 1 : k + 21]]
    stream += _shifted([snap, *ups[:30]])
    out = BookEngine("kraken", "XMR-USD", segment="seg1").apply(stream)

    assert out.stats.checksum_mismatches == 1
    assert out.stats.checksums_verified == k + 30
    assert out.stats.dropped_presync == 20
    gaps = out.gaps.to_pylist()
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap["cause"] == "checksum_mismatch"
    assert gap["book_epoch"] == 1
    assert gap["ts_from"] == ups[k - 1].ts_recv
    assert gap["ts_to"] == ups[k].ts_recv
    assert gap["segment"] == "seg1"
    # nothing is written for the bad message and the dropped ones; epoch 2 starts at the snapshot
    deltas = out.deltas
    ts = deltas.column("ts_recv").to_pylist()
    epochs = deltas.column("book_epoch").to_pylist()
    bad_window = {m.ts_recv for m in ups[k : k + 21]}
    assert not bad_window & set(ts)
    assert {e for t, e in zip(ts, epochs, strict=True) if t < ups[k].ts_recv} == {1}
    assert {e for t, e in zip(ts, epochs, strict=True) if t > ups[k].ts_recv} == {2}
    assert len(out.tops) == 1 + k + 1 + 30
    reasons = out.snapshots.column("reason").to_pylist()
    assert reasons[-1] == "resync"
    assert out.snapshots.column("book_epoch").to_pylist()[-1] == 2
    assert out.snapshots.column("ts_recv").to_pylist()[-1] == snap.ts_recv + SHIFT


def test_book_binance_missing_update_breaks_chain(captures: Path) -> None:
    books, _ = cb.binance_futures(captures)
    msgs = books["SUSHI-USDT"]
    rest = next(i for i, m in enumerate(msgs) if m.from_rest)
    cut = rest + 20
    engine = BookEngine("binanceusdm", "SUSHI-USDT")
    out = engine.apply(msgs[:cut] + msgs[cut + 1 :])
    assert out.stats.chain_breaks == 1
    assert not engine.valid
    gap = out.gaps.to_pylist()[0]
    assert gap["cause"] == "chain_break"
    assert str(msgs[cut].final_id) in gap["detail"]  # expected pu = the missing u
    # 3 before the bridge (1 received before the snapshot and replayed after it, 2 older
    # than it); since the break every update, the one that revealed it included, is buffered
    # for the next REST snapshot
    assert out.stats.dropped_presync == 3
    after_break = len(msgs) - (cut + 1)
    assert (out.stats.buffered, engine.buffered) == (1 + after_break, after_break)
    # a fresh REST snapshot restores it: the buffer is replayed, older updates dropped, the
    # newest (u == lastUpdateId) bridges it; new epoch, resync row
    resnap = dataclasses.replace(
        msgs[rest], ts_recv=msgs[-1].ts_recv + 1, final_id=msgs[-1].final_id
    )
    more = BookEngine("binanceusdm", "SUSHI-USDT", state=engine.state()).apply([resnap])
    assert more.snapshots.column("reason").to_pylist() == ["resync"]
    assert more.snapshots.column("book_epoch").to_pylist() == [2]
    s = more.stats
    assert (s.dropped_presync, s.replayed, s.bridges, s.chain_breaks) == (after_break - 1, 1, 1, 0)


def test_book_reconnect_writes_gap_and_waits_for_snapshot(kraken_xmr: list[BookMessage]) -> None:
    snap, ups = kraken_xmr[0], kraken_xmr[1:]
    engine = BookEngine("kraken", "XMR-USD")
    first = engine.apply([snap, *ups[:10]])
    assert first.gaps.num_rows == 0
    engine.reconnect(ups[10].ts_recv, segment="s2")
    engine = BookEngine("kraken", "XMR-USD", state=engine.state())  # survives a checkpoint
    out = engine.apply([*ups[10:15], *_shifted([snap, *ups[:3]])])
    gap = out.gaps.to_pylist()
    assert [(g["cause"], g["book_epoch"], g["segment"]) for g in gap] == [("reconnect", 1, "s2")]
    assert gap[0]["ts_from"] == ups[9].ts_recv
    assert out.stats.dropped_presync == 5
    assert out.stats.gaps == 1
    assert out.snapshots.column("reason").to_pylist() == ["reconnect"]
    assert set(out.deltas.column("book_epoch").to_pylist()) == {2}


def test_book_bad_price_string_raises_naming_message() -> None:
    msg = BookMessage("x", "A-B", "AB", "book", 1, 1, 7, True, [("1.5", "abc")], [])
    with pytest.raises(BookInputError, match="price/size"):
        BookEngine("x", "A-B").apply([msg])


def test_book_state_for_other_symbol_is_rejected() -> None:
    state = BookEngine("x", "A-B").state()
    with pytest.raises(BookStateError, match="A-B"):
        BookEngine("x", "C-D", state=state)
    with pytest.raises(BookStateError, match="magic"):
        BookEngine("x", "A-B", state=b"garbage")


def test_book_message_for_other_symbol_is_rejected() -> None:
    msg = BookMessage("x", "C-D", "CD", "book", 1, 1, 1, True, [("1", "1")], [])
    with pytest.raises(ValueError, match="C-D"):
        BookEngine("x", "A-B").apply([msg])


def test_book_empty_apply_after_reconnect_delivers_gap_row(
    kraken_xmr: list[BookMessage],
) -> None:
    engine = BookEngine("kraken", "XMR-USD")
    engine.apply(kraken_xmr[:5])
    engine.reconnect(kraken_xmr[5].ts_recv)
    out = engine.apply([])
    assert out.gaps.column("cause").to_pylist() == ["reconnect"]
    assert (out.deltas.num_rows, out.snapshots.num_rows, out.stats.gaps) == (0, 0, 1)
    assert engine.apply([]).gaps.num_rows == 0  # delivered once


@pytest.mark.parametrize("px", ["nan", "inf", "-1"])
def test_book_non_finite_or_negative_price_raises_naming_message(px: str) -> None:
    ok = BookMessage("x", "A-B", "AB", "book", 1, 1, 1, True, [("1", "1")], [])
    bad = BookMessage("x", "A-B", "AB", "book", 2, 2, 2, False, [(px, "1")], [])
    with pytest.raises(BookInputError, match="book message 1"):
        BookEngine("x", "A-B").apply([ok, bad])


def test_book_binance_spot_chain_bridge_links_and_break() -> None:
    def ev(t: int, first: int, final: int, snap: bool = False) -> BookMessage:
        return BookMessage(
            "binance", "A-B", "AB", "depth", t, t, t, snap, [(f"{t}.5", "1")], [("999", "1")],
            first_id=first, final_id=final, chain="binance_spot", from_rest=snap,
        )  # fmt: skip

    msgs = [
        ev(1, 80, 89),  # before the snapshot: buffered, replayed after it, dropped (stale)
        ev(2, -1, 100, snap=True),  # REST snapshot, lastUpdateId 100
        ev(3, 90, 100),  # u <= lastUpdateId: dropped
        ev(4, 95, 105),  # U <= 101 <= u: the bridge
        ev(5, 106, 110),  # U == previous u + 1
        ev(6, 112, 115),  # 111 missing: break
        ev(7, 116, 120),  # buffered (with ev 6) until the next snapshot
    ]
    out = BookEngine("binance", "A-B").apply(msgs)
    s = out.stats
    assert (s.dropped_presync, s.bridges, s.chain_links_verified, s.chain_breaks) == (2, 1, 2, 1)
    assert s.buffered == 3
    assert [t[1] for t in out.tops] == [100, 105, 110]
    gap = out.gaps.to_pylist()[0]
    assert (gap["cause"], gap["channel"], gap["ts_from"], gap["ts_to"]) == (
        "chain_break", "depth", 5, 6,
    )  # fmt: skip
    assert "expected 111, got 112" in gap["detail"]


def test_book_value_too_large_for_lake_raises_state_untouched() -> None:
    engine = BookEngine("x", "A-B")
    engine.apply([BookMessage("x", "A-B", "AB", "book", 1, 1, 1, True, [("1", "1")], [])])
    before = engine.state()
    huge = BookMessage("x", "A-B", "AB", "book", 2, 2, 2, False, [("2", "1" + "0" * 26)], [])
    with pytest.raises(BookInputError, match="decimal"):
        engine.apply([huge])
    assert engine.state() == before


def test_book_gaps_of_one_apply_are_one_warning_and_every_ledger_row(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken feed (a chain break after every snapshot) writes a gap-ledger row per gap
    but one warning per apply: the first gap in full, then the count by cause."""

    def ev(t: int, first: int, final: int, snap: bool = False) -> BookMessage:
        return BookMessage(
            "binance", "A-B", "AB", "depth", t, t, t, snap, [(f"{t}.5", "1")], [("999", "1")],
            first_id=first, final_id=final, chain="binance_spot", from_rest=snap,
        )  # fmt: skip

    msgs = []
    for k in range(5):  # snapshot at 100k, its bridge, then a hole: a break each round
        base = 100 * (k + 1)
        t = 10 * k
        msgs += [
            ev(t + 1, -1, base, True),
            ev(t + 2, base, base + 5),
            ev(t + 3, base + 7, base + 9),
        ]
    with caplog.at_level("WARNING", logger="fluxforge.book.engine"):
        out = BookEngine("binance", "A-B").apply(msgs)
    assert out.stats.chain_breaks == 5
    assert [g["cause"] for g in out.gaps.to_pylist()] == ["chain_break"] * 5
    (record,) = [r for r in caplog.records if "epoch" in r.getMessage()]
    text = record.getMessage()
    assert "chain_break, epoch 1 ended (update id chain broken" in text
    assert "5 gaps in this batch (5 chain_break), epochs 1-5: see gap_ledger" in text

    caplog.clear()
    with caplog.at_level("WARNING", logger="fluxforge.book.engine"):
        BookEngine("binance", "A-B").apply(msgs[:3])  # one gap: its line alone, as before
    (record,) = [r for r in caplog.records if "epoch" in r.getMessage()]
    assert record.getMessage().endswith("expected 106, got 107)")


def _kraken_crc(bids: dict[str, str], asks: dict[str, str]) -> int:
    """Kraken's book checksum, written from its documentation: the top 10 asks (lowest
    first) then the top 10 bids (highest first), price then size, '.' dropped, then leading
    zeros dropped, CRC32."""

    def text(px: str, sz: str) -> str:
        return px.replace(".", "").lstrip("0") + sz.replace(".", "").lstrip("0")

    top_asks = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))[:10]
    top_bids = sorted(bids.items(), key=lambda kv: -Decimal(kv[0]))[:10]
    return zlib.crc32("".join(text(p, s) for p, s in [*top_asks, *top_bids]).encode())


def test_book_checksum_of_an_untouched_top_is_reused_only_while_the_top_is_unchanged() -> None:
    """An update deeper than the checksummed top keeps the venue's checksum: the kernel then
    compares with the last one it computed. Any change of the top (with or without a checksum
    in its message, an insert, a removal or a new size) must make it compute again."""
    bids = {f"{100 - k}.5": f"{k + 1}.25" for k in range(15)}
    asks = {f"{101 + k}.5": f"{k + 2}.75" for k in range(15)}

    def msg(t: int, b: list, a: list, snap: bool = False, ck: bool = True) -> BookMessage:
        for px, sz in b:
            bids.pop(px) if sz == "0" else bids.__setitem__(px, sz)
        for px, sz in a:
            asks.pop(px) if sz == "0" else asks.__setitem__(px, sz)
        return BookMessage(
            "kraken", "A-B", "A/B", "book-25", t, t, t, snap, b, a,
            checksum=_kraken_crc(bids, asks) if ck else None,
            checksum_kind=CHECKSUM_KRAKEN if ck else None,
        )  # fmt: skip

    stream = [
        msg(1, list(bids.items()), list(asks.items()), snap=True),
        msg(2, [("86.5", "9.5")], []),  # rank 14: the top unchanged
        msg(3, [], [("113.5", "0")]),  # removal at rank 12
        msg(4, [("100.5", "7")], [], ck=False),  # the best bid, no checksum in the message
        msg(5, [("87.5", "1")], []),  # rank 13, after the top changed without a checksum
        msg(6, [], [("110.5", "0")]),  # removal at rank 9: rank 10 comes into the top
        msg(7, [("91.75", "3")], []),  # insert at rank 9: rank 9 goes out of it
        msg(8, [("85.5", "2")], [("200.5", "1")]),  # deep on both sides
    ]
    out = BookEngine("kraken", "A-B").apply(stream)
    assert out.stats.checksum_mismatches == 0
    assert out.stats.checksums_verified == 7
    stale = dataclasses.replace(stream[4], checksum=stream[2].checksum)  # the top before msg 4
    out = BookEngine("kraken", "A-B").apply([*stream[:4], stale])
    assert out.stats.checksum_mismatches == 1
