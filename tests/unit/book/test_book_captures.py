"""The book engine replayed over the real exchange captures: every venue integrity rule holds
message by message (figures from ../shared/data/README.md "Integrity rules")."""

from __future__ import annotations

import bisect
from decimal import Decimal
from pathlib import Path

import capture_books as cb
import pytest

from fluxforge.book import BookEngine, BookOutput, BookStats


def _run(books: dict, **kw) -> tuple[BookStats, dict[str, BookOutput]]:
    total = BookStats()
    outs = {}
    for sym, msgs in books.items():
        out = BookEngine(msgs[0].exchange, sym, **kw).apply(msgs)
        total.add(out.stats)
        outs[sym] = out
    return total, outs


def test_book_kraken_capture_every_checksum_matches(captures: Path) -> None:
    stats, outs = _run(cb.kraken(captures))
    assert stats.checksums_verified == 2595
    assert stats.checksum_mismatches == 0
    assert stats.gaps == 0
    assert stats.book_updates == 2595 + 5
    assert all(o.gaps.num_rows == 0 for o in outs.values())


def test_book_okx_capture_every_checksum_matches(captures: Path) -> None:
    stats, _ = _run(cb.okx_like(captures, "OKX", "OKX.ws.1.0"))
    assert (stats.checksums_verified, stats.checksum_mismatches) == (98, 0)


def test_book_bitget_capture_every_checksum_matches(captures: Path) -> None:
    stats, _ = _run(cb.okx_like(captures, "BITGET", "BITGET.ws.2.0"))
    assert (stats.checksums_verified, stats.checksum_mismatches) == (194, 0)


def test_book_binance_futures_capture_chain_bridged_and_unbroken(captures: Path) -> None:
    books, _ = cb.binance_futures(captures)
    stats, outs = _run(books)
    assert stats.dropped_presync == 12
    assert stats.bridges == 4
    assert stats.chain_links_verified == 748 + 4  # pu links + the snapshot bridges
    assert stats.chain_breaks == 0
    assert stats.gaps == 0
    # every applied depth event (and the REST snapshot) yields rows in the first epoch
    for out in outs.values():
        assert set(out.deltas.column("book_epoch").to_pylist()) == {1}


def test_book_binance_futures_top_of_book_equals_book_ticker(captures: Path) -> None:
    books, tickers = cb.binance_futures(captures)
    compared = agreed = 0
    for sym, msgs in books.items():
        out = BookEngine("binanceusdm", sym).apply(msgs)
        snap = next(m for m in msgs if m.from_rest)
        assert out.tops[0][:2] == (snap.ts_recv, snap.final_id)  # the REST snapshot
        last_update_id = snap.final_id
        tks = sorted(
            (t for t in tickers[sym] if t.update_id >= last_update_id), key=lambda t: t.update_id
        )
        ids = [t.update_id for t in tks]
        for _ts, u, bpx, bsz, apx, asz in out.tops[1:]:
            k = bisect.bisect_right(ids, u) - 1
            if k < 0:
                continue
            t = tks[k]
            compared += 1
            agreed += (bpx, bsz, apx, asz) == (t.bid_px, t.bid_sz, t.ask_px, t.ask_sz)
    assert (compared, agreed) == (731, 731)


def test_book_coinbase_capture_never_crossed_after_update(captures: Path) -> None:
    stats, outs = _run(cb.coinbase(captures))
    assert stats.book_updates == 9719 + 10
    assert stats.crossed == 0
    checked = 0
    for out in outs.values():
        for _ts, _u, bpx, _bsz, apx, _asz in out.tops[1:]:
            checked += 1
            assert Decimal(bpx) < Decimal(apx)
    assert checked == 9719


@pytest.mark.parametrize("venue", ["kraken", "okx", "coinbase"])
def test_book_capture_snapshot_rows_equal_book_strings(captures: Path, venue: str) -> None:
    books = {
        "kraken": lambda: cb.kraken(captures),
        "okx": lambda: cb.okx_like(captures, "OKX", "OKX.ws.1.0"),
        "coinbase": lambda: cb.coinbase(captures),
    }[venue]()
    sym, msgs = next(iter(books.items()))
    snap = msgs[0]
    out = BookEngine(snap.exchange, sym, depth=25).apply(msgs[:1])
    row = out.snapshots.to_pylist()[0]
    assert row["reason"] == "sod"
    best_bids = sorted(snap.bids, key=lambda lv: -Decimal(lv[0]))[:25]
    best_asks = sorted(snap.asks, key=lambda lv: Decimal(lv[0]))[:25]
    assert row["bid_px"] == [Decimal(p) for p, _ in best_bids]
    assert row["bid_sz"] == [Decimal(s) for _, s in best_bids]
    assert row["ask_px"] == [Decimal(p) for p, _ in best_asks]
    assert row["ask_sz"] == [Decimal(s) for _, s in best_asks]
