"""Coinbase: the Exchange (ex-Pro) websocket feed and the Advanced Trade feed.

The two feeds are told apart by shape: Advanced Trade messages carry ``channel`` and an
``events`` list, Exchange messages a top-level ``type``. The synthetic source writes these
same shapes (exchange id ``synthetic``).

Exchange feed (``wss://ws-feed.exchange.coinbase.com``, recorded in the captures)::

    {"type":"snapshot","product_id","bids":[[px,sz]..],"asks":[..]}        -> book snapshot
    {"type":"l2update","product_id","changes":[[side,px,sz]..],"time"}     -> book update
    {"type":"ticker","sequence","product_id","price","best_bid","best_ask",
     ["best_bid_size","best_ask_size",]"side","time","trade_id","last_size"} -> quote
    {"type":"match"|"last_match","trade_id","maker_order_id","taker_order_id",
     "side","size","price","product_id","sequence","time"}                 -> trade
    subscriptions, heartbeat, status, error                                -> control

Advanced Trade feed (``wss://advanced-trade-ws.coinbase.com``)::

    {"channel":"l2_data","timestamp","sequence_num","events":[{"type":"snapshot"|"update",
     "product_id","updates":[{"side":"bid"|"offer","event_time","price_level",
     "new_quantity"}..]}]}                                                 -> one book msg/event
    {"channel":"market_trades","timestamp","sequence_num","events":[{"type","trades":[
     {"trade_id","product_id","price","size","side":"BUY"|"SELL","time"}]}]} -> trades
    {"channel":"ticker"|"ticker_batch","timestamp","events":[{"type","tickers":[
     {"product_id","price","best_bid","best_bid_quantity","best_ask",
      "best_ask_quantity",..}]}]}                                          -> quotes
    heartbeats, subscriptions, status, candles                             -> control

Decisions:

* Trade side is the TAKER side. Exchange ``match.side`` is the maker order's side (Coinbase
  docs; the captures confirm it: each ticker, whose side is the taker's, shows the opposite
  side of its match), so it is inverted. Advanced Trade ``market_trades.side`` is documented
  as the taker side and kept (``AT_TRADE_SIDE_IS_MAKER`` flips that if Coinbase says
  otherwise).
* ``last_match`` is a trade row: it is the last trade before the subscription (trade ids run
  on from it without a hole). After a reconnect it can repeat a trade already stored; trade
  ids are the key to drop such repeats. Advanced Trade ``market_trades`` snapshots (recent
  trades at subscription time) are kept for the same reason.
* Level2 ``buy``/``bid`` -> bid, ``sell``/``offer``/``ask`` -> ask. Sizes are absolute, "0"
  removes the level. Neither feed has a book checksum; the Exchange feed has no book sequence
  either. Advanced Trade's ``sequence_num`` (per connection, all channels) is carried as the
  book message's ``final_id`` for gap forensics, with no chain rule attached.
* ts_event: the venue's time of the message (l2update/match/ticker ``time``; Advanced Trade
  the latest ``event_time`` of an update event, else the message ``timestamp``). Exchange
  snapshots carry no time: ts_event = ts_recv.
"""

from __future__ import annotations

import functools
from typing import Any

from numba import njit

from fluxforge.events import BookMessage, EventSink, NormalizeError
from fluxforge.segments import Envelope
from fluxforge.venues.common import (
    atomic,
    checked_symbol,
    join_symbol,
    read_fields,
    venue_symbol,
)
from fluxforge.wire.shape import (
    SIDES,
    V_ASKS,
    V_BIDS,
    V_DEC,
    V_ENUM,
    V_ID,
    V_INT,
    V_ISO,
    V_ISO_OPT,
    V_LIST,
    V_OPT_DEC,
    V_POS,
    V_SCALAR,
    V_SIDED_LEVELS,
    V_STR,
    ObjectShape,
)

EXCHANGES = ("coinbase", "coinbaseexchange", "coinbasepro", "coinbaseadvanced", "synthetic")

AT_TRADE_SIDE_IS_MAKER = False
BOOK_CHANNEL = "level2"  # channel of every book message (both feeds)

_EXCHANGE_CONTROL = frozenset({"subscriptions", "heartbeat", "status", "error"})
_AT_CONTROL = frozenset({"heartbeats", "subscriptions", "status", "candles"})
# level2 side words: the per-line path and the byte scanner (fluxforge.demux.coinbase) both
# read this table
L2_SIDES = {"buy": "bid", "bid": "bid", "sell": "ask", "offer": "ask", "ask": "ask"}
MAKER_SIDES = ("buy", "sell")
TAKER_SIDE_OF_MAKER = {"buy": "sell", "sell": "buy"}


