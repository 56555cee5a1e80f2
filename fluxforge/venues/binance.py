"""Binance spot (``binance``, ``binanceus``), USD-M futures (``binanceusdm``) and COIN-M
futures (``binancecoinm``).

Frames come raw (a single-stream connection) or wrapped by a combined stream
(``{"stream":"sushiusdt@depth@100ms","data":{...}}``, declared as ``COMBINED``); the wrapper
is removed first. Payloads::

    depthUpdate {"e","E","T","s","U":first,"u":final,"pu":prevFinal,"b":[[px,qty]],"a":[..]}
        -> book update; futures carry pu (chain binance_futures), spot has no pu and no T
           (chain binance_spot: U == previous u + 1). COIN-M adds "ps" (pair).
    bookTicker  {"e","u","s","b","B","a","A","T","E"} (spot: no e/E/T)
        -> a quote AND a TopOfBook (u is in the depth id sequence: book cross-check)
    aggTrade    {"e","E","a":aggId,"s","p","q","f","l","T","m"} -> trade, id = a
    trade       {"e","E","t":id,"s","p","q","T","m"}           -> trade, id = t
    24hrTicker  {"e","E","s","c":last,["b","B","a","A"]}        -> quote
    <sym>@depth5|10|20 (combined stream only: the symbol is in the stream name)
                top-N pushes -> book SNAPSHOT with depth N, no chain
    kline, 24hrMiniTicker, markPriceUpdate, forceOrder, ...     -> control (bars come from
                                                                   the SQL models)
    {"result":null,"id":1} (subscribe response), {"code","msg"} -> control

REST (envelope kind "rest", ``url`` set by the daemon)::

    GET .../depth?symbol=SUSHIUSDT&limit=1000 -> {"lastUpdateId",["E","T",]"bids","asks"}
        -> BookMessage(is_snapshot=True, final_id=lastUpdateId, from_rest=True)
    exchangeInfo and anything else (instrument metadata, errors)  -> control

Trade side is the taker side: ``m`` (buyer is maker) true -> sell. ts_event: ``T`` (trade
time) for trades, ``E`` (event time) for everything else, ts_recv when the venue sends no
time (spot bookTicker, spot REST depth).

Symbols: ``SUSHIUSDT`` -> ``SUSHI-USDT`` (longest known quote suffix), COIN-M / delivery
``BTCUSD_PERP`` -> ``BTC-USD-PERP``, ``BTCUSDT_210625`` -> ``BTC-USDT-210625``. Spot and
futures never share an exchange id, so a USD-M perpetual is plainly ``BTC-USDT``.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from numba import njit

from fluxforge.events import (
    CHAIN_BINANCE_FUTURES,
    CHAIN_BINANCE_SPOT,
    BookMessage,
    EventSink,
    NormalizeError,
    TopOfBook,
)
from fluxforge.segments import Envelope
from fluxforge.venues.common import (
    as_dict,
    atomic,
    checked_symbol,
    join_symbol,
    missing_field,
    read_fields,
    split_concat,
    venue_symbol,
)
from fluxforge.wire.shape import (
    V_ASKS,
    V_BIDS,
    V_BOOL,
    V_DEC,
    V_ENUM,
    V_INT,
    V_INT_SPAN,
    V_MS,
    V_NESTED,
    V_OPT_DEC,
    V_POS,
    V_STR,
    ObjectShape,
)

PARTIAL_DEPTH_RE = re.compile(r"([a-z0-9_]+)@depth(5|10|20)(?:@\d+ms)?")

SPOT = ("binance", "binanceus")
FUTURES = ("binanceusdm", "binancecoinm")
EXCHANGES = SPOT + FUTURES
# trade side is the taker's: "m" (buyer is the maker) true means a seller took the bid
TAKER_SIDE = {False: "buy", True: "sell"}
DEPTH_CHANNEL = "depth"  # channel of every diff-depth and REST depth book message

CONTROL_EVENTS = frozenset(
    {
        "kline",
        "continuous_kline",
        "indexPrice_kline",
        "markPrice_kline",
        "24hrMiniTicker",
        "markPriceUpdate",
        "indexPriceUpdate",
        "forceOrder",
        "compositeIndex",
        "contractInfo",
        "assetIndexUpdate",
        "avgPrice",
    }
)


@functools.lru_cache(maxsize=4096)
def venue_symbol_to_symbol(s: str) -> str:
    """``SUSHIUSDT`` -> ``SUSHI-USDT``; ``BTCUSD_PERP`` -> ``BTC-USD-PERP``. A name no known
    quote asset ends is kept upper-cased rather than refused (new quote assets appear)."""
    name, _, contract = s.upper().partition("_")
    pair = split_concat(name)
    parts = [*pair] if pair else [name]
    if contract:
        parts.append(contract)
    return checked_symbol(join_symbol(*parts), s)


def chain_of(ex: str) -> str:
    """The update-id chain rule of an exchange id: futures link by ``pu``, spot by ``U``."""
    return CHAIN_BINANCE_FUTURES if ex in FUTURES else CHAIN_BINANCE_SPOT


@functools.lru_cache(maxsize=4096)
def symbol_of(raw: str) -> str:
    return venue_symbol_to_symbol(venue_symbol(raw, "symbol"))


# ---------------------------------------------------------------- declared shapes
# Each event object, declared once: the per-line handlers below read it with ``read_fields``,
# the byte scanners (fluxforge.demux.binance) with the same declaration. Output columns are
# named; a key kept by no column (None) is only checked by the scanner (the per-line path
# ignores it, so a line the scanner refuses for it is judged here).


# The combined-stream wrapper of a ``/stream?streams=...`` connection: the stream's name and
# its payload, an event object or, on the all-market streams (``!ticker@arr``...), an array of
# them. No Binance event has either key: a payload object carrying both is a wrapper
# (``is_combined``), read by this declaration; any other payload is a bare frame of a
# single-stream connection. The scanner tells them apart by the same declaration.
COMBINED = ObjectShape(
    ("stream", V_STR, "stream"),
    ("data", V_NESTED, "data"),
    required=("stream", "data"),
)


def is_combined(d: Any) -> bool:
    """Whether a payload is a combined-stream wrapper: an object with ``COMBINED``'s required
    keys (the scanner: ``bytescan.declared_keys`` and ``has_required`` on its bytes)."""
    return isinstance(d, dict) and missing_field(COMBINED, d) is None


def _depth_update(futures: bool) -> ObjectShape:
    """The depthUpdate object. Spot sends no ``pu`` (and no ``T``); futures link each update
    to the previous one by ``pu``; COIN-M adds ``ps`` (the pair). No ``E``: the receive time."""
    return ObjectShape(
        ("e", V_ENUM, None, ("depthUpdate",)),
        ("E", V_MS, "ts_event"),
        ("T", V_INT, None),
        ("s", V_STR, "venue_symbol"),
        ("U", V_INT, "first_id"),
        ("u", V_INT, "final_id"),
        ("pu", V_INT, "prev_id" if futures else None),  # spot: no chain to the previous
        ("ps", V_STR, None),
        ("b", V_BIDS, "bids"),
        ("a", V_ASKS, "asks"),
        required=("e", "s", "U", "u", "b", "a", *(("pu",) if futures else ())),
    )


# exchange is futures -> its depthUpdate declaration
DEPTH_UPDATE = {False: _depth_update(False), True: _depth_update(True)}
# a whole depth snapshot: REST /depth (COIN-M adds "symbol"/"pair", futures "E"/"T") and the
# spot partial-depth push {lastUpdateId, bids, asks}
SNAPSHOT = ObjectShape(
    ("lastUpdateId", V_INT, "final_id"),
    ("E", V_MS, "ts_event"),
    ("T", V_INT, None),
    ("bids", V_BIDS, "bids"),
    ("asks", V_ASKS, "asks"),
    ("symbol", V_STR, None),
    ("pair", V_STR, None),
    required=("lastUpdateId", "bids", "asks"),
)
# bookTicker: spot sends {u, s, b, B, a, A} only, futures add e, E, T. "u" is in the depth id
# sequence (a book cross-check)
BOOK_TICKER = ObjectShape(
    ("e", V_ENUM, None, ("bookTicker",)),
    ("u", V_INT, "update_id"),
    ("E", V_MS, "ts_event"),
    ("T", V_INT, None),
    ("s", V_STR, "venue_symbol"),
    ("b", V_DEC, "bid_px"),
    ("B", V_DEC, "bid_sz"),
    ("a", V_DEC, "ask_px"),
    ("A", V_DEC, "ask_sz"),
    required=("u", "s", "b", "B", "a", "A"),
)
# aggTrade {e,E,a,s,p,q,f,l,T,m[,M]} and trade {e,E,s,t,p,q,[b,a,]T,m,M}: "a" is the aggregate
# trade id of an aggTrade but the seller's order id of a trade, so the id's column depends on
# the event (TRADE_ID_COLUMN). "m" (buyer is the maker) gives the taker side (TAKER_SIDE).
TRADE = ObjectShape(
    ("e", V_ENUM, "type", ("aggTrade", "trade")),
    ("T", V_MS, "ts_event"),
    ("m", V_BOOL, "buyer_maker"),
    ("M", V_BOOL, None),
    ("a", V_INT_SPAN, "agg_id"),
    ("t", V_INT_SPAN, "trade_id"),
    ("E", V_INT, None),
    ("f", V_INT, None),
    ("l", V_INT, None),
    ("b", V_INT, None),
    ("s", V_STR, "venue_symbol"),
    ("p", V_POS, "price"),
    ("q", V_POS, "size"),
    required=("e", "T", "m", "s", "p", "q"),
)
TRADE_ID_COLUMN = {"aggTrade": "agg_id", "trade": "trade_id"}
# 24hrTicker: the last price and, when sent, the best bid/ask
TICKER_24H = ObjectShape(
    ("e", V_ENUM, None, ("24hrTicker",)),
    ("E", V_MS, "ts_event"),
    ("s", V_STR, "venue_symbol"),
    ("c", V_OPT_DEC, "last"),
    ("b", V_OPT_DEC, "bid_px"),
    ("B", V_OPT_DEC, "bid_sz"),
    ("a", V_OPT_DEC, "ask_px"),
    ("A", V_OPT_DEC, "ask_sz"),
    required=("s", "c"),
    open=True,  # p, P, w, x, Q, o, h, l, v, q, O, C, F, L, n: not read
)


def ids_in_order(first: Any, final: Any) -> Any:
    """A depthUpdate's first id ``U`` is never after its final id ``u`` (both paths apply
    this one rule: the per-line handlers to ints, the scanners to id columns)."""
    return first <= final


def _ordered_ids(f: dict, where: str) -> None:
    if not ids_in_order(f["first_id"], f["final_id"]):
        raise NormalizeError(f"{where}: U={f['first_id']} > u={f['final_id']}")


@njit(cache=True)
def event_time(ts_event: int, ts_recv: int) -> int:
    """The venue's event time (ns; -1 when it sent no ``E``: spot bookTicker, spot REST depth,
    spot partial depth), else the receive time. Compiled, because the byte scanner
    (fluxforge.demux.binance) applies this same rule to its rows."""
    return ts_recv if ts_event < 0 else ts_event


def _ts_event(env: Envelope, f: dict) -> int:
    return event_time(f.get("ts_event", -1), env.ts)


@atomic("binance")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One Binance envelope -> rows in ``sink``; returns "data" or "control"."""
    if env.kind == "rest":
        return _rest(env, sink)
    d = env.data
    if is_combined(d):
        f = read_fields(COMBINED, d, "combined stream")
        stream, d = f["stream"], f["data"]
        partial = PARTIAL_DEPTH_RE.fullmatch(stream)
        if partial is not None:
            return _partial_depth(env, partial, as_dict(d, stream), sink)
    if isinstance(d, list):
        # all-market streams (!bookTicker, !ticker@arr) deliver arrays of the same events
        results = [_event(env, as_dict(x, f"frame[{i}]"), sink) for i, x in enumerate(d)]
        return "data" if "data" in results or not results else "control"
    if not isinstance(d, dict):
        raise NormalizeError(f"binance: payload is a {type(d).__name__}, not a JSON object")
    return _event(env, d, sink)


