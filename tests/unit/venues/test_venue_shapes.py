"""Venue normalizers on hand-written payloads of shapes the captures do not hold: Coinbase
Advanced Trade, Binance spot and COIN-M, OKX/Bitget/Kraken extras, ccxt unified structures."""

from __future__ import annotations

import pytest

from fluxforge import venues
from fluxforge.events import (
    CHAIN_BINANCE_FUTURES,
    CHAIN_BINANCE_SPOT,
    CHECKSUM_KRAKEN,
    EventSink,
)
from fluxforge.segments import Envelope
from fluxforge.venues import binance, bitget, ccxt_unified, coinbase, kraken, okx


def test_coinbase_advanced_trade_fixture_normalizes_every_channel(run_fixture):
    sink, classes = run_fixture("coinbase_advanced.ndjson")
    assert classes == ["control", "data", "data", "data", "data", "control"]
    snap, upd = sink.books
    assert snap.is_snapshot and snap.symbol == "BTC-USD" and snap.final_id == 1
    assert snap.bids == [("36500.01", "0.50000000"), ("36500", "1.2")]
    assert snap.asks == [("36500.02", "0.00000100")]
    # snapshot event_time is 1970: the message timestamp is the event time
    assert snap.ts_event == 1_700_000_000_150_000_001
    assert not upd.is_snapshot and upd.bids == [("36500.01", "0")]
    assert upd.asks == [("36500.03", "2.5")]
    assert upd.ts_event == 1_700_000_000_281_234_567  # latest event_time of the updates
    t = sink.trades
    assert t["trade_id"] == ["1001", "1002"]  # newest-first batch stored in time order
    assert t["side"] == ["sell", "buy"]  # Advanced Trade side is the taker side
    assert t["ts_event"] == [1_700_000_000_370_000_000, 1_700_000_000_380_000_000]
    q = sink.quotes
    assert (q["bid_px"], q["bid_sz"], q["ask_px"], q["ask_sz"], q["last"]) == (
        ["36500"],
        ["1.2"],
        ["36500.02"],
        ["0.00000100"],
        ["36500.02"],
    )


def test_binance_spot_fixture_uses_spot_chain_and_rest_snapshot(run_fixture):
    sink, classes = run_fixture("binance_spot.ndjson")
    assert classes == ["control", "data", "data", "data", "data", "control", "control"]
    upd, snap = sink.books
    assert (upd.first_id, upd.final_id, upd.prev_id, upd.chain) == (
        157,
        160,
        -1,
        CHAIN_BINANCE_SPOT,
    )
    assert upd.symbol == "BNB-BTC" and upd.ts_event == 1_700_000_000_150_000_000
    assert snap.from_rest and snap.is_snapshot and snap.final_id == 1027024
    assert snap.chain == CHAIN_BINANCE_SPOT and snap.venue_symbol == "BNBBTC"
    assert snap.ts_event == snap.ts_recv  # spot REST depth has no venue time
    (top,) = sink.tops
    assert (top.symbol, top.update_id, top.bid_px, top.ask_sz) == (
        "BNB-USDT",
        400900217,
        "25.35190000",
        "40.66000000",
    )
    assert sink.trades["side"] == ["sell"]  # m: buyer is maker -> taker sold
    assert sink.trades["trade_id"] == ["12345"]


def test_binance_coinm_fixture_keeps_contract_suffix(run_fixture):
    sink, classes = run_fixture("binance_coinm.ndjson")
    assert classes == ["data", "data", "data"]
    upd, snap = sink.books
    assert upd.symbol == snap.symbol == "BTC-USD-PERP"
    assert (upd.prev_id, upd.chain) == (17276678, CHAIN_BINANCE_FUTURES)
    assert snap.from_rest and snap.final_id == 17276690
    assert sink.trades["side"] == ["buy"] and sink.trades["trade_id"] == ["416690"]


def test_okx_fixture_acks_errors_and_retired_checksum(run_fixture):
    sink, classes = run_fixture("okx_misc.ndjson")
    assert classes == ["control", "control", "data", "data", "control"]
    top5, upd = sink.books
    assert top5.is_snapshot and top5.depth == 5 and top5.symbol == "UNI-USD-SWAP"
    assert top5.checksum is None
    # checksum 0 next to seqId: OKX no longer computes it, so nothing is to be verified
    assert upd.checksum is None and (upd.final_id, upd.prev_id) == (124, 123)


def test_bitget_v2_fixture_books_trades_ticker(run_fixture):
    sink, classes = run_fixture("bitget_v2.ndjson")
    assert classes == ["data", "data", "data"]
    (book,) = sink.books
    assert book.symbol == "BTC-USDT" and book.checksum is None and book.final_id == 1001
    assert sink.trades["symbol"] == ["BTC-USDT-SWAP"]  # USDT-FUTURES instType
    assert sink.trades["trade_id"] == ["1111111111111111111"]
    assert sink.quotes["bid_sz"] == ["0.2"] and sink.quotes["last"] == ["36500.2"]


def test_kraken_fixture_spread_republish_ohlc_and_error_status(run_fixture):
    sink, classes = run_fixture("kraken_misc.ndjson")
    assert classes == ["data", "data", "control", "control"]
    assert sink.quotes["symbol"] == ["BTC-USD"]
    assert sink.quotes["ts_event"] == [1_542_057_299_545_897_000]
    (book,) = sink.books
    assert book.asks == [("5541.30000", "2.50700000")] and book.depth == 10
    assert (book.checksum, book.checksum_kind) == (974942666, CHECKSUM_KRAKEN)