@functools.lru_cache(maxsize=4096)
def venue_symbol_to_symbol(s: str) -> str:
    """``BTC-USD`` stays ``BTC-USD`` (Coinbase already writes BASE-QUOTE); XBT->BTC."""
    parts = s.split("-")
    if len(parts) < 2 or not all(parts):
        raise NormalizeError(f"coinbase product {s[:40]!r}: expected BASE-QUOTE")
    return checked_symbol(join_symbol(*parts), s)


@functools.lru_cache(maxsize=4096)
def symbol_of(raw: str) -> str:
    return venue_symbol_to_symbol(venue_symbol(raw, "product_id"))


@atomic("coinbase")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One Coinbase envelope -> rows in ``sink``; returns "data" or "control"."""
    if env.kind == "rest":
        return "control"  # /products and other instrument metadata
    d = env.data
    if not isinstance(d, dict):
        raise NormalizeError(f"coinbase: payload is a {type(d).__name__}, not a JSON object")
    if "channel" in d:
        return _advanced(env, d, sink)
    kind = d.get("type")
    handler = _EXCHANGE_HANDLERS.get(kind)  # type: ignore[arg-type]
    if handler is not None:
        return handler(env, d, sink)
    if kind in _EXCHANGE_CONTROL:
        return "control"
    raise NormalizeError(f"coinbase: unknown message type {str(kind)[:40]!r}")


# ---------------------------------------------------------------- Exchange feed


# The Exchange feed's book messages, declared once: the per-line path reads them with
# ``read_fields``, the byte scanner (fluxforge.demux.coinbase) with the same declarations.
L2UPDATE = ObjectShape(
    ("type", V_ENUM, None, ("l2update",)),
    ("product_id", V_STR, "venue_symbol"),
    ("time", V_ISO, "ts_event"),
    ("changes", V_SIDED_LEVELS, "levels", L2_SIDES),  # [[side, price, size]]: absolute sizes
    required=("type", "product_id", "time", "changes"),
)
SNAPSHOT = ObjectShape(
    ("type", V_ENUM, None, ("snapshot",)),
    ("product_id", V_STR, "venue_symbol"),
    ("bids", V_BIDS, "bids"),
    ("asks", V_ASKS, "asks"),
    ("time", V_ISO, None),  # not documented (no time: ts_recv); checked by the scanner only
    required=("type", "product_id", "bids", "asks"),
)


@njit(cache=True)
def event_time(ts_event: int, ts_recv: int) -> int:
    """An Exchange feed message's event time (ns; -1 when it has none: a snapshot, the first
    ticker of a product), else the receive time. Compiled, because the byte scanner
    (fluxforge.demux.coinbase) applies this same rule to its rows."""
    return ts_recv if ts_event < 0 else ts_event


def _snapshot(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(SNAPSHOT, d, "snapshot")
    raw = f["venue_symbol"]
    sink.book(
        BookMessage(
            env.ex, symbol_of(raw), raw, BOOK_CHANNEL, event_time(-1, env.ts), env.ts, env.seq,
            True, f["bids"], f["asks"],
        )
    )  # fmt: skip
    return "data"


def _l2update(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(L2UPDATE, d, "l2update")
    raw = f["venue_symbol"]
    bids, asks = f["levels"]
    sink.book(
        BookMessage(
            env.ex, symbol_of(raw), raw, BOOK_CHANNEL, f["ts_event"], env.ts, env.seq, False,
            bids, asks,
        )
    )  # fmt: skip
    return "data"


# The Exchange feed's ticker and match / last_match messages, declared once: the per-line path
# reads them with ``read_fields``, the byte scanner (fluxforge.demux.coinbase) with the same
# declarations. Output columns are those of the quotes / trades tables.
TICKER = ObjectShape(
    ("type", V_ENUM, "type", ("ticker",)),
    ("product_id", V_STR, "venue_symbol"),
    ("time", V_ISO, "ts_event"),  # the very first ticker of a product may lack it: ts_recv
    ("best_bid", V_OPT_DEC, "bid_px"),
    ("best_bid_size", V_OPT_DEC, "bid_sz"),
    ("best_ask", V_OPT_DEC, "ask_px"),
    ("best_ask_size", V_OPT_DEC, "ask_sz"),
    ("price", V_OPT_DEC, "last"),
    required=("type", "product_id", "price"),
    open=True,  # sequence, open_24h, volume_24h, side, trade_id, last_size...: not read
)
MATCH = ObjectShape(
    ("type", V_ENUM, "type", ("match", "last_match")),
    ("trade_id", V_ID, "trade_id"),
    ("side", V_ENUM, "side", MAKER_SIDES),  # the MAKER's side: flipped (module doc)
    ("size", V_POS, "size"),
    ("price", V_POS, "price"),
    ("product_id", V_STR, "venue_symbol"),
    ("time", V_ISO, "ts_event"),
    required=("type", "trade_id", "side", "size", "price", "product_id", "time"),
    open=True,  # maker/taker order ids, sequence...: not read
)


def _ticker(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(TICKER, d, "ticker")
    raw = f["venue_symbol"]
    sink.quote(
        env.ex, symbol_of(raw), raw, event_time(f.get("ts_event", -1), env.ts), env.ts,
        f.get("bid_px"), f.get("bid_sz"), f.get("ask_px"), f.get("ask_sz"), f.get("last"),
        env.seq,
    )  # fmt: skip
    return "data"


def _match(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(MATCH, d, str(d.get("type")))
    raw = f["venue_symbol"]
    sink.trade(
        env.ex, symbol_of(raw), raw, f["ts_event"], env.ts, f["trade_id"], f["price"],
        f["size"], TAKER_SIDE_OF_MAKER[f["side"]], env.seq,
    )  # fmt: skip
    return "data"


_EXCHANGE_HANDLERS = {
    "snapshot": _snapshot,
    "l2update": _l2update,
    "ticker": _ticker,
    "match": _match,
    "last_match": _match,
}


# ---------------------------------------------------------------- Advanced Trade feed


# The Advanced Trade data message and its events, declared once: the per-line path reads them
# with ``read_fields``, the byte scanner (fluxforge.demux.coinbase) with the same declarations
# (a list is read there by the declaration of its items).
AT_BOOK_CHANNEL = "l2_data"
AT_TRADES_CHANNEL = "market_trades"
AT_TICKER_CHANNELS = ("ticker", "ticker_batch")
AT_DATA_CHANNELS = (AT_BOOK_CHANNEL, AT_TRADES_CHANNEL, *AT_TICKER_CHANNELS)
AT_MESSAGE = ObjectShape(
    ("channel", V_ENUM, "channel", AT_DATA_CHANNELS),
    ("client_id", V_STR, None),
    ("timestamp", V_ISO, "ts_event"),
    ("sequence_num", V_INT, "final_id"),  # per connection, all channels
    ("events", V_LIST, "events"),
    required=("channel", "timestamp", "events"),
)
AT_BOOK_EVENTS = ("snapshot", "update")
AT_BOOK_EVENT = ObjectShape(
    ("type", V_ENUM, "type", AT_BOOK_EVENTS),
    ("product_id", V_STR, "venue_symbol"),
    ("updates", V_LIST, "items"),
    required=("type", "product_id", "updates"),
)
AT_TRADES_EVENT = ObjectShape(
    ("type", V_STR, None),  # snapshot (recent trades at subscription) or update: both kept
    ("trades", V_LIST, "items"),
    required=("trades",),
)
AT_TICKER_EVENT = ObjectShape(
    ("type", V_STR, None),
    ("tickers", V_LIST, "items"),
    required=("tickers",),
)


def _advanced(env: Envelope, d: dict, sink: EventSink) -> str:
    channel = d["channel"]
    if channel in _AT_CONTROL:
        return "control"
    handler = _AT_HANDLERS.get(channel)
    if handler is None:
        raise NormalizeError(f"coinbase: unknown Advanced Trade channel {str(channel)[:40]!r}")
    handler(env, read_fields(AT_MESSAGE, d, channel), sink)
    return "data"


# One level of an Advanced Trade l2_data event, declared once per event type: the per-line path
# reads it with ``read_fields``, the byte scanner (fluxforge.demux.coinbase) with the same
# declaration. Snapshots carry event_time 1970-01-01: only an update's is read.


def _at_level(update: bool) -> ObjectShape:
    return ObjectShape(
        ("side", V_ENUM, "side", tuple(L2_SIDES)),
        ("event_time", V_ISO_OPT, "ts_event") if update else ("event_time", V_SCALAR, None),
        ("price_level", V_POS, "price"),
        ("new_quantity", V_DEC, "size"),  # absolute; "0" removes the level
        required=("side", "price_level", "new_quantity"),
    )


AT_LEVEL = {kind: _at_level(kind == "update") for kind in AT_BOOK_EVENTS}


@njit(cache=True)
def book_event_time(latest_update_ns: int, message_ns: int) -> int:
    """An Advanced Trade book event's time: the latest ``event_time`` of its updates (0: none),
    else the message ``timestamp``. Compiled, because the byte scanner
    (fluxforge.demux.coinbase) applies this same rule to its rows."""
    return latest_update_ns if latest_update_ns > 0 else message_ns


def _at_l2(env: Envelope, m: dict, sink: EventSink) -> None:
    msgs = []
    for i, item in enumerate(m["events"]):
        where = f"l2_data.events[{i}]"
        ev = read_fields(AT_BOOK_EVENT, item, where)
        kind, raw = ev["type"], ev["venue_symbol"]
        sides: tuple[list, list] = ([], [])
        ts_event = 0
        for j, up in enumerate(ev["items"]):
            f = read_fields(AT_LEVEL[kind], up, f"{where}.updates[{j}]")
            sides[SIDES.index(L2_SIDES[f["side"]])].append((f["price"], f["size"]))
            ts_event = max(ts_event, f.get("ts_event") or 0)  # the latest update's time
        msgs.append(
            BookMessage(
                env.ex, symbol_of(raw), raw, BOOK_CHANNEL,
                book_event_time(ts_event, m["ts_event"]), env.ts, env.seq, kind == "snapshot",
                sides[0], sides[1], final_id=m.get("final_id", -1),
            )
        )  # fmt: skip
    for msg in msgs:
        sink.book(msg)


# Advanced Trade market_trades trade and ticker items, declared once: the per-line path reads
# them with ``read_fields``, the byte scanner (fluxforge.demux.coinbase) with the same
# declarations.
AT_TRADE_SIDES = ("BUY", "SELL", "buy", "sell")
AT_TRADE = ObjectShape(
    ("trade_id", V_ID, "trade_id"),
    ("product_id", V_STR, "venue_symbol"),
    ("price", V_POS, "price"),
    ("size", V_POS, "size"),
    ("side", V_ENUM, "side", AT_TRADE_SIDES),  # the taker side (AT_TRADE_SIDE_IS_MAKER)
    ("time", V_ISO, "ts_event"),
    required=("trade_id", "product_id", "price", "size", "side", "time"),
    open=True,
)
AT_TICKER = ObjectShape(
    ("product_id", V_STR, "venue_symbol"),
    ("best_bid", V_OPT_DEC, "bid_px"),
    ("best_bid_quantity", V_OPT_DEC, "bid_sz"),
    ("best_ask", V_OPT_DEC, "ask_px"),
    ("best_ask_quantity", V_OPT_DEC, "ask_sz"),
    ("price", V_OPT_DEC, "last"),
    required=("product_id",),
    open=True,  # type, volume_24_h, low/high, price_percent_chg_24_h...: not read
)


def at_trade_side(word: str) -> str:
    """The table's (taker) side of an Advanced Trade side word."""
    side = word.lower()
    return TAKER_SIDE_OF_MAKER[side] if AT_TRADE_SIDE_IS_MAKER else side


