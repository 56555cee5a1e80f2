"""Byte scanner for Coinbase book lines: Exchange ``l2update``/``snapshot`` and Advanced Trade
``l2_data``.

The bulk of a Coinbase feed is book lines. Going through orjson + the per-line normalizer costs
~10 us a line; here one numba pass over the segment bytes checks them against exactly the rules
of ``fluxforge.venues.coinbase`` (plain decimals, price > 0, side words, RFC 3339 time,
plausible ns) and records byte spans that become Arrow columns for the book kernel, never
Python objects. Only the compact shapes below are accepted (no escapes, no unknown keys, no
duplicates); anything else goes through the per-line path, which gives it the normalizer's own
treatment and quarantine reason. So both paths produce the same tables (tested byte for byte).

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
    LBRACE,
    LBRACKET,
    RBRACE,
    RBRACKET,
    add_level,
    envelope,
    eq,
    eq_word,
    flat_object,
    grow,
    iso_ns,
    iso_raw,
    key_at,
    levels_scan,
    next_item,
    next_key,
    read_int,
    side_words,
    spans,
    str_end,
    ws,
)
from fluxforge.demux.fastbook import FastBook, LevelColumns, checked_symbols, one_code_per_symbol
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
    symbols_of,
    text,
    trades_table,
)
from fluxforge.events import NormalizeError
from fluxforge.venues import coinbase
from fluxforge.wire.decimal import plain_decimal
from fluxforge.wire.envelope import SCAN_HEAD, SCAN_MSG, SCAN_SRC, as_bytes, scan_ex
from fluxforge.wire.shape import pack_words
from fluxforge.wire.times import plausible_ns

FAST_CHANNEL = coinbase.BOOK_CHANNEL
_ENV_HEAD, _ENV_SRC, _ENV_EX, _ENV_KIND = SCAN_HEAD, SCAN_SRC, scan_ex("coinbase"), SCAN_MSG
# data keys
_K_TYPE = np.frombuffer(b"type", np.uint8).copy()
_K_PRODUCT = np.frombuffer(b"product_id", np.uint8).copy()
_K_TIME = np.frombuffer(b"time", np.uint8).copy()
_K_CHANGES = np.frombuffer(b"changes", np.uint8).copy()
_K_BIDS = np.frombuffer(b"bids", np.uint8).copy()
_K_ASKS = np.frombuffer(b"asks", np.uint8).copy()
_V_L2 = np.frombuffer(b"l2update", np.uint8).copy()
_V_SNAP = np.frombuffer(b"snapshot", np.uint8).copy()
_WORDS, _WORD_SIDES = side_words(coinbase.L2_SIDES)


@njit(cache=True)
def _at_update(buf, p, end, m, is_update, lv, n_lv, words, word_sides, keys):
    """One Advanced Trade update object {side, event_time?, price_level, new_quantity} at p.
    Returns (position after, n_lv, lv, max event ns (0 = none), ok)."""
    k_side, k_evt, k_px, k_qty = keys[0], keys[1], keys[2], keys[3]
    if p >= end or buf[p] != LBRACE:
        return -1, n_lv, lv, 0, False
    p = ws(buf, p + 1, end)
    side = -1
    px0 = px1 = sz0 = sz1 = -1
    ev_ns = 0
    seen = 0
    while True:
        ks, ke, p = key_at(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, 0, False
        q = str_end(buf, p, end)
        if q < 0:
            return -1, n_lv, lv, 0, False
        if eq(buf, ks, ke, k_side) and not seen & 1:
            seen |= 1
            for w in range(len(word_sides)):
                if eq_word(buf, p + 1, q, words[0], words[1], w):
                    side = word_sides[w]
            if side < 0:
                return -1, n_lv, lv, 0, False
        elif eq(buf, ks, ke, k_evt) and not seen & 2:
            seen |= 2
            if is_update:  # snapshots carry 1970 times: the normalizer ignores them
                good, ns = iso_raw(buf, p + 1, q)
                if not good:
                    return -1, n_lv, lv, 0, False
                if ns > 0:
                    if not plausible_ns(ns):
                        return -1, n_lv, lv, 0, False
                    ev_ns = ns
        elif eq(buf, ks, ke, k_px) and not seen & 4:
            seen |= 4
            px0, px1 = p + 1, q
        elif eq(buf, ks, ke, k_qty) and not seen & 8:
            seen |= 8
            sz0, sz1 = p + 1, q
        else:
            return -1, n_lv, lv, 0, False
        p, done = next_key(buf, q + 1, end)
        if p < 0:
            return -1, n_lv, lv, 0, False
        if done:
            break
    if (seen & 13) != 13:
        return -1, n_lv, lv, 0, False
    if not plain_decimal(buf, px0, px1, True) or not plain_decimal(buf, sz0, sz1, False):
        return -1, n_lv, lv, 0, False
    lv, n_lv = add_level(lv, n_lv, m, side, px0, px1, sz0, sz1)
    return p, n_lv, lv, ev_ns, True


@njit(cache=True)
def _at_data(buf, p, end, i, ts, seq, msg, n_msg, lv, n_lv, words, word_sides, heads, at_keys):
    """Advanced Trade l2_data object (p just after its '{'): one message per event.
    Returns (position after the object, n_msg, msg, n_lv, lv) or p = -1."""
    k_type, k_prod, v_snap = heads[4], heads[5], heads[11]
    k_channel, k_client, k_stamp, k_seqnum, k_events = (
        at_keys[0],
        at_keys[1],
        at_keys[2],
        at_keys[3],
        at_keys[4],
    )
    v_l2data, v_update, k_updates = at_keys[5], at_keys[6], at_keys[7]
    upd_keys = (at_keys[8], at_keys[9], at_keys[10], at_keys[11])
    seen = 0
    ts_msg = -1
    final_id = -1
    first_msg = n_msg
    while True:
        ks, ke, p = key_at(buf, p, end)
        if p < 0:
            return -1, n_msg, msg, n_lv, lv
        if eq(buf, ks, ke, k_channel) and not seen & 1:
            seen |= 1
            q = str_end(buf, p, end)
            if q < 0 or not eq(buf, p + 1, q, v_l2data):
                return -1, n_msg, msg, n_lv, lv
            p = q + 1
        elif eq(buf, ks, ke, k_client) and not seen & 2:
            seen |= 2
            q = str_end(buf, p, end)
            if q < 0:
                return -1, n_msg, msg, n_lv, lv
            p = q + 1
        elif eq(buf, ks, ke, k_stamp) and not seen & 4:
            seen |= 4
            q = str_end(buf, p, end)
            if q < 0:
                return -1, n_msg, msg, n_lv, lv
            ts_msg = iso_ns(buf, p + 1, q)
            if ts_msg < 0:
                return -1, n_msg, msg, n_lv, lv
            p = q + 1
        elif eq(buf, ks, ke, k_seqnum) and not seen & 8:
            seen |= 8
            final_id, p = read_int(buf, p, end)
            if p < 0:
                return -1, n_msg, msg, n_lv, lv
        elif eq(buf, ks, ke, k_events) and not seen & 16:
            seen |= 16
            if p >= end or buf[p] != LBRACKET:
                return -1, n_msg, msg, n_lv, lv
            p = ws(buf, p + 1, end)
            if p < end and buf[p] == RBRACKET:
                p += 1
            else:
                while True:  # one event object
                    if p >= end or buf[p] != LBRACE:
                        return -1, n_msg, msg, n_lv, lv
                    p = ws(buf, p + 1, end)
                    msg = grow(msg, n_msg)
                    m = n_msg
                    n_msg += 1
                    ev_seen = 0
                    kind = 0
                    prod_s = prod_e = -1
                    ev_ns = 0
                    while True:
                        ks2, ke2, p = key_at(buf, p, end)
                        if p < 0:
                            return -1, n_msg, msg, n_lv, lv
                        if eq(buf, ks2, ke2, k_type) and not ev_seen & 1:
                            ev_seen |= 1
                            q = str_end(buf, p, end)
                            if q < 0:
                                return -1, n_msg, msg, n_lv, lv
                            if eq(buf, p + 1, q, v_update):
                                kind = 1
                            elif eq(buf, p + 1, q, v_snap):
                                kind = 2
                            else:
                                return -1, n_msg, msg, n_lv, lv
                            p = q + 1
                        elif eq(buf, ks2, ke2, k_prod) and not ev_seen & 2:
                            ev_seen |= 2
                            q = str_end(buf, p, end)
                            if q < 0:
                                return -1, n_msg, msg, n_lv, lv
                            prod_s, prod_e = p + 1, q
                            p = q + 1
                        elif eq(buf, ks2, ke2, k_updates) and not ev_seen & 4 and ev_seen & 1:
                            # "type" must come first: event_time rules depend on it
                            ev_seen |= 4
                            if p >= end or buf[p] != LBRACKET:
                                return -1, n_msg, msg, n_lv, lv
                            p = ws(buf, p + 1, end)
                            if p < end and buf[p] == RBRACKET:
                                p += 1
                            else:
                                while True:
                                    p, n_lv, lv, ns, good = _at_update(
                                        buf,
                                        p,
                                        end,
                                        m,
                                        kind == 1,
                                        lv,
                                        n_lv,
                                        words,
                                        word_sides,
                                        upd_keys,
                                    )
                                    if not good:
                                        return -1, n_msg, msg, n_lv, lv
                                    if ns > ev_ns:
                                        ev_ns = ns
                                    p, done = next_item(buf, p, end)
                                    if p < 0:
                                        return -1, n_msg, msg, n_lv, lv
                                    if done:
                                        break
                        else:
                            return -1, n_msg, msg, n_lv, lv
                        p, done = next_key(buf, p, end)
                        if p < 0:
                            return -1, n_msg, msg, n_lv, lv
                        if done:
                            break
                    if ev_seen != 7:
                        return -1, n_msg, msg, n_lv, lv
                    msg[m, 0] = i
                    msg[m, 1] = ts
                    msg[m, 2] = seq
                    msg[m, 3] = kind
                    msg[m, 4] = ev_ns  # 0 = none yet: the message timestamp below
                    msg[m, 5] = prod_s
                    msg[m, 6] = prod_e
                    p, done = next_item(buf, p, end)
                    if p < 0:
                        return -1, n_msg, msg, n_lv, lv
                    if done:
                        break
        else:
            return -1, n_msg, msg, n_lv, lv
        p, done = next_key(buf, p, end)
        if p < 0:
            return -1, n_msg, msg, n_lv, lv
        if done:
            break
    if (seen & (1 | 4 | 16)) != (1 | 4 | 16):
        return -1, n_msg, msg, n_lv, lv
    for m in range(first_msg, n_msg):
        if msg[m, 4] <= 0:
            msg[m, 4] = ts_msg
        msg[m, 7] = final_id
    return p, n_msg, msg, n_lv, lv


@njit(cache=True)
def _scan_lines(buf, starts, ends, todo, words, word_sides, heads, at_keys, capacity):
    """Scan every line. Per accepted line: its book messages (msg rows: line, ts, seq, kind
    1 update / 2 snapshot, ts_event, product span, final id) and their levels (lv rows:
    message, side, price span, size span). A line with any surprise is not accepted (the
    per-line path takes it)."""
    env_head, env_src, env_ex, env_kind = heads[0], heads[1], heads[2], heads[3]
    k_type, k_prod, k_time, k_chg = heads[4], heads[5], heads[6], heads[7]
    k_bids, k_asks, v_l2, v_snap = heads[8], heads[9], heads[10], heads[11]
    k_channel = at_keys[0]
    n = len(starts)
    ok = np.zeros(n, np.bool_)
    msg = np.empty((1024, 8), np.int64)
    n_msg = 0
    lv = np.empty((capacity, 6), np.int64)
    n_lv = 0
    for i in range(n):
        if not todo[i]:
            continue
        s, end = starts[i], ends[i]
        mark_lv, mark_msg = n_lv, n_msg
        p, ts, seq = envelope(buf, s, end, env_head, env_src, env_ex, env_kind, LBRACE)
        if p < 0:
            continue
        bad = False
        ks, ke, v = key_at(buf, p, end)
        if v >= 0 and eq(buf, ks, ke, k_channel):
            p, n_msg, msg, n_lv, lv = _at_data(
                buf, p, end, i, ts, seq, msg, n_msg, lv, n_lv, words, word_sides, heads, at_keys
            )
            bad = p < 0
        else:
            m = n_msg
            kind = 0
            t_ns = -1
            prod_s = prod_e = -1
            seen = 0
            while not bad:
                ks, ke, p = key_at(buf, p, end)
                if p < 0:
                    bad = True
                    break
                if eq(buf, ks, ke, k_type) and not seen & 1:
                    seen |= 1
                    q = str_end(buf, p, end)
                    if q < 0:
                        bad = True
                        break
                    if eq(buf, p + 1, q, v_l2):
                        kind = 1
                    elif eq(buf, p + 1, q, v_snap):
                        kind = 2
                    else:
                        bad = True
                        break
                    p = q + 1
                elif eq(buf, ks, ke, k_prod) and not seen & 2:
                    seen |= 2
                    q = str_end(buf, p, end)
                    if q < 0:
                        bad = True
                        break
                    prod_s, prod_e = p + 1, q
                    p = q + 1
                elif eq(buf, ks, ke, k_time) and not seen & 4:
                    seen |= 4
                    q = str_end(buf, p, end)
                    if q < 0:
                        bad = True
                        break
                    t_ns = iso_ns(buf, p + 1, q)
                    p = q + 1
                elif eq(buf, ks, ke, k_chg) and not seen & 8:
                    seen |= 8
                    p, n_lv, lv = levels_scan(buf, p, end, m, -1, lv, n_lv, 3, words, word_sides)
                elif eq(buf, ks, ke, k_bids) and not seen & 16:
                    seen |= 16
                    p, n_lv, lv = levels_scan(buf, p, end, m, 0, lv, n_lv, 2, words, word_sides)
                elif eq(buf, ks, ke, k_asks) and not seen & 32:
                    seen |= 32
                    p, n_lv, lv = levels_scan(buf, p, end, m, 1, lv, n_lv, 2, words, word_sides)
                else:
                    bad = True  # other keys (or duplicates): the normalizer decides
                    break
                if p < 0:
                    bad = True
                    break
                p, done = next_key(buf, p, end)
                if p < 0:
                    bad = True
                    break
                if done:
                    break
            if not bad:
                if kind == 1:
                    need = 2 | 4 | 8
                    bad = (seen & need) != need or t_ns < 0 or (seen & (16 | 32)) != 0
                elif kind == 2:
                    need = 2 | 16 | 32
                    bad = (seen & need) != need or (seen & 8) != 0
                    if (seen & 4) and t_ns < 0:
                        bad = True  # an unparsable extra time: let the normalizer see it
                    t_ns = ts
                else:
                    bad = True
            if not bad:
                msg = grow(msg, n_msg)
                msg[m, 0] = i
                msg[m, 1] = ts
                msg[m, 2] = seq
                msg[m, 3] = kind
                msg[m, 4] = t_ns
                msg[m, 5] = prod_s
                msg[m, 6] = prod_e
                msg[m, 7] = -1
                n_msg += 1
        if not bad:
            p = ws(buf, p, end)
            bad = p >= end or buf[p] != RBRACE or p + 1 != end
        if bad:
            n_lv, n_msg = mark_lv, mark_msg  # drop this line's messages and levels
            continue
        ok[i] = True
    return ok, msg[:n_msg], lv[:n_lv]


_HEADS = (
    _ENV_HEAD, _ENV_SRC, _ENV_EX, _ENV_KIND, _K_TYPE, _K_PRODUCT, _K_TIME, _K_CHANGES,
    _K_BIDS, _K_ASKS, _V_L2, _V_SNAP,
)  # fmt: skip
# Advanced Trade l2_data: {"channel","client_id","timestamp","sequence_num","events":[{"type",
# "product_id","updates":[{"side","event_time","price_level","new_quantity"}]}]}
_AT_KEYS = tuple(
    np.frombuffer(w, np.uint8).copy()
    for w in (
        b"channel", b"client_id", b"timestamp", b"sequence_num", b"events", b"l2_data",
        b"update", b"updates", b"side", b"event_time", b"price_level", b"new_quantity",
    )
)  # fmt: skip


def fast_coinbase_books(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    """Coinbase book lines among the `todo` lines -> FastBooks and the mask of the lines they
    took; every other line (and any line failing a check) is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return ScanResult(none)
    ok, msg, lv = _scan_lines(
        buf, starts, ends, todo, _WORDS, _WORD_SIDES, _HEADS, _AT_KEYS, 4096 + len(buf) // 256
    )
    if not ok.any():
        return ScanResult(none)
    msg_line = msg[:, 0]
    pid = spans(buf, msg[:, 5], msg[:, 6]).dictionary_encode()
    raws = pid.dictionary.to_pylist()
    symbols = checked_symbols(raws, coinbase.symbol_of, (NormalizeError, TypeError))
    codes = pid.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    msg_ok = np.array([s is not None for s in symbols] + [False], dtype=bool)[codes]
    # one instrument = one raw product name (one batch carries one venue symbol)
    msg_ok = one_code_per_symbol(codes, msg_ok, symbols)
    # a line is taken whole or not at all
    ok[msg_line[~msg_ok]] = False
    msg_ok = ok[msg_line]
    if not ok.any():
        return ScanResult(none)
    levels = LevelColumns(buf, lv, msg_ok, len(msg))
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(np.unique(codes[msg_ok]).tolist()):
        sel = np.flatnonzero(msg_ok & (codes == c))
        sym = symbols[c]
        assert sym is not None
        out[("coinbase", sym)] = FastBook(
            exchange="coinbase",
            symbol=sym,
            venue_symbol=raws[c],
            channel=FAST_CHANNEL,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, 4],
            ts_recv=msg[sel, 1],
            seq=msg[sel, 2],
            is_snapshot=msg[sel, 3] == 2,
            final_id=msg[sel, 7],
            **levels.of(sel),
        )
    return ScanResult(ok, books=out)


