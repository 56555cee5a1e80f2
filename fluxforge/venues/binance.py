"""Binance spot (``binance``, ``binanceus``), USD-M futures (``binanceusdm``) and COIN-M
futures (``binancecoinm``).

Frames come raw or wrapped by a combined stream (``{"stream":"sushiusdt@depth@100ms",
"data":{...}}``); the wrapper is removed first. Payloads::

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
from urllib.parse import parse_qs, urlsplit

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
    dec,
    field,
    join_symbol,
    levels,
    ms_to_ns,
    opt_dec,
    positive,
    split_concat,
    venue_symbol,
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


def _int(d: dict, key: str, where: str) -> int:
    v = field(d, key, where)
    if type(v) is not int or v < 0:
        raise NormalizeError(f"{where}.{key}={v!r}: expected a non-negative integer id")
    return v


@functools.lru_cache(maxsize=4096)
def symbol_of(raw: str) -> str:
    return venue_symbol_to_symbol(venue_symbol(raw, "symbol"))


def _symbol(d: dict, where: str) -> tuple[str, str]:
    raw = field(d, "s", where)
    if type(raw) is not str:
        raise NormalizeError(f"{where}.s={raw!r:.40}: expected a string")
    return symbol_of(raw), raw


def _event_ts(env: Envelope, d: dict, key: str, where: str) -> int:
    v = d.get(key)
    return env.ts if v is None else ms_to_ns(v, f"{where}.{key}")


@atomic("binance")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One Binance envelope -> rows in ``sink``; returns "data" or "control"."""
    if env.kind == "rest":
        return _rest(env, sink)
    d = env.data
    if isinstance(d, dict) and "stream" in d and "data" in d:
        stream = d["stream"]
        d = d["data"]
        partial = PARTIAL_DEPTH_RE.fullmatch(stream) if type(stream) is str else None
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
        if "u" in d and "s" in d and "b" in d and "a" in d and "B" in d:
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


def _depth_update(env: Envelope, d: dict, sink: EventSink) -> str:
    symbol, raw = _symbol(d, "depthUpdate")
    first, final = _int(d, "U", "depthUpdate"), _int(d, "u", "depthUpdate")
    if first > final:
        raise NormalizeError(f"depthUpdate: U={first} > u={final}")
    futures = env.ex in FUTURES
    prev = _int(d, "pu", "depthUpdate") if futures else -1
    msg = BookMessage(
        env.ex,
        symbol,
        raw,
        DEPTH_CHANNEL,
        _event_ts(env, d, "E", "depthUpdate"),
        env.ts,
        env.seq,
        False,
        levels(field(d, "b", "depthUpdate"), "depthUpdate.b"),
        levels(field(d, "a", "depthUpdate"), "depthUpdate.a"),
        first_id=first,
        final_id=final,
        prev_id=prev,
        chain=chain_of(env.ex),
    )
    sink.book(msg)
    return "data"


def _partial_depth(env: Envelope, m: re.Match, d: dict, sink: EventSink) -> str:
    """``<symbol>@depth<N>[@100ms]``: the whole top N every push (spot: {"lastUpdateId",
    "bids","asks"}; futures: a depthUpdate whose b/a are the top N). A book snapshot with
    ``depth=N`` and no chain: consecutive pushes are not diffs of each other."""
    where = m.group(0)
    if "e" in d:
        bids, asks = field(d, "b", where), field(d, "a", where)
        final_id = _int(d, "u", where)
    else:
        bids, asks = field(d, "bids", where), field(d, "asks", where)
        final_id = _int(d, "lastUpdateId", where)
    raw = venue_symbol(d.get("s") or m.group(1).upper(), f"{where} symbol")
    msg = BookMessage(
        env.ex,
        venue_symbol_to_symbol(raw),
        raw,
        f"depth{m.group(2)}",
        _event_ts(env, d, "E", where),
        env.ts,
        env.seq,
        True,
        levels(bids, f"{where}.bids"),
        levels(asks, f"{where}.asks"),
        final_id=final_id,
        depth=int(m.group(2)),
    )
    sink.book(msg)
    return "data"