def _event(env: Envelope, d: dict, sink: EventSink) -> str:
    e = d.get("e")
    if e is None:
        if all(key in d for key in BOOK_TICKER.required):
            return _book_ticker(env, d, sink)  # spot bookTicker has no "e"
        if "id" in d and ("result" in d or "error" in d):
            return "control"  # SUBSCRIBE / LIST_SUBSCRIPTIONS response
        if "code" in d and "msg" in d:
            return "control"
        if "lastUpdateId" in d:
            raise NormalizeError(
                "binance: partial depth frame outside a combined stream: no symbol"
            )
        raise NormalizeError(f"binance: unknown message without event type: keys {sorted(d)[:8]}")
    handler = HANDLERS.get(e)
    if handler is not None:
        return handler(env, d, sink)
    if e in CONTROL_EVENTS:
        return "control"
    raise NormalizeError(f"binance: unknown event type {str(e)[:40]!r}")


def _diff_depth(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(DEPTH_UPDATE[env.ex in FUTURES], d, "depthUpdate")
    _ordered_ids(f, "depthUpdate")
    raw = f["venue_symbol"]
    msg = BookMessage(
        env.ex, symbol_of(raw), raw, DEPTH_CHANNEL, _ts_event(env, f), env.ts, env.seq, False,
        f["bids"], f["asks"], first_id=f["first_id"], final_id=f["final_id"],
        prev_id=f.get("prev_id", -1), chain=chain_of(env.ex),
    )  # fmt: skip
    sink.book(msg)
    return "data"


def _partial_depth(env: Envelope, m: re.Match, d: dict, sink: EventSink) -> str:
    """``<symbol>@depth<N>[@100ms]``: the whole top N every push (spot: ``SNAPSHOT``, the
    venue name from the stream; futures: a depthUpdate whose b/a are the top N). A book
    snapshot with ``depth=N`` and no chain: consecutive pushes are not diffs of each other."""
    where = m.group(0)
    if "e" in d:
        f = read_fields(DEPTH_UPDATE[env.ex in FUTURES], d, where)
        _ordered_ids(f, where)
        raw = f["venue_symbol"]
    else:
        f = read_fields(SNAPSHOT, d, where)
        raw = m.group(1).upper()
    msg = BookMessage(
        env.ex, symbol_of(raw), raw, f"depth{m.group(2)}", _ts_event(env, f), env.ts, env.seq,
        True, f["bids"], f["asks"], final_id=f["final_id"], depth=int(m.group(2)),
    )  # fmt: skip
    sink.book(msg)
    return "data"


def _book_ticker(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(BOOK_TICKER, d, "bookTicker")
    raw = f["venue_symbol"]
    symbol = symbol_of(raw)
    bid_px, bid_sz, ask_px, ask_sz = f["bid_px"], f["bid_sz"], f["ask_px"], f["ask_sz"]
    ts_event = _ts_event(env, f)
    sink.quote(env.ex, symbol, raw, ts_event, env.ts, bid_px, bid_sz, ask_px, ask_sz, None, env.seq)
    sink.top(TopOfBook(env.ex, symbol, f["update_id"], bid_px, bid_sz, ask_px, ask_sz, env.ts))
    return "data"


def _trade(env: Envelope, d: dict, sink: EventSink) -> str:
    e = d["e"]
    f = read_fields(TRADE, d, str(e))
    id_column = TRADE_ID_COLUMN[f["type"]]
    if id_column not in f:
        key = TRADE.names[TRADE.columns.index(id_column)]
        raise NormalizeError(f"{e}: missing field {key!r}")
    raw = f["venue_symbol"]
    sink.trade(
        env.ex, symbol_of(raw), raw, f["ts_event"], env.ts, str(f[id_column]), f["price"],
        f["size"], TAKER_SIDE[f["buyer_maker"]], env.seq,
    )  # fmt: skip
    return "data"


def _ticker_24h(env: Envelope, d: dict, sink: EventSink) -> str:
    f = read_fields(TICKER_24H, d, "24hrTicker")
    raw = f["venue_symbol"]
    sink.quote(
        env.ex, symbol_of(raw), raw, _ts_event(env, f), env.ts, f.get("bid_px"),
        f.get("bid_sz"), f.get("ask_px"), f.get("ask_sz"), f.get("last"), env.seq,
    )  # fmt: skip
    return "data"


HANDLERS = {
    "depthUpdate": _diff_depth,
    "bookTicker": _book_ticker,
    "aggTrade": _trade,
    "trade": _trade,
    "24hrTicker": _ticker_24h,
}


def rest_is_depth(url: str) -> bool:
    """A REST request for a depth snapshot (exchangeInfo, time...: instrument metadata)."""
    return urlsplit(url).path.endswith("/depth")


def rest_depth_symbol(url: str) -> str:
    """The venue symbol a REST depth url asks for (``symbol=``), checked."""
    symbols = parse_qs(urlsplit(url).query).get("symbol")
    if not symbols:
        raise NormalizeError(f"REST depth: no symbol=... in url {url[:120]!r}")
    raw = venue_symbol(symbols[0], "REST depth symbol")
    symbol_of(raw)
    return raw


def _rest(env: Envelope, sink: EventSink) -> str:
    url = env.url or ""
    if not rest_is_depth(url):
        return "control"
    d = env.data
    if isinstance(d, dict) and "code" in d and "msg" in d and "lastUpdateId" not in d:
        return "control"  # the venue refused the request; the book keeps waiting
    d = as_dict(d, "REST depth")
    raw = rest_depth_symbol(url)
    f = read_fields(SNAPSHOT, d, "REST depth")
    msg = BookMessage(
        env.ex, symbol_of(raw), raw, DEPTH_CHANNEL, _ts_event(env, f), env.ts, env.seq, True,
        f["bids"], f["asks"], final_id=f["final_id"], chain=chain_of(env.ex), from_rest=True,
    )  # fmt: skip
    sink.book(msg)
    return "data"
