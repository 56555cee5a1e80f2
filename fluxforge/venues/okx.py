"""OKX, public websocket API v5 (``wss://ws.okx.com:8443/ws/v5/public``).

Pushes are ``{"arg":{"channel","instId"},["action",]"data":[...]}``::

    books / books-l2-tbt / books50-l2-tbt  action snapshot|update,
        data:[{"asks":[[px,sz,"0",numOrders]..],"bids":[..],"ts":"ms","checksum":int32,
               ["seqId","prevSeqId"]}]                                -> book message
    books5 / bbo-tbt   data:[{"asks","bids","ts"}] full top-N each push -> book snapshot
    trades / trades-all data:[{"instId","tradeId","px","sz","side","ts"}] -> trades
    tickers  data:[{"instId","last","lastSz","askPx","askSz","bidPx","bidSz","ts"}] -> quote
    candle*, mark-price, funding-rate, ... -> control (bars come from the SQL models)
    {"event":"subscribe"|"unsubscribe"|"error"|"login"|"notice"|...} and "pong" -> control

Book checksums are signed CRC32 over the top 25 levels (``checksum_kind="okx"``), carried
on snapshots and updates. OKX announced that from 23 June 2026 ``checksum`` is always 0
and ``seqId``/``prevSeqId`` replace it: a 0 checksum next to a ``seqId`` is therefore
passed on as "no checksum". ``seqId``/``prevSeqId`` go to ``final_id``/``prev_id``.
OKX only checksums the top 25, so no depth truncation is asked of the book (depth 0).

Symbols: OKX already writes ``BASE-QUOTE``; derivatives keep their instrument-type suffix
(``UNI-USD-SWAP``, ``BTC-USD-220527``, options ``BTC-USD-220527-30000-C``) so a spot pair
and its swap never share a symbol under the one exchange id ``okx``. Trade ``side`` is the
taker side.
"""

from __future__ import annotations

import functools

from fluxforge.events import CHECKSUM_OKX, BookMessage, EventSink, NormalizeError
from fluxforge.segments import Envelope
from fluxforge.venues.common import (
    as_list,
    atomic,
    checked_symbol,
    field,
    join_symbol,
    read_fields,
    venue_symbol,
)
from fluxforge.wire.shape import (
    V_ASKS,
    V_BIDS,
    V_ENUM,
    V_MS_ANY,
    V_OPT_DEC,
    V_POS,
    V_SINT,
    V_STR,
    V_TEXT,
    ObjectShape,
)

EXCHANGES = ("okx",)

BOOK_CHANNELS = {"books": 0, "books-l2-tbt": 0, "books50-l2-tbt": 0, "books5": 5, "bbo-tbt": 1}
_CONTROL_CHANNELS = frozenset(
    {
        "mark-price",
        "index-tickers",
        "funding-rate",
        "open-interest",
        "price-limit",
        "estimated-price",
        "opt-summary",
        "liquidation-orders",
        "status",
        "instruments",
        "call-auction-details",
    }
)
TRADE_SIDES = ("buy", "sell")


@functools.lru_cache(maxsize=4096)
def venue_symbol_to_symbol(s: str) -> str:
    """``BTC-USDT`` stays, ``UNI-USD-SWAP`` stays (derivative suffix kept)."""
    parts = s.split("-")
    if len(parts) < 2 or not all(parts):
        raise NormalizeError(f"okx instId {s[:40]!r}: expected BASE-QUOTE[-TYPE]")
    return checked_symbol(join_symbol(*parts), s)


@functools.lru_cache(maxsize=4096)
def symbol_of(raw: str) -> str:
    return venue_symbol_to_symbol(venue_symbol(raw, "instId"))


# The push's "arg" object, declared once: the per-line path reads it with ``read_fields``, the
# byte scanner (fluxforge.demux.okx) with the same declaration.
ARG = ObjectShape(
    ("channel", V_STR, "channel"),
    ("instId", V_STR, "inst_id"),  # books and other per-instrument channels
    ("instType", V_STR, "inst_type"),  # not read (liquidation-orders, instruments...)
    required=("channel",),  # status, instruments, liquidation-orders: no instId
)


@atomic("okx")
def normalize(env: Envelope, sink: EventSink) -> str:
    """One OKX envelope -> rows in ``sink``; returns "data" or "control"."""
    if env.kind == "rest":
        return "control"  # /public/instruments and other metadata
    d = env.data
    if d in ("pong", "ping"):
        return "control"
    if not isinstance(d, dict):
        raise NormalizeError(f"okx: payload is a {type(d).__name__}, not a JSON object")
    if "event" in d:
        return "control"  # subscribe/unsubscribe acks, errors, notices, connection counts
    arg = read_fields(ARG, field(d, "arg", "okx push"), "okx push.arg")
    channel = arg["channel"]
    data = as_list(field(d, "data", f"okx {channel}"), f"okx {channel}.data")
    if channel in BOOK_CHANNELS:
        return _books(env, d, arg, channel, data, sink)
    if channel in TRADE_CHANNELS:
        return _trades(env, data, sink)
    if channel == TICKER_CHANNEL:
        return _tickers(env, data, sink)
    if (
        channel.startswith(("candle", "mark-price-candle", "index-candle"))
        or channel in _CONTROL_CHANNELS
    ):
        return "control"
    raise NormalizeError(f"okx: unknown channel {str(channel)[:40]!r}")


# Checksum rule of OKX and Bitget book items: a signed 32-bit integer; 0 next to a sequence key
# means "not computed" (OKX retired the checksum on 2026-06-23; Bitget v2 can switch it off).
# The byte scanner (fluxforge.demux.okx) reads these constants.
CHECKSUM_MIN = -(2**31)
CHECKSUM_MAX = 2**31 - 1
ZERO_CHECKSUM_WITH_SEQ_IS_NONE = True


