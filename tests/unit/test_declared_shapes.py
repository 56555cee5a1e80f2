"""One declaration, two readers: every event object of the documented venue shapes
(tests/fixtures/doc_shapes.py), read by its venue declaration through the per-line reader
(``venues.common.read_fields``) and through the byte scanner (``demux.bytescan.flat_object``),
gives the same value in every declared column, and each reader refuses the same broken
values."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from fluxforge.demux.bytescan import LV_COLS, flat_object
from fluxforge.events import NormalizeError
from fluxforge.segments import encode_envelope
from fluxforge.venues import binance, bitget, coinbase, okx
from fluxforge.venues.common import read_fields
from fluxforge.wire import shape
from fluxforge.wire.shape import ObjectShape
from tests.fixtures import doc_shapes
from tests.unit.demux_compare import assert_same, both_paths

_LEVEL_KINDS = (
    shape.V_BIDS, shape.V_ASKS, shape.V_BIDS_OBJ, shape.V_ASKS_OBJ, shape.V_SIDED_LEVELS,
)  # fmt: skip


def _layout(decl: ObjectShape) -> dict[str, int]:
    """A scanner column for every named column (two for a span), levels to the level rows."""
    layout: dict[str, int] = {}
    for kind, col in zip(decl.kinds, decl.columns, strict=True):
        if not isinstance(col, str) or col in layout:
            continue
        if kind in _LEVEL_KINDS:
            layout[col] = -1
            continue
        layout[col] = max([0, *(v + 2 for v in layout.values())])
    return layout


def scan(decl: ObjectShape, obj: Any) -> dict[str, Any] | None:
    """The object read by the byte scanner: column -> value as ``read_fields`` gives it, or
    None when the scanner leaves the object to the per-line path."""
    return scan_raw(decl, orjson.dumps(obj))


def scan_raw(decl: ObjectShape, raw: bytes) -> dict[str, Any] | None:
    """``scan`` of the object's JSON text as sent (escapes, blanks, duplicate keys...)."""
    layout = _layout(decl)
    buf = np.frombuffer(raw, np.uint8)
    out = np.full(2 * len(layout) + 2, -1, np.int64)
    lv = np.empty((64, LV_COLS), np.int64)
    p, seen, lv, n_lv = flat_object(buf, 0, len(buf), decl.args_for(layout), out, 0, lv, 0)
    if p != len(buf):
        return None
    got: dict[str, Any] = {}
    for k, (kind, col) in enumerate(zip(decl.kinds, decl.columns, strict=True)):
        if not isinstance(col, str) or not seen & (1 << k) or col in got:
            continue
        if kind in _LEVEL_KINDS:
            rows = [
                (bytes(buf[r[2] : r[3]]).decode(), bytes(buf[r[4] : r[5]]).decode(), r[1])
                for r in lv[:n_lv]
            ]
            by_side = tuple([(px, sz) for px, sz, sd in rows if sd == side] for side in (0, 1))
            if kind == shape.V_SIDED_LEVELS:
                got[col] = by_side
            else:
                got[col] = by_side[0 if kind in (shape.V_BIDS, shape.V_BIDS_OBJ) else 1]
        elif kind in (shape.V_LIST, shape.V_NESTED):
            got[col] = orjson.loads(bytes(buf[out[layout[col]] : out[layout[col] + 1]]))
        elif kind in shape.SPAN_KINDS:
            s, e = out[layout[col]], out[layout[col] + 1]
            if s < 0:
                continue  # "no value"
            text = bytes(buf[s:e]).decode()
            got[col] = int(text) if kind in (shape.V_INT, shape.V_INT_SPAN) else text
        elif kind == shape.V_BOOL:
            got[col] = bool(out[layout[col]])
        elif kind == shape.V_ENUM:
            got[col] = decl.words[k][out[layout[col]] - 1]
        elif kind == shape.V_ISO_OPT and out[layout[col]] < 0:
            continue  # the epoch: no time
        else:
            got[col] = int(out[layout[col]])
    return got


def _binance_decl(ex: str, kind: str, d: dict) -> ObjectShape | None:
    if kind == "rest" or "lastUpdateId" in d:
        return binance.SNAPSHOT
    e = d.get("e")
    if e == "depthUpdate":
        return binance.DEPTH_UPDATE[ex in binance.FUTURES]
    if e in binance.TRADE_ID_COLUMN:
        return binance.TRADE
    if e == "24hrTicker":
        return binance.TICKER_24H
    if e in (None, "bookTicker"):
        return binance.BOOK_TICKER
    return None  # control events: no declaration