def _book_ticker(env: Envelope, d: dict, sink: EventSink) -> str:
    symbol, raw = _symbol(d, "bookTicker")
    uid = _int(d, "u", "bookTicker")
    bid_px = dec(field(d, "b", "bookTicker"), "bookTicker.b")
    bid_sz = dec(field(d, "B", "bookTicker"), "bookTicker.B")
    ask_px = dec(field(d, "a", "bookTicker"), "bookTicker.a")
    ask_sz = dec(field(d, "A", "bookTicker"), "bookTicker.A")
    ts_event = _event_ts(env, d, "E", "bookTicker")
    sink.quote(env.ex, symbol, raw, ts_event, env.ts, bid_px, bid_sz, ask_px, ask_sz, None, env.seq)
    sink.top(TopOfBook(env.ex, symbol, uid, bid_px, bid_sz, ask_px, ask_sz, env.ts))
    return "data"


def _trade(env: Envelope, d: dict, sink: EventSink) -> str:
    e = d["e"]
    symbol, raw = _symbol(d, e)
    trade_id = _int(d, "a" if e == "aggTrade" else "t", e)
    maker = field(d, "m", e)
    if type(maker) is not bool:
        raise NormalizeError(f"{e}.m={maker!r}: expected true/false (buyer is maker)")
    sink.trade(
        env.ex,
        symbol,
        raw,
        ms_to_ns(field(d, "T", e), f"{e}.T"),
        env.ts,
        str(trade_id),
        positive(field(d, "p", e), f"{e}.p"),
        positive(field(d, "q", e), f"{e}.q"),
        TAKER_SIDE[maker],
        env.seq,
    )
    return "data"


def _ticker_24h(env: Envelope, d: dict, sink: EventSink) -> str:
    symbol, raw = _symbol(d, "24hrTicker")
    sink.quote(
        env.ex,
        symbol,
        raw,
        _event_ts(env, d, "E", "24hrTicker"),
        env.ts,
        opt_dec(d.get("b"), "24hrTicker.b"),
        opt_dec(d.get("B"), "24hrTicker.B"),
        opt_dec(d.get("a"), "24hrTicker.a"),
        opt_dec(d.get("A"), "24hrTicker.A"),
        opt_dec(field(d, "c", "24hrTicker"), "24hrTicker.c"),
        env.seq,
    )
    return "data"


HANDLERS = {
    "depthUpdate": _depth_update,
    "bookTicker": _book_ticker,
    "aggTrade": _trade,
    "trade": _trade,
    "24hrTicker": _ticker_24h,
}


def _rest(env: Envelope, sink: EventSink) -> str:
    url = env.url or ""
    parts = urlsplit(url)
    if not parts.path.endswith("/depth"):
        return "control"  # exchangeInfo, time, ... instrument metadata
    d = env.data
    if isinstance(d, dict) and "code" in d and "msg" in d and "lastUpdateId" not in d:
        return "control"  # the venue refused the request; the book keeps waiting
    d = as_dict(d, "REST depth")
    symbols = parse_qs(parts.query).get("symbol")
    if not symbols:
        raise NormalizeError(f"REST depth: no symbol=... in url {url[:120]!r}")
    raw = venue_symbol(symbols[0], "REST depth symbol")
    msg = BookMessage(
        env.ex,
        venue_symbol_to_symbol(raw),
        raw,
        DEPTH_CHANNEL,
        _event_ts(env, d, "E", "REST depth"),
        env.ts,
        env.seq,
        True,
        levels(field(d, "bids", "REST depth"), "REST depth.bids"),
        levels(field(d, "asks", "REST depth"), "REST depth.asks"),
        final_id=_int(d, "lastUpdateId", "REST depth"),
        chain=chain_of(env.ex),
        from_rest=True,
    )
    sink.book(msg)
    return "data"