_MATCH = coinbase.MATCH.args_for(ROW_LAYOUT)
_TICKER = coinbase.TICKER.args_for(ROW_LAYOUT)
# the table's (taker) side of each declared match side word
_TAKER_SIDES = tuple(coinbase.TAKER_SIDE_OF_MAKER[w] for w in coinbase.MAKER_SIDES)


def fast_coinbase_rows(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
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
        rows = payload_rows(
            buf, starts, ends, todo, _ENV_HEAD, _ENV_SRC, _ENV_EX, _ENV_KIND, decl, 0
        )
        if not len(rows):
            continue
        good, codes, symbols, raws = symbols_of(text(buf, rows, R_SYM), coinbase.symbol_of)
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


_AT_WORDS = tuple(
    as_bytes(w)
    for w in (b"channel", b"client_id", b"timestamp", b"sequence_num", b"events", b"type",
              b"trades", b"tickers")
)  # fmt: skip
_AT_CHANNELS = pack_words([coinbase.AT_TRADES_CHANNEL, *coinbase.AT_TICKER_CHANNELS])
_AT_TRADE = coinbase.AT_TRADE.args_for(ROW_LAYOUT)
_AT_TICKER = coinbase.AT_TICKER.args_for(ROW_LAYOUT)
_AT_SIDES = tuple(coinbase.at_trade_side(w) for w in coinbase.AT_TRADE_SIDES)


@njit(cache=True)
def _scan_at_rows(buf, starts, ends, todo, head, src, exk, kind, words, ch_flat, ch_off, shapes):
    """Advanced Trade market_trades / ticker / ticker_batch lines ({"channel" first, then
    "client_id", "timestamp", "sequence_num", "events": [{"type", "trades"|"tickers": [..]}]})
    -> one row per trade / ticker item (R_KIND: 0 trades, 1 tickers; a ticker's time is the
    message timestamp)."""
    trade, ticker = shapes
    k_channel, k_client, k_stamp, k_seqnum, k_events = (
        words[0],
        words[1],
        words[2],
        words[3],
        words[4],
    )
    k_type, k_trades, k_tickers = words[5], words[6], words[7]
    rows = np.empty((256, R_COLS), np.int64)
    n_rows = 0
    no_lv = np.empty((1, 6), np.int64)
    for i in range(len(starts)):
        if not todo[i]:
            continue
        end = ends[i]
        p, ts, seq = envelope(buf, starts[i], end, head, src, exk, kind, LBRACE)
        if p < 0:
            continue
        mark = n_rows
        ch = -1
        ts_msg = -1
        seen = 0
        k_items = k_trades
        while True:
            ks, ke, p = key_at(buf, p, end)
            if p < 0:
                break
            if eq(buf, ks, ke, k_channel) and seen == 0:
                seen |= 1
                q = str_end(buf, p, end)
                for c in range(len(ch_off) - 1):
                    if q >= 0 and eq_word(buf, p + 1, q, ch_flat, ch_off, c):
                        ch = min(c, 1)
                        break
                p = q + 1 if ch >= 0 else -1
            elif eq(buf, ks, ke, k_client) and not seen & 2:
                seen |= 2
                q = str_end(buf, p, end)
                p = q + 1 if q >= 0 else -1
            elif eq(buf, ks, ke, k_stamp) and not seen & 4:
                seen |= 4
                q = str_end(buf, p, end)
                ts_msg = iso_ns(buf, p + 1, q) if q >= 0 else -1
                p = q + 1 if ts_msg >= 0 else -1
            elif eq(buf, ks, ke, k_seqnum) and not seen & 8:
                seen |= 8
                _v, p = read_int(buf, p, end)
            elif eq(buf, ks, ke, k_events) and not seen & 16 and seen & 1:
                seen |= 16
                k_items = k_trades if ch == 0 else k_tickers
                p = ws(buf, p + 1, end) if p < end and buf[p] == LBRACKET else -1
                while p >= 0:  # one event (an empty list: the per-line path)
                    if p >= end or buf[p] != LBRACE:
                        p = -1
                        break
                    p = ws(buf, p + 1, end)
                    ev_seen = 0
                    while True:
                        ks, ke, p = key_at(buf, p, end)
                        if p < 0:
                            break
                        if eq(buf, ks, ke, k_type) and not ev_seen & 1:
                            ev_seen |= 1
                            q = str_end(buf, p, end)
                            p = q + 1 if q >= 0 else -1
                        elif not ev_seen & 2 and eq(buf, ks, ke, k_items):
                            ev_seen |= 2
                            p = ws(buf, p + 1, end) if p < end and buf[p] == LBRACKET else -1
                            while p >= 0:  # one item (an empty list: the per-line path)
                                if p >= end or buf[p] != LBRACE:
                                    p = -1
                                    break
                                rows = grow(rows, n_rows)
                                out = rows[n_rows]
                                out[:] = -1
                                out[R_LINE], out[R_TS], out[R_SEQ], out[R_KIND] = i, ts, seq, ch
                                if ch == 0:
                                    p, _s, _a, _b = flat_object(
                                        buf, p, end, trade, out, 0, no_lv, 0
                                    )
                                else:
                                    p, _s, _a, _b = flat_object(
                                        buf, p, end, ticker, out, 0, no_lv, 0
                                    )
                                if p < 0:
                                    break
                                n_rows += 1
                                p, done = next_item(buf, p, end)
                                if p < 0 or done:
                                    break
                        else:
                            p = -1
                        if p < 0:
                            break
                        p, done = next_key(buf, p, end)
                        if p < 0 or done:
                            break
                    if p < 0 or not ev_seen & 2:
                        p = -1
                        break
                    p, done = next_item(buf, p, end)
                    if p < 0 or done:
                        break
            else:
                p = -1
            if p < 0:
                break
            p, done = next_key(buf, p, end)
            if p < 0 or done:
                break
        if p >= 0:
            p = ws(buf, p, end)
        if p < 0 or p >= end or buf[p] != RBRACE or p + 1 != end or (seen & 21) != 21:
            n_rows = mark
            continue
        if ch == 1:
            for r in range(mark, n_rows):
                rows[r, R_EVT] = ts_msg
    return rows[:n_rows]


def fast_coinbase_at_rows(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    """Advanced Trade market_trades and ticker lines among the `todo` lines -> trade and quote
    rows as columns (read by ``coinbase.AT_TRADE`` / ``coinbase.AT_TICKER``)."""
    n = len(starts)
    out = ScanResult(np.zeros(n, dtype=bool))
    if n == 0 or not todo.any():
        return out
    rows = _scan_at_rows(
        buf, starts, ends, todo, _ENV_HEAD, _ENV_SRC, _ENV_EX, _ENV_KIND, _AT_WORDS,
        *_AT_CHANNELS, (_AT_TRADE, _AT_TICKER),
    )  # fmt: skip
    if not len(rows):
        return out
    good, codes, symbols, raws = symbols_of(text(buf, rows, R_SYM), coinbase.symbol_of)
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
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    """Book lines (``fast_coinbase_books``), then the Exchange feed's trade and ticker lines,
    then Advanced Trade's."""
    out = fast_coinbase_books(buf, starts, ends, todo)
    for more in (fast_coinbase_rows, fast_coinbase_at_rows):
        rows = more(buf, starts, ends, todo & ~out.taken)
        out.taken |= rows.taken
        out.trades.extend(rows.trades)
        out.quotes.extend(rows.quotes)
    return out


SCANNER = register(Scanner("coinbase", ("coinbase",), scan_coinbase))
