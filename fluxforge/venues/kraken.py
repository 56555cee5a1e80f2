"""Kraken spot, websocket API v1 (``wss://ws.kraken.com``).

Channel data are arrays ``[channelID, payload..., channelName, pair]``::

    book snapshot [id, {"as":[[px,vol,ts]..],"bs":[..]}, "book-1000", "XBT/CHF"]
    book update   [id, {"a":[[px,vol,ts(,"r")]..]}(, {"b":[..]}), "book-1000", pair]
                  one or two payload objects; the CRC32 "c" sits in the last one
    trade         [id, [[px,vol,time,"b"|"s","m"|"l",misc]..], "trade", pair]
    ticker        [id, {"a":[px,wholeLotVol,lotVol],"b":[..],"c":[px,lotVol],..}, "ticker", pair]
    spread        [id, [bid,ask,time,bidVol,askVol], "spread", pair]
    ohlc-N        -> control (bars come from the SQL models)
    {"event":"heartbeat"|"systemStatus"|"subscriptionStatus"|"pong"} -> control

Book messages carry ``depth`` from the channel name (``book-1000`` -> 1000: Kraken leaves
levels that fall out of that depth to the client to drop) and the update's checksum as
``checksum_kind="kraken"``; snapshots have no checksum. A level's 4th element ``"r"``
(republish) is an ordinary level update. ts_event is the latest level time of the message
(trade: the trade time); tickers carry no time (ts_event = ts_recv). Trade side ``b``/``s`` is
the taker side. Kraken v1 trades have no trade id: ``trade_id`` is "".

Symbols: ``XBT/CHF`` -> ``BTC-CHF`` (XBT->BTC, XDG->DOGE).

Websocket API v2 (``wss://ws.kraken.com/v2``) sends JSON objects instead::

    {"channel":"book","type":"snapshot"|"update","data":[{"symbol":"BTC/USD",
     "bids":[{"price":num,"qty":num}..],"asks":[..],"checksum":uint32,"timestamp":rfc3339}]}
    {"channel":"trade","type":"snapshot"|"update","data":[{"symbol","side":"buy"|"sell",
     "price","qty","ord_type","trade_id","timestamp"}..]}                       -> trades
    {"channel":"ticker","type":..,"data":[{"symbol","bid","bid_qty","ask","ask_qty","last",
     "volume","vwap","low","high","change","change_pct"(,"timestamp")}]}      -> quote
    {"channel":"heartbeat"|"status"|"instrument"|"ohlc",..}, {"method":..} acks -> control

v2 prices and sizes are JSON numbers: their exact text is read from the line
(``common.exact_payload``), never through a float, because the checksum is computed over
it. The v2 book checksum is the v1 rule (CRC32 of the top 10 asks then bids, ``.`` removed,
leading zeros stripped, unsigned) and comes on snapshots too. The subscribed depth is not in
the messages: v2 book messages carry depth 0 (no truncation; a level that left the
subscribed depth stays until the venue sends it again, and a checksum mismatch that this
could cause ends the epoch like any other). Trade snapshots (the last trades before the
subscription) are rows: v2 trades carry ``trade_id``, the key to drop repeats.
"""

from __future__ import annotations

import functools

from fluxforge.events import CHECKSUM_KRAKEN, BookMessage, EventSink, NormalizeError
from fluxforge.segments import Envelope
from fluxforge.venues.common import (
    as_dict,
    as_list,
    atomic,
    checked_symbol,
    dec,
    exact_payload,
    join_symbol,
    opt_dec,
    read_fields,
    seconds_to_ns,
    venue_symbol,
)
from fluxforge.wire.shape import (
    V_ASKS_OBJ,
    V_BIDS_OBJ,
    V_DIGITS,
    V_ENUM,
    V_ID,
    V_INT,
    V_ISO,
    V_NUM,
    V_NUM_POS,
    V_POS,
    V_SECONDS,
    V_STR,
    V_TIMED_ASKS,
    V_TIMED_BIDS,
    ObjectShape,
)

EXCHANGES = ("kraken",)

# v1 events that carry no market data (the demux scanner takes such objects too when they are
# surely valid JSON)
CONTROL_EVENTS = frozenset({"heartbeat", "systemStatus", "subscriptionStatus", "pong", "ping"})
# an object with any of these keys is a websocket v2 message (``_v2``), whatever else it holds
V2_KEYS = ("channel", "method")
TRADE_SIDES = {"b": "buy", "s": "sell"}
BOOK_CHANNEL_PREFIX = "book-"  # book-<depth>: the per-line path and fluxforge.demux.kraken