def _documented_objects() -> list[tuple[str, ObjectShape, Any]]:
    out = []
    for k, (ex, kind, payload, _url) in enumerate(doc_shapes.frames("binance")):
        d = payload
        if binance.is_combined(payload):
            out.append((f"binance {k} wrapper", binance.COMBINED, payload))
            d = payload["data"]
        for n, event in enumerate(d if isinstance(d, list) else [d]):  # all-market: arrays
            decl = _binance_decl(ex, kind, event)
            if decl is not None:
                out.append(
                    (f"binance {k}" + (f" [{n}]" if isinstance(d, list) else ""), decl, event)
                )
    return out


def _coinbase_objects() -> list[tuple[str, ObjectShape, Any]]:
    out: list[tuple[str, ObjectShape, Any]] = []
    for k, (_ex, _kind, d, _url) in enumerate(doc_shapes.frames("coinbase")):
        name = f"coinbase {k}"
        if d.get("type") in ("snapshot", "l2update"):
            out.append(
                (name, coinbase.SNAPSHOT if d["type"] == "snapshot" else coinbase.L2UPDATE, d)
            )
        elif d.get("type") in ("match", "last_match"):
            out.append((name, coinbase.MATCH, d))
        elif d.get("type") == "ticker":
            out.append((name, coinbase.TICKER, d))
        if "channel" in d:
            out.append((f"{name} message", coinbase.AT_MESSAGE, d))
        events = {"l2_data": coinbase.AT_BOOK_EVENT, "market_trades": coinbase.AT_TRADES_EVENT}
        for ev in d.get("events", ()):
            out.append((f"{name} event", events.get(d["channel"], coinbase.AT_TICKER_EVENT), ev))
            for item in ev.get("updates", ()):
                out.append((f"{name} level", coinbase.AT_LEVEL[ev["type"]], item))
            out += [(f"{name} trade", coinbase.AT_TRADE, t) for t in ev.get("trades", ())]
            out += [(f"{name} ticker", coinbase.AT_TICKER, t) for t in ev.get("tickers", ())]
    # snapshot levels carry the epoch as event_time (read by neither path), and so may updates
    epoch = {"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": "2",
             "new_quantity": "0.5"}  # fmt: skip
    out.append(("coinbase snapshot level", coinbase.AT_LEVEL["snapshot"], epoch))
    out.append(("coinbase update level at the epoch", coinbase.AT_LEVEL["update"], epoch))
    return out


def _okx_bitget_objects() -> list[tuple[str, ObjectShape, Any]]:
    """Each push's "arg" object (read by both venues' scanner and per-line handler through
    the venue's ARG) and each data item by its channel's declaration."""
    out: list[tuple[str, ObjectShape, Any]] = []
    for venue, books, trades, ticker in (
        (okx, okx.BOOK_CHANNELS, okx.TRADE_CHANNELS, okx.TICKER_CHANNEL),
        (bitget, bitget.BOOK_DEPTH, (bitget.TRADE_CHANNEL,), bitget.TICKER_CHANNEL),
    ):
        name = venue.EXCHANGES[0]
        for k, (_ex, _kind, d, _url) in enumerate(doc_shapes.frames(name)):
            if "arg" not in d:
                continue
            out.append((f"{name} {k} arg", venue.ARG, d["arg"]))
            channel = d["arg"]["channel"]
            for item in d.get("data", ()):
                if channel in books:
                    out.append((f"{name} {k} book item", venue.BOOK_ITEM, item))
                elif channel in trades:
                    decl = bitget.TRADE_ROW if isinstance(item, list) else venue.TRADE
                    out.append((f"{name} {k} trade", decl, item))
                elif channel == ticker:
                    out.append((f"{name} {k} ticker", venue.TICKER, item))
    return out


OBJECTS = _documented_objects() + _coinbase_objects() + _okx_bitget_objects()


@pytest.mark.parametrize(("decl", "obj"), [o[1:] for o in OBJECTS], ids=[o[0] for o in OBJECTS])
def test_declared_shape_documented_object_same_columns_from_both_readers(
    decl: ObjectShape, obj: Any
) -> None:
    per_line = {k: v for k, v in read_fields(decl, obj, "doc").items() if v is not None}
    scanned = scan(decl, obj)
    assert scanned is not None, "the scanner leaves a documented object to the per-line path"
    assert scanned == per_line