def test_ccxt_fixture_converts_floats_and_routes_by_payload(run_fixture):
    sink, classes = run_fixture("ccxt.ndjson")
    assert classes == ["data", "data", "data", "control"]
    t = sink.trades
    assert t["exchange"] == ["bybit", "bybit"]
    assert t["symbol"] == ["BTC-USDT-SWAP", "BTC-USDT-SWAP"]
    assert t["venue_symbol"] == ["BTC/USDT:USDT", "BTC/USDT:USDT"]
    assert t["price"] == ["36500.1", "36500"]
    assert t["size"] == ["0.00001", "0.1"]
    assert t["side"] == ["buy", "unknown"] and t["trade_id"] == ["a1", ""]
    (book,) = sink.books  # ex "kraken" with a ccxt payload: the kraken module hands it over
    assert book.exchange == "kraken" and book.symbol == "BTC-USD" and book.is_snapshot
    assert book.bids == [("36500.1", "0.5"), ("36500", "1.25")]
    assert book.asks == [("36500.2", "0.3")] and book.final_id == 99
    q = sink.quotes
    assert q["ts_event"] == [q["ts_recv"][0]]  # no timestamp -> receive time
    assert (q["bid_px"], q["bid_sz"], q["ask_sz"], q["last"]) == (
        ["2000.5"],
        ["3"],
        [None],
        ["2000.55"],
    )


def test_normalizer_for_native_ccxt_and_unknown_ids():
    assert venues.normalizer_for("coinbase") is coinbase
    assert venues.normalizer_for("synthetic") is coinbase
    assert venues.normalizer_for("binancecoinm") is binance
    assert venues.normalizer_for("bybit") is ccxt_unified  # any id ccxt knows
    with pytest.raises(KeyError, match=r"known: .*kraken"):
        venues.normalizer_for("no_such_exchange")


def test_normalize_ctl_envelope_is_control_for_any_exchange():
    env = Envelope(1, "s", "whatever", 1, "ctl", {"event": "connect"})
    assert venues.normalize(env, EventSink()) == "control"


@pytest.mark.parametrize(
    ("module", "venue", "symbol"),
    [
        (kraken, "XBT/CHF", "BTC-CHF"),
        (kraken, "XDG/USD", "DOGE-USD"),
        (kraken, "KSM/XBT", "KSM-BTC"),
        (binance, "SUSHIUSDT", "SUSHI-USDT"),
        (binance, "ETHBTC", "ETH-BTC"),
        (binance, "BTCBUSD", "BTC-BUSD"),
        (binance, "BTCFDUSD", "BTC-FDUSD"),
        (binance, "BTCUSD_PERP", "BTC-USD-PERP"),
        (binance, "BTCUSDT_210625", "BTC-USDT-210625"),
        (binance, "NEWTOKENXYZ", "NEWTOKENXYZ"),
        (okx, "BTC-USDT", "BTC-USDT"),
        (okx, "UNI-USD-SWAP", "UNI-USD-SWAP"),
        (okx, "BTC-USD-220527", "BTC-USD-220527"),
        (coinbase, "SKL-GBP", "SKL-GBP"),
        (bitget, "DASHUSDT", "DASH-USDT"),
        (bitget, "BTCUSDT_UMCBL", "BTC-USDT-SWAP"),
        (ccxt_unified, "BTC/USDT", "BTC-USDT"),
        (ccxt_unified, "BTC/USDT:USDT", "BTC-USDT-SWAP"),
        (ccxt_unified, "BTC/USDT:USDT-211225", "BTC-USDT-211225"),
        (ccxt_unified, "BTC/USD:BTC-211225-60000-C", "BTC-USD-211225-60000-C"),
    ],
)
def test_venue_symbol_to_symbol_normalizes_to_base_quote(module, venue, symbol):
    assert module.venue_symbol_to_symbol(venue) == symbol


def test_bitget_contract_inst_type_adds_swap_suffix():
    assert bitget.venue_symbol_to_symbol("DASHUSDT", "mc") == "DASH-USDT-SWAP"
    assert bitget.venue_symbol_to_symbol("BTCUSDT", "SPOT") == "BTC-USDT"


def test_binance_partial_depth_stream_is_a_top_n_snapshot_without_chain():
    sink = EventSink()
    spot = {
        "stream": "bnbbtc@depth5@100ms",
        "data": {"lastUpdateId": 160, "bids": [["0.0024", "10"]], "asks": [["0.0026", "100"]]},
    }
    fut = {
        "stream": "btcusdt@depth10",
        "data": {
            "e": "depthUpdate",
            "E": 1_700_000_000_000,
            "s": "BTCUSDT",
            "U": 1,
            "u": 5,
            "pu": 0,
            "b": [["36500.1", "1"]],
            "a": [["36500.2", "2"]],
        },
    }
    assert venues.normalize(Envelope(1, "t", "binance", 1, "msg", spot), sink) == "data"
    assert venues.normalize(Envelope(2, "t", "binanceusdm", 2, "msg", fut), sink) == "data"
    a, b = sink.books
    assert (a.symbol, a.is_snapshot, a.depth, a.final_id, a.chain) == (
        "BNB-BTC",
        True,
        5,
        160,
        None,
    )
    assert (b.symbol, b.is_snapshot, b.depth, b.final_id, b.chain) == (
        "BTC-USDT",
        True,
        10,
        5,
        None,
    )
    assert b.bids == [("36500.1", "1")]
