"""Malformed input: every bad payload raises NormalizeError with a reason naming what is
wrong, and a rejected line leaves nothing of itself in the sink."""

from __future__ import annotations

import pytest

from fluxforge import venues
from fluxforge.events import EventSink, NormalizeError
from fluxforge.segments import Envelope

TS = 1_700_000_000_000_000_000

_CB_MATCH = {
    "type": "match",
    "trade_id": 1,
    "side": "buy",
    "size": "1",
    "price": "2",
    "product_id": "BTC-USD",
    "time": "2023-11-14T22:13:20Z",
}
_BN_DEPTH = {"e": "depthUpdate", "E": 1700000000000, "s": "BTCUSDT", "U": 1, "u": 2, "pu": 0}
_OKX_TRADE = {"instId": "BTC-USDT", "tradeId": "1", "px": "1", "sz": "1", "side": "buy"}

CASES = [
    # (id, exchange, kind, payload, url, reason fragment)
    ("non-dict coinbase", "coinbase", "msg", "not json at all", None, "not a JSON object"),
    ("list coinbase", "coinbase", "msg", [1, 2], None, "not a JSON object"),
    ("unknown type", "coinbase", "msg", {"type": "received"}, None, "unknown message type"),
    ("missing price", "coinbase", "msg", {**_CB_MATCH, "price": None} | {}, None, "price"),
    ("missing field", "coinbase", "msg", {k: v for k, v in _CB_MATCH.items() if k != "time"},
     None, "missing field 'time'"),
    ("NaN price", "coinbase", "msg", {**_CB_MATCH, "price": "NaN"}, None, "not finite"),
    ("negative size", "coinbase", "msg", {**_CB_MATCH, "size": "-1"}, None, "negative"),
    ("huge price", "coinbase", "msg", {**_CB_MATCH, "price": "1" + "0" * 26}, None, "1e26"),
    ("zero trade price", "coinbase", "msg", {**_CB_MATCH, "price": "0.000"}, None, "> 0"),
    ("float price", "coinbase", "msg", {**_CB_MATCH, "price": 2.5}, None, "JSON float"),
    ("bad side", "coinbase", "msg", {**_CB_MATCH, "side": "up"}, None, "not buy/sell"),
    ("bad time", "coinbase", "msg", {**_CB_MATCH, "time": "yesterday"}, None, "ISO-8601"),
    ("path traversal symbol", "coinbase", "msg", {**_CB_MATCH, "product_id": "../../etc"},
     None, "not a valid instrument name"),
    ("l2update bad change", "coinbase", "msg",
     {"type": "l2update", "product_id": "BTC-USD", "time": "2023-11-14T22:13:20Z",
      "changes": [["buy", "1"]]}, None, "expected [side, price, size]"),
    ("AT unknown channel", "coinbase", "msg",
     {"channel": "user", "timestamp": "2023-11-14T22:13:20Z", "events": []}, None,
     "unknown Advanced Trade channel"),
    ("AT events not list", "coinbase", "msg",
     {"channel": "l2_data", "timestamp": "2023-11-14T22:13:20Z", "events": {}}, None,
     "expected a JSON array"),
    ("AT absurd event_time", "coinbase", "msg",
     {"channel": "l2_data", "timestamp": "2023-11-14T22:13:20Z", "events": [
         {"type": "update", "product_id": "BTC-USD", "updates": [
             {"side": "bid", "event_time": "2999-01-01T00:00:00Z", "price_level": "1",
              "new_quantity": "1"}]}]}, None, "not a plausible time"),
    ("AT bad book side", "coinbase", "msg",
     {"channel": "l2_data", "timestamp": "2023-11-14T22:13:20Z", "events": [
         {"type": "update", "product_id": "BTC-USD", "updates": [
             {"side": "middle", "price_level": "1", "new_quantity": "1"}]}]}, None,
     "not buy/bid/sell/offer/ask"),
    ("AT sequence_num not an integer", "coinbase", "msg",
     {"channel": "l2_data", "timestamp": "2023-11-14T22:13:20Z", "sequence_num": "7",
      "events": []}, None, "sequence_num='7': expected a non-negative integer"),
    ("AT event type unknown", "coinbase", "msg",
     {"channel": "l2_data", "timestamp": "2023-11-14T22:13:20Z", "events": [
         {"type": "delta", "product_id": "BTC-USD", "updates": []}]}, None,
     "type='delta': not snapshot/update"),
    ("binance trade without its id", "binance", "msg",
     {"e": "trade", "E": 1700000000000, "s": "BTCUSDT", "a": 5, "p": "1", "q": "1",
      "T": 1700000000000, "m": True}, None, "missing field 't'"),
    ("binance unknown event", "binanceusdm", "msg", {"e": "whatever"}, None,
     "unknown event type"),
    ("binance U > u", "binanceusdm", "msg", {**_BN_DEPTH, "U": 5, "u": 2, "b": [], "a": []},
     None, "U=5 > u=2"),
    ("binance missing pu", "binanceusdm", "msg",
     {k: v for k, v in _BN_DEPTH.items() if k != "pu"} | {"b": [], "a": []}, None,
     "missing field 'pu'"),
    ("binance level not a pair", "binanceusdm", "msg", {**_BN_DEPTH, "b": [["1"]], "a": []},
     None, "expected [price, size"),
    ("binance string id", "binanceusdm", "msg", {**_BN_DEPTH, "u": "2", "b": [], "a": []},
     None, "non-negative integer"),
    ("binance ms time garbage", "binanceusdm", "msg",
     {**_BN_DEPTH, "E": "soon", "b": [], "a": []}, None, "epoch milliseconds"),
    ("binance REST depth without symbol", "binanceusdm", "rest",
     {"lastUpdateId": 1, "bids": [], "asks": []}, "https://fapi.binance.com/fapi/v1/depth",
     "no symbol"),
    ("kraken short array", "kraken", "msg", [1, "trade"], None, "needs [id, payload"),
    ("kraken update without checksum", "kraken", "msg",
     [1, {"a": [["1.0", "1.0", "1618678133.1"]]}, "book-10", "XBT/USD"], None,
     "missing checksum"),
    ("kraken bad checksum", "kraken", "msg",
     [1, {"a": [["1.0", "1.0", "1618678133.1"]], "c": "-5"}, "book-10", "XBT/USD"], None,
     ".c='-5': expected a digit string"),
    ("kraken checksum past 32 bits", "kraken", "msg",
     [1, {"a": [["1.0", "1.0", "1618678133.1"]], "c": "4294967296"}, "book-10", "XBT/USD"],
     None, "is not a crc32"),
    ("kraken unknown channel", "kraken", "msg", [1, {}, "own-thing", "XBT/USD"], None,
     "unknown channel"),
    ("kraken bad pair", "kraken", "msg", [1, [], "trade", "XBTUSD"], None, "BASE/QUOTE"),
    ("okx unknown channel", "okx", "msg", {"arg": {"channel": "x", "instId": "A-B"}, "data": []},
     None, "unknown channel"),
    ("okx checksum not int", "okx", "msg",
     {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update",
      "data": [{"asks": [], "bids": [], "ts": "1700000000000", "checksum": "12"}]}, None,
     "checksum='12': expected an integer"),
    ("okx checksum out of range", "okx", "msg",
     {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update",
      "data": [{"asks": [], "bids": [], "ts": "1700000000000", "checksum": 2**31}]}, None,
     "signed 32-bit"),
    ("okx trade bad id", "okx", "msg",
     {"arg": {"channel": "trades", "instId": "BTC-USDT"},
      "data": [{**_OKX_TRADE, "ts": "1700000000000", "tradeId": 5}]}, None, "tradeId"),
    ("bitget bad action", "bitget", "msg",
     {"action": "delete", "arg": {"channel": "books", "instId": "BTCUSDT"}, "data": []}, None,
     "not snapshot/update"),
    ("ccxt unsupported method", "bybit", "msg",
     {"method": "watch_my_trades", "symbol": "BTC/USDT", "result": []}, None,
     "unsupported method"),
    ("ccxt NaN amount", "bybit", "msg",
     {"method": "watch_trades", "symbol": "BTC/USDT",
      "result": [{"price": 1.0, "amount": float("nan"), "side": "buy"}]}, None, "not finite"),
    ("ccxt bad symbol", "bybit", "msg",
     {"method": "watch_ticker", "symbol": "BTCUSDT", "result": {"bid": 1.0}}, None,
     "BASE/QUOTE"),
    ("native venue on non-ccxt payload", "bybit", "msg", {"type": "snapshot"}, None,
     "not {'method'"),
    ("unknown exchange", "nosuchvenue", "msg", {}, None, "no normalizer for exchange"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ex", "kind", "data", "url", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_normalize_malformed_input_raises_normalize_error_with_reason(ex, kind, data, url, reason):
    sink = EventSink()
    env = Envelope(TS, "test", ex, 7, kind, data, url)
    with pytest.raises(NormalizeError) as info:
        venues.normalize(env, sink)
    assert reason in str(info.value)
    assert sink.books == [] and sink.tops == [] and sink.trades["price"] == []


def test_normalize_bad_row_late_in_batch_leaves_no_partial_rows():
    sink = EventSink()
    good = {"method": "watch_trades", "symbol": "BTC/USDT", "result": [{"price": 1.0}]}
    venues.normalize(
        Envelope(TS, "t", "bybit", 1, "msg", {**good, "result": [{"price": 1.0, "amount": 2.0}]}),
        sink,
    )
    assert len(sink.trades["price"]) == 1
    batch = {
        "arg": {"channel": "trades", "instId": "BTC-USDT"},
        "data": [
            {**_OKX_TRADE, "ts": "1700000000000"},
            {**_OKX_TRADE, "ts": "1700000000001", "px": "-1"},
        ],
    }
    with pytest.raises(NormalizeError, match="negative"):
        venues.normalize(Envelope(TS, "t", "okx", 2, "msg", batch), sink)
    assert len(sink.trades["price"]) == 1  # the first (good) row of the bad line was not kept
    assert all(len(col) == 1 for col in sink.trades.values())
