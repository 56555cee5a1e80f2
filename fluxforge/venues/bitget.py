"""Bitget public websocket, API v1 "mix" (as recorded) and the v2 shapes of the same channels.

Pushes are ``{"action":"snapshot"|"update","arg":{"instType","channel","instId"},"data":[..]}``::

    books (books1/5/15: top-N, snapshots only)
        data:[{"asks":[[px,sz]..],"bids":[..],"checksum":int32,"ts":"ms"(,"seq")}] -> book msg
    trade   v1 rows [ts, px, sz, side]; v2 rows {"ts","price","size","side","tradeId"}
    ticker  v1 {"instId","last","bestBid","bestAsk","systemTime",..};
            v2 {"lastPr","bidPr","bidSz","askPr","askSz","ts",..}        -> quote
    candle* -> control (bars come from the SQL models)
    {"event":"subscribe"|"unsubscribe"|"error"|"login"} and "pong"       -> control

Decisions:

* Trade snapshots (``action":"snapshot"`` on ``trade``: the last ~50 trades before the
  subscription) are NOT turned into rows: v1 trades have no trade id, so after a reconnect
  the replayed history could not be told apart from trades already stored, and a trade would
  be counted twice. Such a line is "control". Only live ``update`` trades become rows;
  ``trade_id`` is the v2 ``tradeId`` or "" (v1 has none).
* Book checksum: signed CRC32 over the top 25 levels, same construction as OKX
  (``checksum_kind="okx"``), on every snapshot and update; 0 with a ``seq`` (v2, where the
  checksum can be switched off) is passed on as "no checksum". Depth 0 (no truncation) for
  ``books``, N for ``booksN``.
* Symbols: ``DASHUSDT`` -> ``DASH-USDT`` by the longest known quote suffix; REST-style ids
  lose their product-type suffix (``BTCUSDT_UMCBL``). Contracts (instType ``mc``, ``umcbl``,
  ``dmcbl``, ``USDT-FUTURES``, ...) get ``-SWAP``, because spot and perpetuals share the
  exchange id ``bitget`` and must not share a symbol (``DASHUSDT`` perpetual ->
  ``DASH-USDT-SWAP``). Trade side is the taker side.
"""

from __future__ import annotations

import functools

from numba import njit

from fluxforge.events import CHECKSUM_OKX, BookMessage, EventSink, NormalizeError
from fluxforge.segments import Envelope
from fluxforge.venues.common import (
    as_list,
    atomic,
    checked_symbol,
    field,
    join_symbol,
    read_fields,
    split_concat,
    venue_symbol,
)
from fluxforge.venues.okx import ACTIONS, book_checksum, push_action
from fluxforge.wire.shape import (
    V_ASKS,
    V_BIDS,
    V_ENUM,
    V_MS_ANY,
    V_OPT_DEC,
    V_POS,
    V_SINT,
    V_STR,
    ObjectShape,
)

EXCHANGES = ("bitget",)

_SPOT_TYPES = frozenset({"sp", "spbl", "spot"})
SPOT_INST_TYPE = "sp"  # an arg without instType
BOOK_DEPTH = {"books": 0, "books1": 1, "books5": 5, "books15": 15}
TRADE_SIDES = ("buy", "sell")


@functools.lru_cache(maxsize=4096)
def venue_symbol_to_symbol(s: str, inst_type: str = SPOT_INST_TYPE) -> str:
    """``DASHUSDT`` -> ``DASH-USDT`` (spot) or ``DASH-USDT-SWAP`` (inst_type of a contract);
    ``BTCUSDT_UMCBL`` -> ``BTC-USDT-SWAP``."""
    name, _, product = s.upper().partition("_")
    pair = split_concat(name)
    parts = [*pair] if pair else [name]
    contract = inst_type.lower() not in _SPOT_TYPES or product.endswith("MCBL")
    if contract:
        parts.append("SWAP")
    return checked_symbol(join_symbol(*parts), s)


# The push's "arg" object, declared once: the per-line path reads it with ``read_fields``, the
# byte scanner (fluxforge.demux.okx) with the same declaration. No instType: spot.
ARG = ObjectShape(
    ("channel", V_STR, "channel"),
    ("instId", V_STR, "inst_id"),
    ("instType", V_STR, "inst_type"),
    required=("channel", "instId"),
)