def test_declared_shapes_cover_every_documented_book_trade_and_quote_variant() -> None:
    decls = {id(decl) for _name, decl, _obj in OBJECTS}
    want = [
        binance.SNAPSHOT, binance.BOOK_TICKER, binance.TRADE, *binance.DEPTH_UPDATE.values(),
        binance.TICKER_24H, binance.COMBINED,
        coinbase.SNAPSHOT, coinbase.L2UPDATE, coinbase.MATCH, coinbase.TICKER,
        *coinbase.AT_LEVEL.values(), coinbase.AT_TRADE, coinbase.AT_TICKER, coinbase.AT_MESSAGE,
        coinbase.AT_BOOK_EVENT, coinbase.AT_TRADES_EVENT, coinbase.AT_TICKER_EVENT,
        okx.ARG, okx.BOOK_ITEM, okx.TRADE, okx.TICKER,
        bitget.ARG, bitget.BOOK_ITEM, bitget.TRADE, bitget.TRADE_ROW, bitget.TICKER,
    ]  # fmt: skip
    assert decls == {id(d) for d in want}


@pytest.mark.parametrize(("decl", "obj"), [o[1:] for o in OBJECTS], ids=[o[0] for o in OBJECTS])
def test_declared_shape_broken_value_refused_by_both_readers(decl: ObjectShape, obj: Any) -> None:
    for key, kind, col in zip(decl.names, decl.kinds, decl.columns, strict=True):
        if key not in obj or not isinstance(col, str):
            continue
        # (an object is a wrapper's payload: a string is not)
        bad = {**obj, key: "not a value" if kind == shape.V_NESTED else {"not": "a value"}}
        with pytest.raises(NormalizeError, match=key):
            read_fields(decl, bad, "doc")
        assert scan(decl, bad) is None


