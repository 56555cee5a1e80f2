"""The columnar Binance bookTicker and aggTrade/trade rows
(``fluxforge.demux.binance.fast_book_tickers`` / ``fast_trades_of``) merged with the per-line
path's rows: same tables, same order, same quarantine as the per-line path alone."""

from __future__ import annotations

import numpy as np
import pytest

from fluxforge.book import BookBatch
from fluxforge.demux import demux_segment, merge_columns
from fluxforge.demux.binance import control_lines, fast_book_tickers, fast_trades_of
from fluxforge.segments import encode_envelope

SEG = "segment_20231114T22_00001.ndjson"
BASE_TS = 1_699_999_200_000_000_000

_AGG = (
    b'{"stream":"ctkusdt@aggTrade","data":{"e":"aggTrade","E":1626992741575,"a":16599292,'
    b'"s":"CTKUSDT","p":"1.01100","q":"10","f":23961322,"l":23961322,"T":1626992741421,'
    b'"m":false}}'
)
_TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1626992741575,"s":"BTCUSDT",'
    b'"t":12345,"p":"31000.01","q":"0.002","b":88,"a":50,"T":1626992741421,"m":true,'
    b'"M":true}}'
)
_BT = (
    b'{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,'
    b'"s":"SUSHIUSDT","b":"7.6110","B":"2","a":"7.6120","A":"297","T":1626992741012,'
    b'"E":1626992741017}}'
)
_CB_MATCH = (
    b'{"type":"match","trade_id":280232,"side":"sell","size":"985","price":"0.00001305",'
    b'"product_id":"SKL-BTC","sequence":177100030,"time":"2021-04-17T16:43:37.089723Z"}'
)
_CB_TICKER = (
    b'{"type":"ticker","sequence":333938798,"product_id":"BAND-GBP","price":"14.7775",'
    b'"best_bid":"14.7550","best_ask":"14.8060","side":"buy",'
    b'"time":"2021-04-17T16:43:30.244075Z","trade_id":881613,"last_size":"0.04"}'
)
TRADE_TRICKY = [
    _AGG.replace(b'"m":false', b'"m":"false"'),
    _AGG.replace(b',"m":false', b""),
    _AGG.replace(b'"p":"1.01100"', b'"p":1.011'),
    _AGG.replace(b'"p":"1.01100"', b'"p":"0.000"'),
    _AGG.replace(b'"q":"10"', b'"q":"0"'),
    _AGG.replace(b'"a":16599292', b'"a":016599292'),
    _AGG.replace(b'"a":16599292', b'"a":-16599292'),
    _AGG.replace(b'"a":16599292', b'"a":99999999999999999999'),
    _AGG.replace(b'"a":16599292', b'"a":"16599292"'),
    _AGG.replace(b'"T":1626992741421', b'"T":"1626992741421"'),
    _AGG.replace(b',"T":1626992741421', b""),
    _AGG.replace(b'"E":1626992741575', b'"E":"x"'),
    _AGG.replace(b'"m":false', b'"m":false,"X":"MARKET"'),
    _AGG.replace(b'"q":"10"', b'"q":"10","p":"2"'),
    _AGG.replace(b'"s":"CTKUSDT"', b'"s":"CTK\\u0055SDT"'),
    _AGG.replace(b'"s":"CTKUSDT"', b'"s":"../x"'),
    _AGG.replace(b"ctkusdt@aggTrade", b"ctkusdt@depth5"),
    _AGG.replace(b'"e":"aggTrade"', b'"e":"trade"'),
    _AGG.replace(b'"m":false', b'"m" : false '),
    _AGG + b" x",
    _AGG[:-1],
    _TRADE.replace(b',"t":12345', b""),
    _TRADE.replace(b'"M":true', b'"M":null'),
    _TRADE.replace(b'"p":"31000.01"', b'"p":"31000.0100000000000000001"'),
]
_KLINE = (
    b'{"stream":"ctkusdt@kline_1m","data":{"e":"kline","E":1626992741424,"s":"CTKUSDT",'
    b'"k":{"t":1626992700000,"T":1626992759999,"s":"CTKUSDT","i":"1m","f":23961275,'
    b'"L":23961322,"o":"1.01000","c":"1.01100","h":"1.01100","l":"1.01000","v":"3917","n":48,'
    b'"x":false,"q":"3957.89900","V":"1729","Q":"1748.01900","B":"0","z":null}}}'
)
CONTROL_TRICKY = [
    _KLINE.replace(b'"n":48', b'"n":48.0'),
    _KLINE.replace(b'"n":48', b'"n":4e1'),
    _KLINE.replace(b'"n":48', b'"n":048'),
    _KLINE.replace(b'"n":48', b'"n":-48'),
    _KLINE.replace(b'"n":48', b'"n":-'),
    _KLINE.replace(b'"n":48', b'"n":[48]'),
    _KLINE.replace(b'"n":48', b'"n":{"m":{"o":1}}'),
    _KLINE.replace(b'"n":48', b'"n":tru'),
    _KLINE.replace(b'"n":48', b'"n":"a\\"b"'),
    _KLINE.replace(b'"n":48', b'"n":"\xc3\xa9"'),
    _KLINE.replace(b'"n":48', b'"n":48,'),
    _KLINE.replace(b'"n":48', b'"n"48'),
    _KLINE.replace(b'"x":false', b'"x":false,"x":true'),
    _KLINE.replace(b'"e":"kline"', b'"e":"kline","e":"aggTrade"'),
    _KLINE.replace(b'"e":"kline"', b'"e":"klines"'),
    _KLINE.replace(b'"e":"kline"', b'"e":"24hrMiniTicker"'),
    _KLINE.replace(b'"e":"kline",', b""),
    _KLINE.replace(b'"k":{', b'"k":{}, "kk":{'),
    _KLINE.replace(b"ctkusdt@kline_1m", b"ctkusdt@depth10@100ms"),
    _KLINE.replace(b'"data":{', b'"data": {').replace(b'"z":null}', b'"z" : null }'),
    _KLINE + b"}",
]