@atomic("bitget")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One Bitget envelope -> rows in ``sink``; returns "data" or "control"."""
    if env.kind == "rest":
        return "control"  # products / contracts metadata
    d = env.data
    if d in ("pong", "ping"):
        return "control"
    if not isinstance(d, dict):
        raise NormalizeError(f"bitget: payload is a {type(d).__name__}, not a JSON object")
    if "event" in d:
        return "control"
    arg = read_fields(ARG, field(d, "arg", "bitget push"), "bitget push.arg")
    channel = arg["channel"]
    raw = venue_symbol(arg["inst_id"], "bitget instId")
    symbol = venue_symbol_to_symbol(raw, arg.get("inst_type", SPOT_INST_TYPE))
    action = push_action(d, f"bitget {channel}")
    data = as_list(field(d, "data", f"bitget {channel}"), f"bitget {channel}.data")
    if channel in BOOK_DEPTH:
        return _books(env, channel, symbol, raw, action, data, sink)
    if channel == TRADE_CHANNEL:
        if action == "snapshot":
            return "control"  # pre-subscription history: see module doc
        return _trades(env, symbol, raw, data, sink)
    if channel == TICKER_CHANNEL:
        return _tickers(env, symbol, raw, data, sink)
    if channel.startswith("candle"):
        return "control"
    raise NormalizeError(f"bitget: unknown channel {str(channel)[:40]!r}")


# One book item, declared once (the field order of okx.BOOK_ITEM, which the scanner relies on).
BOOK_ITEM = ObjectShape(
    ("asks", V_ASKS, "asks"),
    ("bids", V_BIDS, "bids"),
    ("ts", V_MS_ANY, "ts_event"),
    ("checksum", V_SINT, "checksum"),
    ("seq", V_SINT, "final_id"),
    ("instId", V_STR, None),
    required=("asks", "bids", "ts"),
)


def book_is_snapshot(channel: str, action: str) -> bool:
    """A book push is a snapshot when its action says so, and always on a top-N channel
    (``booksN``: depth N > 0), which sends the whole top N each time. The byte scanner
    (fluxforge.demux.okx) asks this same rule per channel."""
    return action == ACTIONS[0] or BOOK_DEPTH[channel] > 0


def _books(
    env: Envelope,
    channel: str,
    symbol: str,
    raw: str,
    action: str,
    data: list,
    sink: EventSink,
) -> str:
    msgs = []
    for i, item in enumerate(data):
        where = f"bitget {channel}.data[{i}]"
        f = read_fields(BOOK_ITEM, item, where)
        checksum = book_checksum(f.get("checksum"), "final_id" in f, where)
        msgs.append(
            BookMessage(
                env.ex, symbol, raw, channel, f["ts_event"], env.ts, env.seq,
                book_is_snapshot(channel, action), f["bids"], f["asks"],
                final_id=f.get("final_id", -1), checksum=checksum,
                checksum_kind=CHECKSUM_OKX if checksum is not None else None,
                depth=BOOK_DEPTH[channel],
            )
        )  # fmt: skip
    for msg in msgs:
        sink.book(msg)
    return "data"


# One trade row (v1: an array, v2: an object) and one ticker item (v1 and v2 names of the same
# fields), declared once: the per-line path reads them with ``read_fields``, the byte scanner
# (fluxforge.demux.okx) with the same declarations. Output columns are those of the tables.
TRADE_ROW = ObjectShape(
    ("ts", V_MS_ANY, "ts_event"),
    ("price", V_POS, "price"),
    ("size", V_POS, "size"),
    ("side", V_ENUM, "side", TRADE_SIDES),  # the taker side
    required=("ts", "price", "size", "side"),
    array=True,
)
TRADE = ObjectShape(
    ("ts", V_MS_ANY, "ts_event"),
    ("price", V_POS, "price"),
    ("size", V_POS, "size"),
    ("side", V_ENUM, "side", TRADE_SIDES),
    ("tradeId", V_STR, "trade_id"),  # v2 only: v1 trades have no id ("")
    required=("ts", "price", "size", "side"),
    open=True,
)
TICKER = ObjectShape(
    ("systemTime", V_MS_ANY, "ts_event"),  # v1
    ("ts", V_MS_ANY, "ts_event"),  # v2; neither: the receive time
    ("bestBid", V_OPT_DEC, "bid_px"),
    ("bidPr", V_OPT_DEC, "bid_px"),
    ("bidSz", V_OPT_DEC, "bid_sz"),
    ("bestAsk", V_OPT_DEC, "ask_px"),
    ("askPr", V_OPT_DEC, "ask_px"),
    ("askSz", V_OPT_DEC, "ask_sz"),
    ("last", V_OPT_DEC, "last"),
    ("lastPr", V_OPT_DEC, "last"),
    open=True,  # instId (the arg's counts), high24h, baseVolume, ...: not read
)
TRADE_CHANNEL = "trade"
TICKER_CHANNEL = "ticker"


def _trades(env: Envelope, symbol: str, raw: str, data: list, sink: EventSink) -> str:
    rows = []
    for i, t in enumerate(data):
        w = f"bitget trade.data[{i}]"
        rows.append(read_fields(TRADE_ROW if isinstance(t, list) else TRADE, t, w))
    for f in rows:
        sink.trade(
            env.ex, symbol, raw, f["ts_event"], env.ts, f.get("trade_id", ""), f["price"],
            f["size"], f["side"], env.seq,
        )  # fmt: skip
    return "data"


@njit(cache=True)
def ticker_event_time(ts_event: int, ts_recv: int) -> int:
    """A ticker's event time (ns; -1 when it sent neither ``systemTime`` nor ``ts``), else the
    receive time. Compiled, because the byte scanner (fluxforge.demux.okx) applies this same
    rule to its rows."""
    return ts_recv if ts_event < 0 else ts_event


def _tickers(env: Envelope, symbol: str, raw: str, data: list, sink: EventSink) -> str:
    rows = []
    for i, t in enumerate(data):
        rows.append(read_fields(TICKER, t, f"bitget ticker.data[{i}]"))
    for f in rows:
        sink.quote(
            env.ex, symbol, raw, ticker_event_time(f.get("ts_event", -1), env.ts), env.ts,
            f.get("bid_px"), f.get("bid_sz"), f.get("ask_px"), f.get("ask_sz"), f.get("last"),
            env.seq,
        )  # fmt: skip
    return "data"
