"""Venue normalizers on the real captures: record counts per type (as listed in
../shared/data/README.md), carried checksums and update ids, Coinbase consistency checks."""

from __future__ import annotations

import collections
import heapq
import re
import zlib
from decimal import Decimal

import orjson

from fluxforge.events import (
    CHAIN_BINANCE_FUTURES,
    CHECKSUM_KRAKEN,
    CHECKSUM_OKX,
    BookMessage,
)
from fluxforge.venues.common import iso_to_ns


def _book_counts(books: list[BookMessage]) -> tuple[collections.Counter, collections.Counter]:
    snaps = collections.Counter(b.venue_symbol for b in books if b.is_snapshot)
    updates = collections.Counter(b.venue_symbol for b in books if not b.is_snapshot)
    return snaps, updates


# ---------------------------------------------------------------- Coinbase


def test_coinbase_capture_counts_match_readme(normalized):
    run = normalized["COINBASE"]
    assert run.errors == []
    snaps, updates = _book_counts(run.sink.books)
    assert sum(snaps.values()) == 10 and set(snaps.values()) == {1}
    assert updates == {
        "SKL-USD": 2592,
        "DASH-BTC": 1925,
        "SKL-BTC": 1539,
        "BAND-BTC": 1005,
        "CRV-EUR": 670,
        "NMR-EUR": 665,
        "YFI-BTC": 487,
        "BAND-GBP": 471,
        "SKL-GBP": 289,
        "NU-GBP": 76,
    }
    assert len(run.sink.trades["trade_id"]) == 97 + 10  # match + last_match
    assert len(run.sink.quotes["last"]) == 107
    # 3 subscriptions acks + the /products REST response
    assert run.classes == {"data": 10 + 9719 + 107 + 107, "control": 4}


def test_coinbase_l2update_sides_map_buy_to_bid_and_sell_to_ask(normalized):
    run = normalized["COINBASE"]
    raw_sides = collections.Counter()
    for rec, _ in run.records:
        d = orjson.loads(rec.payload)
        if isinstance(d, dict) and d.get("type") == "l2update":
            raw_sides[d["changes"][0][0]] += 1
    updates = [b for b in run.sink.books if not b.is_snapshot]
    assert sum(len(b.bids) for b in updates) == raw_sides["buy"]
    assert sum(len(b.asks) for b in updates) == raw_sides["sell"]
    assert all(b.ts_event > 0 and b.ts_recv > 0 for b in updates)


def test_coinbase_ticker_equals_its_match_with_taker_side(normalized):
    """README check: each ticker equals the match/last_match of the same (product, sequence);
    the normalized trade side (taker) equals ticker.side, i.e. the opposite of match.side."""
    run = normalized["COINBASE"]
    matches, tickers = {}, []
    for rec, _ in run.records:
        d = orjson.loads(rec.payload)
        if not isinstance(d, dict):
            continue
        if d.get("type") in ("match", "last_match"):
            matches[(d["product_id"], d["sequence"])] = d
        elif d.get("type") == "ticker":
            tickers.append(d)
    trades = {(r["venue_symbol"], r["trade_id"]): r for r in run.trade_rows()}
    quotes = run.quote_rows()
    assert len(tickers) == len(quotes) == 107
    for tk, q in zip(tickers, quotes, strict=True):
        m = matches[(tk["product_id"], tk["sequence"])]
        assert m["side"] != tk["side"]  # maker side vs taker side on the wire
        row = trades[(tk["product_id"], str(tk["trade_id"]))]
        assert (row["price"], row["size"], row["side"]) == (
            tk["price"],
            tk["last_size"],
            tk["side"],
        )
        assert row["ts_event"] == q["ts_event"] == iso_to_ns(tk["time"], "time")
        assert (q["last"], q["bid_px"], q["ask_px"]) == (
            tk["price"],
            tk["best_bid"],
            tk["best_ask"],
        )


def test_coinbase_trade_ids_run_on_from_last_match_without_holes(normalized):
    per_product = collections.defaultdict(list)
    for row in normalized["COINBASE"].trade_rows():
        per_product[row["symbol"]].append(int(row["trade_id"]))
    assert len(per_product) == 10
    for ids in per_product.values():
        assert ids == list(range(ids[0], ids[0] + len(ids)))


# ---------------------------------------------------------------- Binance USD-M