# ---------------------------------------------------------------- the Binance wrapper
# Every variant of the combined-stream wrapper (``binance.COMBINED``): (id, payload as sent,
# what the declaration readers do, lines the fast path leaves to the per-line path, lines
# quarantined). Readers: "same" both read the same columns; "per-line" the scanner leaves a
# valid wrapper to the per-line reader (it is stricter: escapes, extra or repeated keys);
# "refused" the per-line reader refuses it and the scanner leaves it; "bare" no wrapper (the
# payload lacks a required key: a bare frame, judged as an event); "invalid" not JSON (the
# wrapper's reader passes its payload on by its span: the events' readers refuse it).
_TRADE_EVENT = (
    b'{"e":"trade","E":1700000000100,"s":"BNBBTC","t":12345,"p":"0.00250000",'
    b'"q":"2.00000000","T":1700000000099,"m":true,"M":true}'
)
_TICKER_EVENT = (
    b'{"e":"24hrTicker","E":1700000000100,"s":"BNBBTC","p":"0.0015","c":"0.0025",'
    b'"b":"0.0024","B":"10","a":"0.0026","A":"100","O":0,"n":18151}'
)
_PARTIAL_EVENT = b'{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}'
_T = _TRADE_EVENT
WRAPPERS = [
    ("plain", b'{"stream":"bnbbtc@trade","data":' + _T + b"}", "same", 0, 0),
    ("data first", b'{"data":' + _T + b',"stream":"bnbbtc@trade"}', "same", 0, 0),
    ("blanks", b'{ "stream" : "bnbbtc@trade" ,\t"data" : ' + _T + b" }", "same", 0, 0),
    ("partial depth", b'{"stream":"bnbbtc@depth5","data":' + _PARTIAL_EVENT + b"}", "same", 0, 0),
    ("no stream", b'{"data":' + _T + b"}", "bare", 1, 1),
    ("no data", b'{"stream":"bnbbtc@trade"}', "bare", 1, 1),
    ("empty object", b"{}", "bare", 1, 1),
    ("data null", b'{"stream":"bnbbtc@trade","data":null}', "refused", 1, 1),
    ("data number", b'{"stream":"bnbbtc@trade","data":5}', "refused", 1, 1),
    ("data string", b'{"stream":"bnbbtc@trade","data":"x"}', "refused", 1, 1),
    ("data true", b'{"stream":"bnbbtc@trade","data":true}', "refused", 1, 1),
    ("stream null", b'{"stream":null,"data":' + _T + b"}", "refused", 1, 1),
    ("stream number", b'{"stream":7,"data":' + _T + b"}", "refused", 1, 1),
    ("stream object", b'{"stream":{},"data":' + _T + b"}", "refused", 1, 1),
    # all-market streams: the fast path takes an array whose events one scanner takes all
    ("data array", b'{"stream":"!ticker@arr","data":[' + _TICKER_EVENT + b"]}", "same", 0, 0),
    ("data array of two", b'{"stream":"!ticker@arr","data":[' + _TICKER_EVENT + b", "
     + _TICKER_EVENT.replace(b"BNBBTC", b"ETHBTC") + b" ]}", "same", 0, 0),
    ("data empty array", b'{"stream":"!ticker@arr","data":[]}', "same", 1, 0),
    ("data array, a number", b'{"stream":"!ticker@arr","data":[' + _TICKER_EVENT + b",5]}",
     "same", 1, 1),
    ("data array, mixed events", b'{"stream":"!ticker@arr","data":[' + _TICKER_EVENT + b","
     + _T + b"]}", "same", 1, 0),
    ("data array, a bad symbol", b'{"stream":"!ticker@arr","data":[' + _TICKER_EVENT + b","
     + _TICKER_EVENT.replace(b"BNBBTC", b"../x") + b"]}", "same", 1, 1),
    ("data array, trailing comma", b'{"stream":"!ticker@arr","data":[' + _TICKER_EVENT
     + b",]}", "invalid", 1, 1),
    ("extra key", b'{"stream":"bnbbtc@trade","data":' + _T + b',"id":1}', "per-line", 1, 0),
    ("stream twice", b'{"stream":"x","stream":"bnbbtc@trade","data":' + _T + b"}", "per-line",
     1, 0),
    ("escaped stream", b'{"stream":"bnbbtc\\u0040trade","data":' + _T + b"}", "per-line", 1, 0),
    ("escaped partial depth", b'{"stream":"bnbbtc\\u0040depth5","data":' + _PARTIAL_EVENT + b"}",
     "per-line", 1, 0),
    ("partial depth, array", b'{"stream":"bnbbtc@depth5","data":[]}', "same", 1, 1),
    # the wrapper's keys after an event key: still a wrapper for both paths (the scanner does
    # not read the payload as a bare 24hrTicker whose open shape would skip them)
    ("keys after an event key", b'{"e":"24hrTicker","stream":"bnbbtc@ticker","data":1}',
     "refused", 1, 1),
    ("kline with a wrapper inside",
     b'{"e":"kline","E":1700000000100,"stream":"bnbbtc@trade","data":' + _T + b"}", "per-line",
     1, 0),
    # one wrapper key next to an event's: a bare event (open 24hrTicker: the key is skipped)
    ("bare with a stream key", _TICKER_EVENT[:-1] + b',"stream":"x"}', "bare", 0, 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "readers"),
    [w[1:3] for w in WRAPPERS if w[2] != "invalid"],
    ids=[w[0] for w in WRAPPERS if w[2] != "invalid"],
)
def test_binance_wrapper_variant_same_result_or_refusal_from_both_readers(
    raw: bytes, readers: str
) -> None:
    obj = orjson.loads(raw)
    assert binance.is_combined(obj) == (readers != "bare")
    scanned = scan_raw(binance.COMBINED, raw)
    if readers in ("refused", "bare"):
        with pytest.raises(NormalizeError, match=r"stream|data"):
            read_fields(binance.COMBINED, obj, "doc")
        assert scanned is None
        return
    per_line = read_fields(binance.COMBINED, obj, "doc")
    assert per_line == {"stream": obj["stream"], "data": obj["data"]}
    assert scanned == (per_line if readers == "same" else None)