_DEPTH = (
    b'{"stream":"sushiusdt@depth@100ms","data":{"e":"depthUpdate","E":1626992741037,'
    b'"T":1626992741024,"s":"SUSHIUSDT","U":%d,"u":%d,"pu":%d,"b":[["7.5","1"]],"a":[]}}'
)
_REST = b'{"lastUpdateId":11,"E":1626992741000,"T":1626992740999,"bids":[["7.5","2"]],"asks":[]}'
_URL = "https://fapi.binance.com/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"
REST_TRICKY = [
    (_REST.replace(b'"E":1626992741000,', b""), _URL),
    (_REST.replace(b'"E":1626992741000', b'"E":"1626992741000"'), _URL),
    (_REST.replace(b'"lastUpdateId":11,', b""), _URL),
    (_REST.replace(b'"asks":[]', b'"asks":[["7.7",1]]'), _URL),
    (_REST.replace(b'"asks":[]', b'"asks":[],"x":1'), _URL),
    (b'{"code":-1121,"msg":"Invalid symbol."}', _URL),
    (_REST, _URL.replace("/depth", "/exchangeInfo")),
    (_REST, _URL.replace("symbol=SUSHIUSDT&", "")),
    (_REST, _URL.replace("SUSHIUSDT", "SUSHI%55SDT")),
    (_REST, _URL.replace("SUSHIUSDT", "..%2Fx")),
    (_REST, _URL.replace("SUSHIUSDT", "CTKUSDT")),
    (_REST, _URL.replace("SUSHIUSDT", "SUSHIUSDT&symbol=CTKUSDT")),
]


def _env(seq: int, ex: str, payload: bytes, kind: str = "msg", url: str | None = None) -> bytes:
    return encode_envelope(BASE_TS + seq * 1000, "test", ex, seq, kind, payload, url)


def _segment() -> bytes:
    """Columnar lines interleaved with per-line trades/quotes of the same and other venues."""
    lines: list[bytes] = []
    seq = 0
    for i, tricky in enumerate(TRADE_TRICKY):
        for ex, payload in (
            ("binanceusdm", _AGG),
            ("coinbase", _CB_MATCH),
            ("binanceusdm", tricky),
            ("binance", _TRADE),
            ("binanceusdm", _BT),
            ("coinbase", _CB_TICKER),
            ("binance", tricky if i % 2 else _BT),
        ):
            seq += 1
            lines.append(_env(seq, ex, payload))
    return b"".join(lines)


