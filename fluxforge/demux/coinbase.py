"""Byte scanner for Coinbase book lines: Exchange ``l2update``/``snapshot`` and Advanced Trade
``l2_data``.

The bulk of a Coinbase feed is book lines. Going through orjson + the per-line normalizer costs
~10 us a line; here one numba pass over the segment bytes reads them by the venue's own
declarations (``fluxforge.venues.coinbase``: ``L2UPDATE``, ``SNAPSHOT``, ``AT_LEVEL``, which the
per-line path reads too) and records byte spans that become Arrow columns for the book kernel,
never Python objects. The l2_data message and event around the levels are walked here (nested
lists of objects have no declared kind). Only the compact shapes below are accepted (no
escapes, no unknown keys, no duplicates); anything else goes through the per-line path, which
gives it the normalizer's own treatment and quarantine reason. So both paths produce the same
tables (tested byte for byte).

Exchange: {"type":"l2update","product_id","time","changes":[[side,px,sz]]} and
{"type":"snapshot","product_id","bids":[[px,sz]],"asks":[[px,sz]](,"time")}.
Advanced Trade: {"channel":"l2_data","client_id","timestamp","sequence_num","events":[{"type",
"product_id","updates":[{"side","event_time","price_level","new_quantity"}]}]}.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

from fluxforge.demux.bytescan import (
    AHEAD_LINES,
    ENV_AT,
    ENV_KIND,
    ENV_SEQ,
    ENV_TS,
    KIND_MSG,
    LBRACE,
    LBRACKET,
    LV_COLS,
    RBRACE,
    RBRACKET,
    add_level,
    borrowed,
    distinct_spans,
    eq,
    flat_object,
    grow,
    key_at,
    level_capacity,
    next_item,
    prefetch_span,
    str_end,
    ws,
)
from fluxforge.demux.fastbook import (
    FastBook,
    LevelColumns,
    by_code,
    checked_symbols,
    one_code_per_symbol,
)
from fluxforge.demux.registry import Scanner, ScanResult, register
from fluxforge.demux.rows import (
    R_COLS,
    R_EVT,
    R_KIND,
    R_LINE,
    R_SEQ,
    R_SYM,
    R_TS,
    ROW_LAYOUT,
    payload_rows,
    quotes_table,
    text_symbols,
    trades_table,
)
from fluxforge.events import NormalizeError
from fluxforge.venues import coinbase
from fluxforge.venues.coinbase import book_event_time, event_time
from fluxforge.wire.envelope import as_bytes
from fluxforge.wire.shape import SIDES

FAST_CHANNEL = coinbase.BOOK_CHANNEL
# msg columns: line, ts, seq, kind (1 update / 2 snapshot), ts_event, product span, final id
_M_KIND, _M_EVT, _M_SYM, _M_FINAL = 3, 4, 5, 7
_M_COLS = 8
# the venue's Exchange book declarations (``coinbase.L2UPDATE`` / ``coinbase.SNAPSHOT``) read
# into the msg columns, their levels into the level rows
_BOOK_LAYOUT = {"ts_event": _M_EVT, "venue_symbol": _M_SYM, "levels": -1, "bids": -1, "asks": -1}
_L2UPDATE = coinbase.L2UPDATE.args_for(_BOOK_LAYOUT)
_SNAPSHOT = coinbase.SNAPSHOT.args_for(_BOOK_LAYOUT)
# one Advanced Trade level (``coinbase.AT_LEVEL``, per event type) -> a small row: side word
# (1 + its index), event ns, price span, size span
_LEVEL_LAYOUT = {"side": 0, "ts_event": 1, "price": 2, "size": 4}
_AT_LEVEL_UPDATE = coinbase.AT_LEVEL["update"].args_for(_LEVEL_LAYOUT)
_AT_LEVEL_SNAPSHOT = coinbase.AT_LEVEL["snapshot"].args_for(_LEVEL_LAYOUT)
_AT_SIDE_WORDS = coinbase.AT_LEVEL["update"].words[coinbase.AT_LEVEL["update"].names.index("side")]
assert coinbase.AT_LEVEL["snapshot"].words[0] == _AT_SIDE_WORDS
_AT_SIDE = np.array([SIDES.index(coinbase.L2_SIDES[w]) for w in _AT_SIDE_WORDS], np.int64)


@njit(cache=True)
def _at_updates(buf, p, end, m, lv, n_lv, level, side_of, out, no_lv):
    """The ``updates`` list of one l2_data event at p ('['), each item read by the declaration
    `level` into the level rows of message m (`out`, `no_lv`: scratch rows). Returns
    (position after, lv, n_lv, latest event ns (0: none)); position -1 when an item does not
    fit."""
    if p >= end or buf[p] != LBRACKET:
        return -1, lv, n_lv, 0
    p = ws(buf, p + 1, end)
    if p < end and buf[p] == RBRACKET:
        return p + 1, lv, n_lv, 0
    ev_ns = 0
    while True:
        out[:] = -1
        out[1] = 0
        p, _seen, _a, _b = flat_object(buf, p, end, level, out, 0, no_lv, 0)
        if p < 0:
            return -1, lv, n_lv, 0
        lv, n_lv = add_level(buf, lv, n_lv, m, side_of[out[0] - 1], out[2], out[3], out[4], out[5])
        if out[1] > ev_ns:
            ev_ns = out[1]
        p, done = next_item(buf, p, end)
        if p < 0:
            return -1, lv, n_lv, 0
        if done:
            return p, lv, n_lv, ev_ns


# the Advanced Trade message head and its events (``coinbase.AT_MESSAGE`` / ``AT_*_EVENT``) read
# into small rows: head (channel word 1 + index, timestamp ns, sequence_num, events list
# span), event (type word 1 + index, product span, items list span)
_HEAD_LAYOUT = {"channel": 0, "ts_event": 1, "final_id": 2, "events": 3}
_EVENT_LAYOUT = {"type": 0, "venue_symbol": 1, "items": 3}
_AT_MESSAGE = coinbase.AT_MESSAGE.args_for(_HEAD_LAYOUT)
_AT_BOOK_EVENT = coinbase.AT_BOOK_EVENT.args_for(_EVENT_LAYOUT)
_AT_TRADES_EVENT = coinbase.AT_TRADES_EVENT.args_for(_EVENT_LAYOUT)
_AT_TICKER_EVENT = coinbase.AT_TICKER_EVENT.args_for(_EVENT_LAYOUT)
_CH_BOOK = coinbase.AT_DATA_CHANNELS.index(coinbase.AT_BOOK_CHANNEL) + 1
_CH_TRADES = coinbase.AT_DATA_CHANNELS.index(coinbase.AT_TRADES_CHANNEL) + 1
_EV_UPDATE = coinbase.AT_BOOK_EVENTS.index("update") + 1


@njit(cache=True)
def _at_head(buf, p, end, message, head, no_lv):
    """The Advanced Trade message object at p ('{') read by `message` into `head` (layout
    above). Returns the position after it, or -1 when it does not fit."""
    head[:] = -1
    q, _seen, _a, _b = flat_object(buf, p, end, message, head, 0, no_lv, 0)
    return q


@njit(cache=True)
def _at_data(buf, p, end, i, ts, seq, msg, n_msg, lv, n_lv, decls, side_of, rows, no_lv):
    """Advanced Trade l2_data object at p ('{'): one message per event, its levels read by the
    event type's declaration (`decls`: message, event, update level, snapshot level; `rows`:
    scratch head, event and level rows). Returns (position after the object, n_msg, msg,
    n_lv, lv) or p = -1."""
    message, event, level_update, level_snapshot = decls
    head, ev, scratch = rows
    q = _at_head(buf, p, end, message, head, no_lv)
    if q < 0 or head[0] != _CH_BOOK:
        return -1, n_msg, msg, n_lv, lv
    e, lend = ws(buf, head[3] + 1, head[4]), head[4]
    if e < lend and buf[e] == RBRACKET:
        return q, n_msg, msg, n_lv, lv  # no event: no message
    while True:
        if e >= lend or buf[e] != LBRACE:
            return -1, n_msg, msg, n_lv, lv
        msg = grow(msg, n_msg)
        m = n_msg
        n_msg += 1
        ev[:] = -1
        e, _seen, _a, _b = flat_object(buf, e, lend, event, ev, 0, no_lv, 0)
        if e < 0:
            return -1, n_msg, msg, n_lv, lv
        level = level_update if ev[0] == _EV_UPDATE else level_snapshot
        r, lv, n_lv, ev_ns = _at_updates(
            buf, ev[3], ev[4], m, lv, n_lv, level, side_of, scratch, no_lv
        )
        if r != ev[4]:
            return -1, n_msg, msg, n_lv, lv
        msg[m, 0] = i
        msg[m, 1] = ts
        msg[m, 2] = seq
        msg[m, _M_KIND] = 1 if ev[0] == _EV_UPDATE else 2
        msg[m, _M_EVT] = book_event_time(ev_ns, head[1])
        msg[m, _M_SYM] = ev[1]
        msg[m, _M_SYM + 1] = ev[2]
        msg[m, _M_FINAL] = head[2]
        e, done = next_item(buf, e, lend)
        if e < 0:
            return -1, n_msg, msg, n_lv, lv
        if done:
            break
    return q, n_msg, msg, n_lv, lv


@njit(cache=True)
def _scan_lines(buf, ends, todo, env, update, snapshot, channel, at, side_of, capacity):
    """Scan the `todo` msg lines from their payload (envelope rows `env`). Per accepted line:
    its book messages (msg rows: the columns above) and their levels (lv rows: message, side,
    price span, size span). Exchange lines are read by the declarations `update` then
    `snapshot`, Advanced Trade ones by ``_at_data``. A line with any surprise is not accepted
    (the per-line path takes it)."""
    buf, update, snapshot = borrowed(buf), borrowed(update), borrowed(snapshot)
    n = len(ends)
    ok = np.zeros(n, np.bool_)
    msg = np.empty((1024, _M_COLS), np.int64)
    n_msg = 0
    lv = np.empty((capacity, LV_COLS), np.int64)
    n_lv = 0
    # scratch rows of an Advanced Trade message: head, event, level
    at_rows = (np.empty(5, np.int64), np.empty(5, np.int64), np.empty(6, np.int64))
    no_lv = np.empty((1, LV_COLS), np.int64)  # (no level lists inside these objects)
    row = np.empty(_M_COLS, np.int64)  # an Exchange message, copied to msg when accepted
    row_b = borrowed(row)
    for i in range(n):
        k = i + AHEAD_LINES
        if k < n and todo[k]:
            prefetch_span(buf, env[k, ENV_AT], ends[k])
        if not todo[i] or env[i, ENV_KIND] != KIND_MSG:
            continue
        end = ends[i]
        mark_lv, mark_msg = n_lv, n_msg
        p, ts, seq = env[i, ENV_AT], env[i, ENV_TS], env[i, ENV_SEQ]
        if p >= end or buf[p] != LBRACE:
            continue
        first = ws(buf, p + 1, end)
        ks, ke, v = key_at(buf, first, end)
        if v >= 0 and eq(buf, ks, ke, channel[0]):
            # an Advanced Trade message: only l2_data is a book (a quick look at the channel
            # first spares the others a whole read; _at_data checks it again)
            q = str_end(buf, v, end)
            if q < 0 or not eq(buf, v + 1, q, channel[1]):
                continue
            p, n_msg, msg, n_lv, lv = _at_data(
                buf, p, end, i, ts, seq, msg, n_msg, lv, n_lv, at, side_of, at_rows, no_lv
            )
        else:
            if n_msg == len(msg):  # (a call per line costs reference counts)
                msg = grow(msg, n_msg)
            row[:] = -1
            row[_M_KIND] = 1
            # borrowed views (see fluxforge/demux/bytescan.py): no atomic reference counts
            # around the calls; a level list that outgrows `lv` comes back as a new array
            got = borrowed(lv)
            q, _seen, got, n_lv = flat_object(buf, p, end, update, row_b, n_msg, got, n_lv)
            if len(got) != len(lv):
                lv = got
            if q < 0:
                n_lv = mark_lv
                row[:] = -1
                row[_M_KIND] = 2
                got = borrowed(lv)
                q, _seen, got, n_lv = flat_object(buf, p, end, snapshot, row_b, n_msg, got, n_lv)
                if len(got) != len(lv):
                    lv = got
            p = q
            if p >= 0:
                row[0], row[1], row[2] = i, ts, seq
                row[_M_EVT] = event_time(row[_M_EVT], ts)  # (a snapshot has none)
                for c in range(_M_COLS):
                    msg[n_msg, c] = row[c]
                n_msg += 1
        if p >= 0:
            p = ws(buf, p, end)
        if p < 0 or p >= end or buf[p] != RBRACE or p + 1 != end:
            n_lv, n_msg = mark_lv, mark_msg  # drop this line's messages and levels
            continue
        ok[i] = True
    return ok, msg[:n_msg], lv[:n_lv]


# an Advanced Trade message starts with its channel
_BOOK_CHANNEL_KEY = (as_bytes(b"channel"), as_bytes(coinbase.AT_BOOK_CHANNEL.encode()))
_AT_BOOK = (_AT_MESSAGE, _AT_BOOK_EVENT, _AT_LEVEL_UPDATE, _AT_LEVEL_SNAPSHOT)


def fast_coinbase_books(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray, env: np.ndarray
) -> ScanResult:
    """Coinbase book lines among the `todo` lines -> FastBooks and the mask of the lines they
    took; every other line (and any line failing a check) is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return ScanResult(none)
    ok, msg, lv = _scan_lines(
        buf, ends, todo, env, _L2UPDATE, _SNAPSHOT, _BOOK_CHANNEL_KEY, _AT_BOOK,
        _AT_SIDE, level_capacity(starts, ends),
    )  # fmt: skip
    if not ok.any():
        return ScanResult(none)
    msg_line = msg[:, 0]
    codes, pids = distinct_spans(buf, msg[:, _M_SYM], msg[:, _M_SYM + 1])
    raws = pids.to_pylist()
    symbols = checked_symbols(raws, coinbase.symbol_of, (NormalizeError, TypeError))
    msg_ok = np.array([s is not None for s in symbols] + [False], dtype=bool)[codes]
    # one instrument = one raw product name (one batch carries one venue symbol)
    msg_ok = one_code_per_symbol(codes, msg_ok, symbols)
    # a line is taken whole or not at all
    ok[msg_line[~msg_ok]] = False
    msg_ok = ok[msg_line]
    if not ok.any():
        return ScanResult(none)
    groups = by_code(codes, msg_ok)
    levels = LevelColumns(buf, lv, msg_ok, len(msg)).of_groups(
        [sel for _c, sel in groups], spend=True
    )
    out: dict[tuple[str, str], FastBook] = {}
    for (c, sel), level_cols in zip(groups, levels, strict=True):
        sym = symbols[c]
        assert sym is not None
        out[("coinbase", sym)] = FastBook(
            exchange="coinbase",
            symbol=sym,
            venue_symbol=raws[c],
            channel=FAST_CHANNEL,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, _M_EVT],
            ts_recv=msg[sel, 1],
            seq=msg[sel, 2],
            is_snapshot=msg[sel, _M_KIND] == 2,
            final_id=msg[sel, _M_FINAL],
            **level_cols,
        )
    return ScanResult(ok, books=out)