def test_binance_capture_counts_match_readme(normalized):
    run = normalized["BINANCE_FUTURES"]
    assert run.errors == []
    books = run.sink.books
    ws = [b for b in books if not b.from_rest]
    rest = [b for b in books if b.from_rest]
    assert collections.Counter(b.venue_symbol for b in ws) == {
        "SUSHIUSDT": 255,
        "AKROUSDT": 189,
        "CTKUSDT": 185,
        "KEEPUSDT": 135,
    }
    assert all(not b.is_snapshot and b.prev_id >= 0 and b.first_id <= b.final_id for b in ws)
    assert len(rest) == 4 and all(b.is_snapshot for b in rest)
    assert {b.chain for b in books} == {CHAIN_BINANCE_FUTURES}
    tops = collections.Counter(t.symbol for t in run.sink.tops)
    assert tops == {"SUSHI-USDT": 305, "AKRO-USDT": 88, "CTK-USDT": 145, "KEEP-USDT": 75}
    assert len(run.sink.quotes["bid_px"]) == 613
    assert len(run.sink.trades["trade_id"]) == 91
    assert run.classes == {"data": 764 + 613 + 91 + 4, "control": 67 + 1}  # klines, exchangeInfo


def test_binance_rest_snapshot_carries_last_update_id(normalized):
    run = normalized["BINANCE_FUTURES"]
    expected = {}
    for rec, _ in run.records:
        if rec.kind == "rest" and "/depth?" in (rec.url or ""):
            sym = re.search(r"symbol=(\w+)", rec.url).group(1)
            expected[sym] = orjson.loads(rec.payload)["lastUpdateId"]
    got = {b.venue_symbol: b.final_id for b in run.sink.books if b.from_rest}
    assert got == expected and len(got) == 4


def test_binance_update_ids_chain_after_each_rest_snapshot(normalized):
    """The ids the normalizer carries let the documented rule hold on this file: 12 events
    before the snapshots, 4 bridges, 748 pu links."""
    books = normalized["BINANCE_FUTURES"].sink.books
    snapshot_id = {b.symbol: b.final_id for b in books if b.from_rest}
    dropped = bridged = links = 0
    last_u: dict[str, int] = {}
    for b in books:
        if b.from_rest:
            continue
        if b.final_id < snapshot_id[b.symbol]:
            dropped += 1
        elif b.symbol not in last_u:
            assert b.first_id <= snapshot_id[b.symbol] <= b.final_id
            bridged += 1
            last_u[b.symbol] = b.final_id
        else:
            assert b.prev_id == last_u[b.symbol]
            links += 1
            last_u[b.symbol] = b.final_id
    assert (dropped, bridged, links) == (12, 4, 748)


def test_binance_book_ticker_gives_quote_and_top_of_book(normalized):
    run = normalized["BINANCE_FUTURES"]
    quotes = run.quote_rows()
    assert len(quotes) == len(run.sink.tops)
    for q, t in zip(quotes, run.sink.tops, strict=True):
        assert (q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"]) == (
            t.bid_px,
            t.bid_sz,
            t.ask_px,
            t.ask_sz,
        )
        assert t.update_id > 0 and q["ts_recv"] == t.ts_recv


def test_binance_agg_trade_side_is_taker_side(normalized):
    run = normalized["BINANCE_FUTURES"]
    makers = []
    for rec, _ in run.records:
        d = orjson.loads(rec.payload)
        if d.get("data", {}).get("e") == "aggTrade":
            makers.append((str(d["data"]["a"]), d["data"]["m"]))
    rows = run.trade_rows()
    assert [(r["trade_id"], r["side"]) for r in rows] == [
        (a, "sell" if m else "buy") for a, m in makers
    ]


# ---------------------------------------------------------------- Kraken


def _kraken_crc(bids: dict, asks: dict) -> int:
    def f(x: str) -> str:
        return x.replace(".", "").lstrip("0")

    s = "".join(f(asks[p][0]) + f(asks[p][1]) for p in heapq.nsmallest(10, asks))
    s += "".join(f(bids[p][0]) + f(bids[p][1]) for p in heapq.nlargest(10, bids))
    return zlib.crc32(s.encode())


def _apply(side: dict, levels: list[tuple[str, str]]) -> None:
    for px, sz in levels:
        key = Decimal(px)
        if Decimal(sz) == 0:
            side.pop(key, None)
        else:
            side[key] = (px, sz)