def _lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 10)
    return buf, np.concatenate(([0], ends[:-1] + 1)), ends


def test_fast_trades_of_plain_and_tricky_lines_takes_only_plain_shape() -> None:
    data = b"".join([_env(1, "binanceusdm", _AGG), _env(2, "binance", _TRADE)])
    data += b"".join(_env(3 + i, "binanceusdm", p) for i, p in enumerate(TRADE_TRICKY))
    buf, starts, ends = _lines(data)
    todo = np.ones(len(starts), dtype=bool)
    usdm, taken = fast_trades_of("binanceusdm", buf, starts, ends, todo)
    assert usdm is not None
    assert usdm.line.tolist() == [0, 2 + 18]  # of the tricky ones, only the spaced variant
    assert taken.sum() == 2
    assert usdm.table.column("trade_id").to_pylist() == ["16599292", "16599292"]
    assert usdm.table.column("side").to_pylist() == ["buy", "buy"]
    spot, _ = fast_trades_of("binance", buf, starts, ends, todo)
    assert spot is not None
    assert spot.table.to_pylist()[0] == {
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "ts_event": 1626992741421000000,
        "ts_recv": BASE_TS + 2000,
        "venue_symbol": "BTCUSDT",
        "trade_id": "12345",
        "price": "31000.01",
        "size": "0.002",
        "side": "sell",
        "seq": 2,
    }


def test_demux_binance_columnar_rows_interleaved_equal_per_line_path() -> None:
    data = _segment()
    buf, starts, ends = _lines(data)
    todo = np.ones(len(starts), dtype=bool)
    trades, _ = fast_trades_of("binanceusdm", buf, starts, ends, todo)
    tickers, _ = fast_book_tickers("binance", buf, starts, ends, todo)
    assert trades is not None and len(trades) > len(TRADE_TRICKY)
    assert tickers is not None and len(tickers) >= len(TRADE_TRICKY) // 2
    fast = demux_segment(data, SEG, fast=True)
    slow = demux_segment(data, SEG, fast=False)
    assert (fast.lines_in, fast.data, fast.control, fast.quarantined) == (
        slow.lines_in,
        slow.data,
        slow.control,
        slow.quarantined,
    )
    assert slow.quarantined >= 10
    assert fast.trades.equals(slow.trades)
    assert fast.quotes.equals(slow.quotes)
    assert fast.trades.column("seq").to_pylist() == sorted(fast.trades.column("seq").to_pylist())
    assert fast.quotes.column("seq").to_pylist() == sorted(fast.quotes.column("seq").to_pylist())
    assert fast.quarantine.to_pylist() == slow.quarantine.to_pylist()
    assert fast.tops == slow.tops


def test_demux_binance_control_lines_equal_per_line_path() -> None:
    lines = [_env(1, "binanceusdm", _KLINE), _env(2, "binance", _KLINE)]
    lines += [_env(10 + i, "binanceusdm", p) for i, p in enumerate(CONTROL_TRICKY)]
    data = b"".join(lines)
    buf, starts, ends = _lines(data)
    taken = control_lines("binanceusdm", buf, starts, ends, np.ones(len(starts), dtype=bool))
    # plain, "-48", a duplicate inner key (valid JSON), another control event, extra blanks
    assert np.flatnonzero(taken).tolist() == [0, 2 + 3, 2 + 12, 2 + 15, 2 + 19]
    fast = demux_segment(data, SEG, fast=True)
    slow = demux_segment(data, SEG, fast=False)
    assert (fast.lines_in, fast.data, fast.control, fast.quarantined) == (
        slow.lines_in,
        slow.data,
        slow.control,
        slow.quarantined,
    )
    assert slow.quarantined >= 8
    assert fast.quarantine.to_pylist() == slow.quarantine.to_pylist()
    assert fast.book_count == slow.book_count