@pytest.mark.parametrize(
    ("raw", "per_line", "quarantined"), [w[1:2] + w[3:] for w in WRAPPERS],
    ids=[w[0] for w in WRAPPERS],
)  # fmt: skip
@pytest.mark.parametrize("ex", ["binance", "binanceusdm"])
def test_binance_wrapper_variant_frame_same_on_both_paths(
    ex: str, raw: bytes, per_line: int, quarantined: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole line of each variant: the scanner takes it or leaves it, and the demux's
    result equals the per-line path's (rows, books, control, quarantine and reasons)."""
    line = encode_envelope(doc_shapes.BASE_NS, "docs", ex, 1, "msg", raw)
    fast, slow = both_paths(line, monkeypatch, doc_shapes.SEGMENT)
    assert_same(fast, slow)
    assert (fast.per_line, fast.quarantined) == (per_line, quarantined)


def test_declared_shape_key_declared_twice_refused() -> None:
    # the scan looks a key up from the one after the last it met: one field per key
    with pytest.raises(ValueError, match="declared twice"):
        ObjectShape(("px", shape.V_DEC, "price"), ("px", shape.V_DEC, "size"))


def test_declared_shape_keys_in_any_order_read_alike() -> None:
    decl = ObjectShape(
        ("a", shape.V_INT, "x"), ("b", shape.V_STR, "y"), ("c", shape.V_DEC, "z"),
        required=("a", "b", "c"),
    )  # fmt: skip
    want = scan(decl, {"a": 1, "b": "s", "c": "1.5"})
    assert want is not None
    for order in ("acb", "bac", "bca", "cab", "cba"):
        obj = {k: {"a": 1, "b": "s", "c": "1.5"}[k] for k in order}
        assert scan(decl, obj) == want, order
    assert scan(decl, {"a": 1, "b": "s", "a2": 2, "c": "1.5"}) is None  # a closed shape


def test_declared_shape_key_compared_in_place_only_when_plain() -> None:
    # the scanner compares declared keys with the wire bytes in place: a key that only
    # resembles one (an escape spelling it, a prefix, a longer key, no colon) is not it
    decl = ObjectShape(("ab", shape.V_INT, "x"), ("abc", shape.V_INT, "y"), open=True)
    assert scan_raw(decl, b'{"ab":1,"abc":2}') == {"x": 1, "y": 2}
    assert scan_raw(decl, b'{"abc" : 2 , "ab":\t1}') == {"x": 1, "y": 2}
    assert scan_raw(decl, b'{"a\\u0062":1}') is None  # an escape: the per-line path
    assert scan_raw(decl, b'{"abcd":1,"ab":3}') == {"x": 3}  # an undeclared key, skipped
    assert scan_raw(decl, b'{"a":1,"ab":3}') == {"x": 3}
    assert scan_raw(decl, b'{"ab" 1}') is None
    assert scan_raw(decl, b'{"ab"') is None
    for key in ('a"b', "a\\b", "\u00e9", "a\nb"):
        with pytest.raises(ValueError, match="printable ASCII"):
            ObjectShape((key, shape.V_INT, "x"))


@pytest.mark.parametrize(
    ("decl", "key", "level"),
    [
        (ObjectShape(("b", shape.V_BIDS, "bids")), "b", ["1.5", "2"]),
        (ObjectShape(("b", shape.V_TIMED_BIDS, "t")), "b", ["1.5", "2", "1618678133.1"]),
        (ObjectShape(("b", shape.V_BIDS_OBJ, "bids")), "b", {"price": "1.5", "qty": "2"}),
        (ObjectShape(("c", shape.V_SIDED_LEVELS, "lv", {"buy": "bid"})), "c", ["buy", "1", "2"]),
    ],
)
def test_level_scanners_rows_past_the_given_room_all_kept(
    decl: ObjectShape, key: str, level: Any
) -> None:
    # a level scanner makes room for the whole list before its loop: from a level row array
    # of one row, a list of 1 to 300 levels (and many lists) gives every row in order
    layout = {c: -1 for c in decl.columns if isinstance(c, str)}
    args = decl.args_for(layout)
    for n in (1, 2, 7, 300):
        raw = orjson.dumps({key: [level] * n})
        buf = np.frombuffer(raw, np.uint8)
        out = np.full(4, -1, np.int64)
        for room in (1, 64, 4096):
            lv = np.full((room, LV_COLS), -7, np.int64)
            lv[0] = 99  # a row written before: kept
            p, _seen, lv, n_lv = flat_object(buf, 0, len(buf), args, out, 5, lv, 1)
            assert p == len(buf) and n_lv == n + 1, (n, room)
            assert (lv[0] == 99).all()
            assert (lv[1 : n + 1, 0] == 5).all() and (lv[1 : n + 1, 1] == 0).all()
            spans = {(int(a), int(b)) for a, b in lv[1 : n + 1, 2:4]}
            assert len({bytes(buf[a:b]) for a, b in spans}) == 1  # every price "1.5" or "1"