def _at_items(m: dict, event: ObjectShape, item: ObjectShape, channel: str, key: str) -> list:
    """Every item of every event of a message, read by their declarations."""
    out = []
    for i, ev in enumerate(m["events"]):
        where = f"{channel}.events[{i}]"
        for j, it in enumerate(read_fields(event, ev, where)["items"]):
            out.append(read_fields(item, it, f"{where}.{key}[{j}]"))
    return out


def _at_trades(env: Envelope, m: dict, sink: EventSink) -> None:
    rows = [
        (f["ts_event"], symbol_of(f["venue_symbol"]), f)
        for f in _at_items(m, AT_TRADES_EVENT, AT_TRADE, AT_TRADES_CHANNEL, "trades")
    ]
    # Coinbase lists a batch newest first: store it in trade-time order (stable)
    rows.sort(key=lambda r: r[0])
    for ts_event, symbol, f in rows:
        sink.trade(
            env.ex, symbol, f["venue_symbol"], ts_event, env.ts, f["trade_id"], f["price"],
            f["size"], at_trade_side(f["side"]), env.seq,
        )  # fmt: skip


def _at_ticker(env: Envelope, m: dict, sink: EventSink) -> None:
    rows = [
        (symbol_of(f["venue_symbol"]), f)
        for f in _at_items(m, AT_TICKER_EVENT, AT_TICKER, "ticker", "tickers")
    ]
    for symbol, f in rows:
        sink.quote(
            env.ex, symbol, f["venue_symbol"], m["ts_event"], env.ts, f.get("bid_px"),
            f.get("bid_sz"), f.get("ask_px"), f.get("ask_sz"), f.get("last"), env.seq,
        )  # fmt: skip


_AT_HANDLERS: dict[str, Any] = {
    AT_BOOK_CHANNEL: _at_l2,
    AT_TRADES_CHANNEL: _at_trades,
    AT_TICKER_CHANNELS[0]: _at_ticker,
    AT_TICKER_CHANNELS[1]: _at_ticker,
}
