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

from fluxforge.demux.bytescan import flat_object
from fluxforge.events import NormalizeError
from fluxforge.venues import binance, bitget, coinbase, okx
from fluxforge.venues.common import read_fields
from fluxforge.wire import shape
from fluxforge.wire.shape import ObjectShape
from tests.fixtures import doc_shapes

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
    layout = _layout(decl)
    buf = np.frombuffer(orjson.dumps(obj), np.uint8)
    out = np.full(2 * len(layout) + 2, -1, np.int64)
    lv = np.empty((64, 6), np.int64)
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
        elif kind == shape.V_LIST:
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
        d = payload["data"] if "stream" in payload else payload
        decl = _binance_decl(ex, kind, d)
        if decl is not None:
            out.append((f"binance {k}", decl, d))
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
        binance.TICKER_24H,
        coinbase.SNAPSHOT, coinbase.L2UPDATE, coinbase.MATCH, coinbase.TICKER,
        *coinbase.AT_LEVEL.values(), coinbase.AT_TRADE, coinbase.AT_TICKER, coinbase.AT_MESSAGE,
        coinbase.AT_BOOK_EVENT, coinbase.AT_TRADES_EVENT, coinbase.AT_TICKER_EVENT,
        okx.ARG, okx.BOOK_ITEM, okx.TRADE, okx.TICKER,
        bitget.ARG, bitget.BOOK_ITEM, bitget.TRADE, bitget.TRADE_ROW, bitget.TICKER,
    ]  # fmt: skip
    assert decls == {id(d) for d in want}


@pytest.mark.parametrize(("decl", "obj"), [o[1:] for o in OBJECTS], ids=[o[0] for o in OBJECTS])
def test_declared_shape_broken_value_refused_by_both_readers(decl: ObjectShape, obj: Any) -> None:
    for key, col in zip(decl.names, decl.columns, strict=True):
        if key not in obj or not isinstance(col, str):
            continue
        bad = {**obj, key: {"not": "a value"}}
        with pytest.raises(NormalizeError, match=key):
            read_fields(decl, bad, "doc")
        assert scan(decl, bad) is None