@functools.lru_cache(maxsize=4096)
def venue_symbol_to_symbol(s: str) -> str:
    """``XBT/CHF`` -> ``BTC-CHF``."""
    parts = s.split("/")
    if len(parts) != 2 or not all(parts):
        raise NormalizeError(f"kraken pair {s[:40]!r}: expected BASE/QUOTE")
    return checked_symbol(join_symbol(*parts), s)


@functools.lru_cache(maxsize=4096)
def symbol_of(raw: str) -> str:
    return venue_symbol_to_symbol(venue_symbol(raw, "kraken pair"))


@atomic("kraken")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One Kraken envelope -> rows in ``sink``; returns "data" or "control"."""
    if env.kind == "rest":
        return "control"  # AssetPairs and other metadata
    d = env.data
    if isinstance(d, dict) and any(k in d for k in V2_KEYS):
        return _v2(env, d, sink)
    if isinstance(d, dict):
        event = d.get("event")
        if event in CONTROL_EVENTS:
            return "control"
        if event == "error":
            return "control"  # a refused request, e.g. unknown pair: no market data in it
        raise NormalizeError(f"kraken: unknown event {str(event)[:40]!r}")
    if not isinstance(d, list):
        raise NormalizeError(f"kraken: payload is a {type(d).__name__}, not an array/object")
    if len(d) < 4 or type(d[-2]) is not str:
        raise NormalizeError(
            f"kraken: channel message needs [id, payload.., name, pair]: {d!r:.80}"
        )
    channel = d[-2]
    raw = d[-1]
    if type(raw) is not str:
        raise NormalizeError(f"kraken: pair {raw!r:.40} is not a string")
    symbol = symbol_of(raw)
    payloads = d[1:-2]
    if channel.startswith(BOOK_CHANNEL_PREFIX):
        return _book(env, channel, symbol, raw, payloads, sink)
    if channel == TRADE_CHANNEL:
        return _trades(env, symbol, raw, payloads, sink)
    if channel == TICKER_CHANNEL:
        return _ticker(env, symbol, raw, payloads, sink)
    if channel == "spread":
        return _spread(env, symbol, raw, payloads, sink)
    if channel.startswith("ohlc"):
        return "control"
    raise NormalizeError(f"kraken: unknown channel {channel[:40]!r}")


# One payload object of a v1 book message, declared once: the per-line path reads it with
# ``read_fields``, the byte scanner (fluxforge.demux.kraken) with the same declaration. Level
# rows are [price, volume, timestamp(, "r")]: the 4th element, the republish flag, marks an
# ordinary level update (not read). A message is a snapshot when a payload has "as"/"bs"
# (``BOOK_SNAPSHOT_KEYS``); an update carries the CRC32 "c" (an unsigned 32-bit number as a
# digit string) in its last payload, and needs one. ts_event: the latest level time.
BOOK_PAYLOAD = ObjectShape(
    ("as", V_TIMED_ASKS, "snapshot_asks"),
    ("bs", V_TIMED_BIDS, "snapshot_bids"),
    ("a", V_TIMED_ASKS, "asks"),
    ("b", V_TIMED_BIDS, "bids"),
    ("c", V_DIGITS, "checksum"),
)
BOOK_SNAPSHOT_KEYS = ("as", "bs")
_SNAPSHOT_COLUMNS = tuple(
    BOOK_PAYLOAD.columns[BOOK_PAYLOAD.names.index(k)] for k in BOOK_SNAPSHOT_KEYS
)
# (column, side) of each level list, in the order a message's levels are kept
BOOK_LEVEL_COLUMNS = (("snapshot_asks", "ask"), ("snapshot_bids", "bid"), ("asks", "ask"),
                      ("bids", "bid"))  # fmt: skip


def _book(
    env: Envelope, channel: str, symbol: str, raw: str, payloads: list, sink: EventSink
) -> str:
    depth_text = channel[len(BOOK_CHANNEL_PREFIX) :]
    if not depth_text.isdigit():
        raise NormalizeError(f"kraken: book channel {channel[:20]!r} has no depth")
    sides: dict[str, list[tuple[str, str]]] = {"bid": [], "ask": []}
    ts_event = 0
    checksum = None
    snapshot = False
    if not payloads:
        raise NormalizeError("kraken book: no payload object")
    for k, p in enumerate(payloads):
        f = read_fields(BOOK_PAYLOAD, p, f"kraken book payload {k}")
        for col, side in BOOK_LEVEL_COLUMNS:
            if col in f:
                rows, latest = f[col]
                sides[side].extend(rows)
                ts_event = max(ts_event, latest)
        snapshot = snapshot or any(col in f for col in _SNAPSHOT_COLUMNS)
        if "checksum" in f:
            if f["checksum"] > CHECKSUM_MAX:
                raise NormalizeError(f"kraken book: checksum c={f['checksum']} is not a crc32")
            checksum = f["checksum"]
    bids, asks = sides["bid"], sides["ask"]
    if not snapshot and checksum is None:
        raise NormalizeError("kraken book update: missing checksum 'c'")
    if not (bids or asks or snapshot):
        raise NormalizeError("kraken book: no 'a'/'b'/'as'/'bs' levels")
    sink.book(
        BookMessage(
            env.ex,
            symbol,
            raw,
            channel,
            ts_event or env.ts,
            env.ts,
            env.seq,
            snapshot,
            bids,
            asks,
            checksum=checksum,
            checksum_kind=CHECKSUM_KRAKEN if checksum is not None else None,
            depth=int(depth_text),
        )
    )
    return "data"


# A v1 trade row, declared once: the per-line path reads it with ``read_fields``, the byte
# scanner (fluxforge.demux.kraken) with the same declaration.
TRADE = ObjectShape(
    ("price", V_POS, "price"),
    ("volume", V_POS, "size"),
    ("time", V_SECONDS, "ts_event"),
    ("side", V_ENUM, "side", tuple(TRADE_SIDES)),  # the taker side: b/s
    ("ordertype", V_STR, None),
    ("misc", V_STR, None),
    required=("price", "volume", "time", "side"),
    array=True,
)
TRADE_CHANNEL = "trade"


def _trades(env: Envelope, symbol: str, raw: str, payloads: list, sink: EventSink) -> str:
    if len(payloads) != 1:
        raise NormalizeError(f"kraken trade: expected one list of trades, got {len(payloads)}")
    rows = [
        read_fields(TRADE, t, f"trade[{i}]") for i, t in enumerate(as_list(payloads[0], "trade"))
    ]
    for f in rows:
        sink.trade(
            env.ex, symbol, raw, f["ts_event"], env.ts, "", f["price"], f["size"],
            TRADE_SIDES[f["side"]], env.seq,
        )  # fmt: skip
    return "data"


# The v1 ticker payload, declared once: its documented keys (each an array), and for the keys
# read, which array element goes to which quotes column ("a"/"b" = [price, whole lot volume
# (an int), lot volume (the exact string)], "c" = [price, lot volume]). The per-line path and
# the byte scanner (fluxforge.demux.kraken) both read this table. Tickers carry no time.
TICKER_KEYS = ("a", "b", "c", "v", "p", "t", "l", "h", "o")
TICKER_PARTS = {"b": {0: "bid_px", 2: "bid_sz"}, "a": {0: "ask_px", 2: "ask_sz"}, "c": {0: "last"}}
TICKER_CHANNEL = "ticker"


def _ticker(env: Envelope, symbol: str, raw: str, payloads: list, sink: EventSink) -> str:
    if len(payloads) != 1:
        raise NormalizeError(f"kraken ticker: expected one payload object, got {len(payloads)}")
    p = as_dict(payloads[0], "ticker")
    f: dict[str, str | None] = {}
    for key, parts in TICKER_PARTS.items():
        v = p.get(key)
        if v is None:
            continue
        v = as_list(v, f"ticker.{key}")
        for idx, col in parts.items():
            if len(v) <= idx:
                raise NormalizeError(f"ticker.{key}: expected at least {idx + 1} elements")
            f[col] = opt_dec(v[idx], f"ticker.{key}[{idx}]")
    sink.quote(
        env.ex, symbol, raw, env.ts, env.ts, f.get("bid_px"), f.get("bid_sz"), f.get("ask_px"),
        f.get("ask_sz"), f.get("last"), env.seq,
    )  # fmt: skip
    return "data"


def _spread(env: Envelope, symbol: str, raw: str, payloads: list, sink: EventSink) -> str:
    if len(payloads) != 1:
        raise NormalizeError(f"kraken spread: expected one payload, got {len(payloads)}")
    s = as_list(payloads[0], "spread")
    if len(s) < 5:
        raise NormalizeError("spread: expected [bid, ask, time, bidVolume, askVolume]")
    sink.quote(
        env.ex,
        symbol,
        raw,
        seconds_to_ns(s[2], "spread.time"),
        env.ts,
        dec(s[0], "spread.bid"),
        dec(s[3], "spread.bidVolume"),
        dec(s[1], "spread.ask"),
        dec(s[4], "spread.askVolume"),
        None,
        env.seq,
    )
    return "data"


# ---------------------------------------------------------------- websocket API v2
# One item of each v2 channel's data list, declared once: the per-line path reads it with
# ``read_fields`` (numbers as exact text), the byte scanner (fluxforge.demux.kraken) with the
# same declarations. Output columns are those of the tables (and of a book message).
V2_BOOK = ObjectShape(
    ("symbol", V_STR, "venue_symbol"),
    ("bids", V_BIDS_OBJ, "bids"),
    ("asks", V_ASKS_OBJ, "asks"),
    ("checksum", V_INT, "checksum"),  # unsigned CRC32, on snapshots and updates
    ("timestamp", V_ISO, "ts_event"),  # (absent on a snapshot: the receive time)
    required=("symbol", "bids", "asks", "checksum"),
)
V2_TRADE = ObjectShape(
    ("symbol", V_STR, "venue_symbol"),
    ("side", V_ENUM, "side", ("buy", "sell")),  # the taker side
    ("price", V_NUM_POS, "price"),
    ("qty", V_NUM_POS, "size"),
    ("ord_type", V_STR, None),
    ("trade_id", V_ID, "trade_id"),
    ("timestamp", V_ISO, "ts_event"),
    required=("symbol", "side", "price", "qty", "trade_id", "timestamp"),
    open=True,
)
V2_TICKER = ObjectShape(
    ("symbol", V_STR, "venue_symbol"),
    ("bid", V_NUM, "bid_px"),
    ("bid_qty", V_NUM, "bid_sz"),
    ("ask", V_NUM, "ask_px"),
    ("ask_qty", V_NUM, "ask_sz"),
    ("last", V_NUM, "last"),
    ("timestamp", V_ISO, "ts_event"),  # (absent: the receive time)
    required=("symbol",),
    open=True,  # volume, vwap, low, high, change, change_pct: not read
)
V2_BOOK_CHANNEL = "book"
V2_TYPES = ("snapshot", "update")
V2_CONTROL = frozenset({"heartbeat", "status", "instrument", "ohlc"})
CHECKSUM_MAX = 2**32 - 1


def _v2(env: Envelope, d: dict, sink: EventSink) -> str:
    if "method" in d and "channel" not in d:
        return "control"  # subscribe / unsubscribe acks, pong, errors
    channel = d["channel"]
    if channel in V2_CONTROL:
        return "control"
    decl = {V2_BOOK_CHANNEL: V2_BOOK, "trade": V2_TRADE, "ticker": V2_TICKER}.get(channel)
    if decl is None:
        raise NormalizeError(f"kraken v2: unknown channel {str(channel)[:40]!r}")
    kind = d.get("type")
    if kind not in V2_TYPES:
        raise NormalizeError(f"kraken v2 {channel}: type {str(kind)[:20]!r} not snapshot/update")
    exact = as_dict(exact_payload(env), f"kraken v2 {channel}")
    data = as_list(exact.get("data"), f"kraken v2 {channel}.data")
    rows = []
    for i, item in enumerate(data):
        w = f"kraken v2 {channel}.data[{i}]"
        f = read_fields(decl, item, w)
        if decl is V2_BOOK and f["checksum"] > CHECKSUM_MAX:
            raise NormalizeError(f"{w}.checksum={f['checksum']}: not an unsigned crc32")
        rows.append((symbol_of(f["venue_symbol"]), f))
    for symbol, f in rows:
        raw = f["venue_symbol"]
        ts_event = f.get("ts_event", env.ts)
        if decl is V2_BOOK:
            sink.book(
                BookMessage(
                    env.ex, symbol, raw, V2_BOOK_CHANNEL, ts_event, env.ts, env.seq,
                    kind == "snapshot", f["bids"], f["asks"], checksum=f["checksum"],
                    checksum_kind=CHECKSUM_KRAKEN, depth=0,
                )
            )  # fmt: skip
        elif decl is V2_TRADE:
            sink.trade(
                env.ex, symbol, raw, ts_event, env.ts, f["trade_id"], f["price"], f["size"],
                f["side"], env.seq,
            )  # fmt: skip
        else:
            sink.quote(
                env.ex, symbol, raw, ts_event, env.ts, f.get("bid_px"), f.get("bid_sz"),
                f.get("ask_px"), f.get("ask_sz"), f.get("last"), env.seq,
            )  # fmt: skip
    return "data"