_MATCH = coinbase.MATCH.args_for(ROW_LAYOUT)
_TICKER = coinbase.TICKER.args_for(ROW_LAYOUT)
# the table's (taker) side of each declared match side word
_TAKER_SIDES = tuple(coinbase.TAKER_SIDE_OF_MAKER[w] for w in coinbase.MAKER_SIDES)


@njit(cache=True)
def _event_times(rows):
    """``coinbase.event_time`` on each row (a ticker may lack its time)."""
    for r in range(len(rows)):
        rows[r, R_EVT] = event_time(rows[r, R_EVT], rows[r, R_TS])


def fast_coinbase_rows(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray, env: np.ndarray
) -> ScanResult:
    """Exchange feed ``match`` / ``last_match`` and ``ticker`` lines among the `todo` lines ->
    trade and quote rows as columns (read by the declarations ``coinbase.MATCH`` /
    ``coinbase.TICKER``); every other line is left to the per-line path."""
    n = len(starts)
    out = ScanResult(np.zeros(n, dtype=bool))
    if n == 0 or not todo.any():
        return out
    todo = todo.copy()
    for decl, is_trade in ((_MATCH, True), (_TICKER, False)):
        rows = payload_rows(buf, ends, todo, env, decl, 0)
        if not len(rows):
            continue
        _event_times(rows)
        good, codes, symbols, raws = text_symbols(buf, rows, R_SYM, coinbase.symbol_of)
        rows, codes = rows[good], codes[good]
        if not len(rows):
            continue
        line = rows[:, R_LINE].copy()
        out.taken[line] = True
        todo[line] = False
        take = pa.array(codes, pa.int64())
        if is_trade:
            table = trades_table(
                "coinbase", buf, rows, symbols.take(take), raws.take(take), _TAKER_SIDES
            )
            out.trades.append((line, table))
        else:
            table = quotes_table("coinbase", buf, rows, symbols.take(take), raws.take(take))
            out.quotes.append((line, table))
    return out