def test_kraken_capture_counts_and_checksums(normalized):
    run = normalized["KRAKEN"]
    assert run.errors == []
    snaps, updates = _book_counts(run.sink.books)
    assert snaps == dict.fromkeys(("WAVES/EUR", "XMR/USD", "KSM/XBT", "GRT/ETH", "SC/EUR"), 1)
    assert updates == {
        "WAVES/EUR": 576,
        "XMR/USD": 846,
        "KSM/XBT": 335,
        "GRT/ETH": 20,
        "SC/EUR": 818,
    }
    ups = [b for b in run.sink.books if not b.is_snapshot]
    assert all(b.checksum_kind == CHECKSUM_KRAKEN and b.depth == 1000 for b in ups)
    raw_c = [int(c) for rec, _ in run.records for c in re.findall(rb'"c":"(\d+)"', rec.payload)]
    assert [b.checksum for b in ups] == raw_c and len(raw_c) == 2595
    # an independent book from the normalized levels reproduces every checksum
    books: dict[str, tuple[dict, dict]] = {}
    verified = 0
    for b in run.sink.books:
        if b.is_snapshot:
            books[b.symbol] = ({}, {})
        bids, asks = books[b.symbol]
        _apply(bids, b.bids)
        _apply(asks, b.asks)
        # Kraken leaves levels beyond the subscribed depth to the client to drop
        while len(bids) > b.depth:
            del bids[min(bids)]
        while len(asks) > b.depth:
            del asks[max(asks)]
        if b.checksum is not None:
            assert _kraken_crc(bids, asks) == b.checksum, (b.symbol, b.seq)
            verified += 1
    assert verified == 2595


def test_kraken_trades_tickers_and_symbols(normalized):
    run = normalized["KRAKEN"]
    raw_rows = 0
    for rec, _ in run.records:
        d = orjson.loads(rec.payload)
        if isinstance(d, list) and d[-2] == "trade":
            raw_rows += len(d[1])
    trades = run.trade_rows()
    assert len(trades) == raw_rows == 10
    assert {r["side"] for r in trades} <= {"buy", "sell"}
    assert len(run.sink.quotes["last"]) == 18
    assert "BTC-CHF" in set(run.sink.quotes["symbol"])  # XBT/CHF -> BTC-CHF
    syms = {b.symbol: b.venue_symbol for b in run.sink.books}
    assert syms["KSM-BTC"] == "KSM/XBT"


# ---------------------------------------------------------------- OKX and Bitget


def _okx_crc(bids: dict, asks: dict) -> int:
    top_b = [bids[p] for p in heapq.nlargest(25, bids)]
    top_a = [asks[p] for p in heapq.nsmallest(25, asks)]
    parts = []
    for i in range(25):
        if i < len(top_b):
            parts.append(f"{top_b[i][0]}:{top_b[i][1]}")
        if i < len(top_a):
            parts.append(f"{top_a[i][0]}:{top_a[i][1]}")
    crc = zlib.crc32(":".join(parts).encode())
    return crc - 2**32 if crc >= 2**31 else crc


def _verify_okx_style(books_in: list[BookMessage]) -> int:
    books: dict[str, tuple[dict, dict]] = {}
    verified = 0
    for b in books_in:
        if b.is_snapshot:
            books[b.symbol] = ({}, {})
        bids, asks = books[b.symbol]
        _apply(bids, b.bids)
        _apply(asks, b.asks)
        assert b.checksum_kind == CHECKSUM_OKX
        assert _okx_crc(bids, asks) == b.checksum, (b.symbol, b.seq)
        verified += 1
    return verified


def test_okx_capture_counts_and_checksums(normalized):
    run = normalized["OKX"]
    assert run.errors == []
    snaps, updates = _book_counts(run.sink.books)
    assert (snaps, updates) == ({"BTC-USDT": 1}, {"BTC-USDT": 97})
    assert _verify_okx_style(run.sink.books) == 98
    assert len(run.sink.trades["trade_id"]) == 69
    assert len(run.sink.quotes["last"]) == 25
    assert run.classes["control"] == 25 + 6  # instruments REST responses + subscribe acks


def test_bitget_capture_counts_and_checksums(normalized):
    run = normalized["BITGET"]
    assert run.errors == []
    snaps, updates = _book_counts(run.sink.books)
    assert snaps == {"DASHUSDT": 1, "UNIUSDT": 1}
    assert updates == {"DASHUSDT": 97, "UNIUSDT": 95}
    assert {b.symbol for b in run.sink.books} == {"DASH-USDT-SWAP", "UNI-USDT-SWAP"}
    assert _verify_okx_style(run.sink.books) == 194
    assert len(run.sink.quotes["last"]) == 217
    # trade snapshots (pre-subscription history) are control; the 25 live trades are rows
    assert len(run.sink.trades["trade_id"]) == 25
    # 3 REST + 8 acks + 2 trade snapshots + 27 candle1m
    assert run.classes == {"data": 194 + 217 + 25, "control": 3 + 8 + 2 + 27}