def test_demux_binance_rest_snapshots_join_depth_columns_equal_per_line_path() -> None:
    lines: list[bytes] = []
    for i, (payload, url) in enumerate(REST_TRICKY):
        for ex in ("binanceusdm", "binance"):
            seq = 10 * i + (0 if ex == "binance" else 5)
            lines.append(_env(seq, ex, _DEPTH % (10 + i, 12 + i, 9 + i)))
            lines.append(_env(seq + 1, ex, payload, "rest", url))
            lines.append(_env(seq + 2, ex, _REST, "rest", _URL))
    data = b"".join(lines)
    fast = demux_segment(data, SEG, fast=True)
    slow = demux_segment(data, SEG, fast=False)
    assert (fast.lines_in, fast.data, fast.control, fast.quarantined) == (
        slow.lines_in,
        slow.data,
        slow.control,
        slow.quarantined,
    )
    assert fast.quarantine.to_pylist() == slow.quarantine.to_pylist()
    assert fast.books_by_instrument_all() == slow.books_by_instrument_all()
    book = fast.fast_books[("binanceusdm", "SUSHI-USDT")]
    assert book.from_rest is not None and int(book.from_rest.sum()) >= len(REST_TRICKY) + 3
    assert ("binanceusdm", "CTK-USDT") in fast.fast_books  # REST lines alone make a book too
    want = slow.books_by_instrument()
    per_line = fast.books_by_instrument()
    for key, cols in fast.fast_books.items():
        merged = merge_columns(cols, per_line.get(key, []))
        assert merged is not None
        assert merged.to_messages() == want[key]
        got = merged.batch(0, len(merged))
        exact = BookBatch.from_messages([m for _, m in want[key]])
        for name, value in vars(exact).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, getattr(got, name)), (key, name)


@pytest.mark.parametrize("payload", [_AGG, _BT])
def test_demux_tops_reset_by_assignment_stays_empty(payload: bytes) -> None:
    res = demux_segment(_env(1, "binanceusdm", payload), SEG, fast=True)
    assert len(res.tops) == (1 if payload is _BT else 0)
    res.tops = []  # the refinery drops them this way
    assert res.tops == []


def _wrapped(event: bytes, tail: bytes = b"", stream: bytes = b"btcusdt@trade") -> bytes:
    return b'{"stream":"' + stream + b'","data":' + event + tail + b"}"


_EVENT = _TRADE[len(b'{"stream":"btcusdt@trade","data":') : -1]
_ARRAY = b"[" + _EVENT + b"," + _EVENT + b"]"
# frames whose event is read to where the wrapper closes (the usual, compact frame) and frames
# with something after the event: each must give the per-line path's result
WRAPPERS = [
    _wrapped(_EVENT),  # the usual frame: taken
    _wrapped(_ARRAY, stream=b"!trade@arr"),  # an array of events: taken
    _wrapped(_EVENT, b',"x":1'),  # a key after the event
    _wrapped(_EVENT, b',"data":' + _EVENT),  # the event key twice
    _wrapped(_EVENT, b',"x":{"p":"1"}'),  # an object after the event
    _wrapped(_ARRAY, b',"x":[1]', stream=b"!trade@arr"),  # an array after the array
    _wrapped(_EVENT, b" "),  # a blank before the wrapper's close
    b'{"data":' + _EVENT + b',"stream":"btcusdt@trade"}',  # the keys the other way round
    _wrapped(_EVENT[:-1]),  # the event cut short
    _wrapped(b"[]", stream=b"!trade@arr"),  # no event
    b"[" + _EVENT + b"]",  # a bare array
    b"[" + _EVENT + b"]]",  # a bare array closed twice
    b"[" + _EVENT + b',"x"]',  # a bare array with a string after the event
]


def test_demux_binance_wrapper_read_to_its_close_equals_per_line_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.demux_compare import assert_same, both_paths

    data = b"".join(_env(1 + i, "binance", p) for i, p in enumerate(WRAPPERS))
    buf, starts, ends = _lines(data)
    trades, taken = fast_trades_of("binance", buf, starts, ends, np.ones(len(starts), bool))
    assert trades is not None
    # the compact frames, the two the full wrapper read takes (a blank, the other key order)
    # and the bare array
    assert np.flatnonzero(taken).tolist() == [0, 1, 6, 7, 10]
    fast, slow = both_paths(data, monkeypatch)
    assert_same(fast, slow)
    assert slow.trades.num_rows >= 4