def book_checksum(checksum: int | None, has_seq: bool, where: str) -> int | None:
    """An item's checksum (read by its declaration: an integer or absent) by the rule above,
    None when it has none."""
    if checksum is not None and not CHECKSUM_MIN <= checksum <= CHECKSUM_MAX:
        raise NormalizeError(f"{where}.checksum={checksum!r}: not a signed 32-bit integer")
    if checksum == 0 and has_seq and ZERO_CHECKSUM_WITH_SEQ_IS_NONE:
        return None
    return checksum


# One book item, declared once: the per-line path reads it with ``read_fields``, the byte
# scanner (fluxforge.demux.okx) with the same declaration (its field order gives the scanner
# the bits of "checksum" and of the sequence key: Bitget's item keeps the same order).
BOOK_ITEM = ObjectShape(
    ("asks", V_ASKS, "asks"),
    ("bids", V_BIDS, "bids"),
    ("ts", V_MS_ANY, "ts_event"),
    ("checksum", V_SINT, "checksum"),
    ("seqId", V_SINT, "final_id"),
    ("prevSeqId", V_SINT, "prev_id"),
    ("instId", V_STR, None),  # books5 repeats it: not read
    required=("asks", "bids", "ts"),
)


# The push's "action" words (OKX and Bitget), declared once: the per-line path checks them with
# ``push_action``, the byte scanner (fluxforge.demux.okx) matches the same words. No action
# (books5 / bbo-tbt, Bitget top-N): a whole snapshot, ACTIONS[0].
ACTIONS = ("snapshot", "update")


def push_action(d: dict, where: str) -> str:
    """The push's action word: one of ``ACTIONS``, absent: "snapshot"."""
    action = d.get("action", ACTIONS[0])
    if action not in ACTIONS:
        raise NormalizeError(f"{where}: action {str(action)[:20]!r} is not snapshot/update")
    return action


def _books(env: Envelope, d: dict, arg: dict, channel: str, data: list, sink: EventSink) -> str:
    raw = field(arg, "inst_id", f"okx {channel}.arg")  # (the column of "instId")
    symbol = symbol_of(raw)
    action = push_action(d, f"okx {channel}")
    msgs = []
    for i, item in enumerate(data):
        where = f"okx {channel}.data[{i}]"
        f = read_fields(BOOK_ITEM, item, where)
        checksum = book_checksum(f.get("checksum"), "final_id" in f, where)
        msgs.append(
            BookMessage(
                env.ex, symbol, raw, channel, f["ts_event"], env.ts, env.seq,
                action == "snapshot", f["bids"], f["asks"], final_id=f.get("final_id", -1),
                prev_id=f.get("prev_id", -1), checksum=checksum,
                checksum_kind=CHECKSUM_OKX if checksum is not None else None,
                depth=BOOK_CHANNELS[channel],
            )
        )  # fmt: skip
    for msg in msgs:
        sink.book(msg)
    return "data"


# One trade item of ``trades`` / ``trades-all`` and one item of ``tickers``, declared once: the
# per-line path reads them with ``read_fields``, the byte scanner (fluxforge.demux.okx) with the
# same declaration. Output columns are those of the trades / quotes tables.
TRADE = ObjectShape(
    ("instId", V_STR, "venue_symbol"),
    ("tradeId", V_TEXT, "trade_id"),
    ("px", V_POS, "price"),
    ("sz", V_POS, "size"),
    ("side", V_ENUM, "side", TRADE_SIDES),  # the taker side
    ("ts", V_MS_ANY, "ts_event"),
    required=("instId", "tradeId", "px", "sz", "side", "ts"),
    open=True,  # count, source, seqId...: not read
)
TICKER = ObjectShape(
    ("instId", V_STR, "venue_symbol"),
    ("ts", V_MS_ANY, "ts_event"),
    ("bidPx", V_OPT_DEC, "bid_px"),
    ("bidSz", V_OPT_DEC, "bid_sz"),
    ("askPx", V_OPT_DEC, "ask_px"),
    ("askSz", V_OPT_DEC, "ask_sz"),
    ("last", V_OPT_DEC, "last"),
    required=("instId", "ts"),
    open=True,  # instType, lastSz, open24h, high24h, vol24h...: not read
)
TRADE_CHANNELS = ("trades", "trades-all")
TICKER_CHANNEL = "tickers"


def _trades(env: Envelope, data: list, sink: EventSink) -> str:
    rows = []
    for i, t in enumerate(data):
        f = read_fields(TRADE, t, f"okx trades.data[{i}]")
        rows.append((symbol_of(f["venue_symbol"]), f))
    for symbol, f in rows:
        sink.trade(
            env.ex, symbol, f["venue_symbol"], f["ts_event"], env.ts, f["trade_id"],
            f["price"], f["size"], f["side"], env.seq,
        )  # fmt: skip
    return "data"


def _tickers(env: Envelope, data: list, sink: EventSink) -> str:
    rows = []
    for i, t in enumerate(data):
        f = read_fields(TICKER, t, f"okx tickers.data[{i}]")
        rows.append((symbol_of(f["venue_symbol"]), f))
    for symbol, f in rows:
        sink.quote(
            env.ex, symbol, f["venue_symbol"], f["ts_event"], env.ts, f.get("bid_px"),
            f.get("bid_sz"), f.get("ask_px"), f.get("ask_sz"), f.get("last"), env.seq,
        )  # fmt: skip
    return "data"