_AT_TRADE = coinbase.AT_TRADE.args_for(ROW_LAYOUT)
_AT_TICKER = coinbase.AT_TICKER.args_for(ROW_LAYOUT)
_AT_SIDES = tuple(coinbase.at_trade_side(w) for w in coinbase.AT_TRADE_SIDES)


@njit(cache=True)
def _scan_at_rows(buf, ends, todo, env, message, events, items):
    """Advanced Trade market_trades / ticker / ticker_batch lines (``coinbase.AT_MESSAGE``;
    events ``AT_TRADES_EVENT`` / ``AT_TICKER_EVENT``; items ``AT_TRADE`` / ``AT_TICKER``) ->
    one row per trade / ticker item (R_KIND: 0 trades, 1 tickers; a ticker's time is the
    message timestamp). An empty events or items list: the per-line path."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, message = borrowed(buf), borrowed(message)
    trades_event, ticker_event = borrowed(events[0]), borrowed(events[1])
    trade, ticker = borrowed(items[0]), borrowed(items[1])
    rows = np.empty((256, R_COLS), np.int64)
    n_rows = 0
    no_lv = np.empty((1, LV_COLS), np.int64)
    head = np.empty(5, np.int64)
    ev = np.empty(5, np.int64)
    for i in range(len(ends)):
        k = i + AHEAD_LINES
        if k < len(ends) and todo[k]:
            prefetch_span(buf, env[k, ENV_AT], ends[k])
        if not todo[i] or env[i, ENV_KIND] != KIND_MSG:
            continue
        end = ends[i]
        p, ts, seq = env[i, ENV_AT], env[i, ENV_TS], env[i, ENV_SEQ]
        if p >= end or buf[p] != LBRACE:
            continue
        q = _at_head(buf, p, end, message, head, no_lv)
        if q < 0 or head[0] == _CH_BOOK:
            continue
        q = ws(buf, q, end)
        if q >= end or buf[q] != RBRACE or q + 1 != end:
            continue
        k = 0 if head[0] == _CH_TRADES else 1
        mark = n_rows
        e, lend = ws(buf, head[3] + 1, head[4]), head[4]
        good = e < lend and buf[e] == LBRACE
        while good:  # one event
            ev[:] = -1
            e, _s, _a, _b = flat_object(
                buf, e, lend, trades_event if k == 0 else ticker_event, ev, 0, no_lv, 0
            )
            if e < 0:
                good = False
                break
            r, rend = ws(buf, ev[3] + 1, ev[4]), ev[4]
            good = r < rend and buf[r] == LBRACE
            while good:  # one item
                rows = grow(rows, n_rows)
                out = rows[n_rows]
                out[:] = -1
                out[R_LINE], out[R_TS], out[R_SEQ], out[R_KIND] = i, ts, seq, k
                r, _s, _a, _b = flat_object(
                    buf, r, rend, trade if k == 0 else ticker, out, 0, no_lv, 0
                )
                if r < 0:
                    good = False
                    break
                if k == 1:
                    out[R_EVT] = head[1]
                n_rows += 1
                r, done = next_item(buf, r, rend)
                if r < 0:
                    good = False
                if done or r < 0:
                    break
            if not good:
                break
            e, done = next_item(buf, e, lend)
            if e < 0:
                good = False
            if done or e < 0:
                break
        if not good:
            n_rows = mark
    return rows[:n_rows]


def fast_coinbase_at_rows(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray, env: np.ndarray
) -> ScanResult:
    """Advanced Trade market_trades and ticker lines among the `todo` lines -> trade and quote
    rows as columns (read by ``coinbase.AT_TRADE`` / ``coinbase.AT_TICKER``)."""
    n = len(starts)
    out = ScanResult(np.zeros(n, dtype=bool))
    if n == 0 or not todo.any():
        return out
    rows = _scan_at_rows(
        buf, ends, todo, env, _AT_MESSAGE, (_AT_TRADES_EVENT, _AT_TICKER_EVENT),
        (_AT_TRADE, _AT_TICKER),
    )  # fmt: skip
    if not len(rows):
        return out
    good, codes, symbols, raws = text_symbols(buf, rows, R_SYM, coinbase.symbol_of)
    line = rows[:, R_LINE]
    out.taken[line] = True
    out.taken[line[~good]] = False  # a line is taken whole or not at all
    keep = out.taken[line]
    for k in (0, 1):
        sel = np.flatnonzero(keep & (rows[:, R_KIND] == k))
        if not len(sel):
            continue
        if k == 0:  # a batch in trade-time order (stable), as the per-line path stores it
            sel = sel[np.lexsort((rows[sel, R_EVT], rows[sel, R_LINE]))]
        r = rows[sel]
        take = pa.array(codes[sel], pa.int64())
        if k == 0:
            table = trades_table("coinbase", buf, r, symbols.take(take), raws.take(take), _AT_SIDES)
            out.trades.append((r[:, R_LINE].copy(), table))
        else:
            table = quotes_table("coinbase", buf, r, symbols.take(take), raws.take(take))
            out.quotes.append((r[:, R_LINE].copy(), table))
    return out


def scan_coinbase(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    env: np.ndarray,
) -> ScanResult:
    """The `todo` lines of `exchange` (coinbase, the scanner's one): book lines
    (``fast_coinbase_books``), then the Exchange feed's trade and ticker lines, then Advanced
    Trade's."""
    out = fast_coinbase_books(buf, starts, ends, todo, env)
    for more in (fast_coinbase_rows, fast_coinbase_at_rows):
        rows = more(buf, starts, ends, todo & ~out.taken, env)
        out.taken |= rows.taken
        out.trades.extend(rows.trades)
        out.quotes.extend(rows.quotes)
    return out


SCANNER = register(Scanner("coinbase", ("coinbase",), scan_coinbase))
