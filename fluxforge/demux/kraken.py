"""Columnar fast path for Kraken: v1 ``book-N``, ``trade`` and ``ticker`` lines, websocket v2
lines.

One pass (``_lines``) classifies the Kraken lines from their payloads (the demux read their
envelopes); then one numba pass per class reads the payloads by the declarations of
``fluxforge.venues.kraken`` (the v1 book payload ``BOOK_PAYLOAD`` and its message rules, the v1
trade row, the v1 ticker parts, the v2 items), the same declarations the per-line normalizer
reads, and records byte spans. Accepted v1 book
shape (anything else, including escapes, JSON numbers for prices/sizes/times, unknown or
duplicate keys, an empty payload object, is left to the per-line path, which gives it the
normalizer's own treatment)::

    {"ts":N,"src":"..","ex":"kraken","seq":N,"kind":"msg","data":
     [int, {"as"|"a":[levels], "bs"|"b":[levels], "c":"digits"}, ..., "book-D", "PAIR"]}
    level = ["price", "size"(, "seconds"(, "string"...))]

What stays in the book loop here (``_scan``) is the message around the payloads: the channel
id, one or two payload objects, the channel name with its depth and the pair; per message,
the rules declared next to ``BOOK_PAYLOAD`` (snapshot keys, the last "c" is the checksum and an
update needs one, a message with no levels must be a snapshot, ts_event = the latest level
time else the receive time).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from fluxforge.demux.bytescan import (
    AHEAD_LINES,
    BACKSLASH,
    COMMA,
    ENV_AT,
    ENV_KIND,
    ENV_SEQ,
    ENV_TS,
    KIND_MSG,
    LBRACE,
    LBRACKET,
    LV_COLS,
    QUOTE,
    RBRACE,
    RBRACKET,
    borrowed,
    control_object_end,
    distinct_spans,
    eq,
    eq_word,
    flat_object,
    grow,
    int_codes,
    key_at,
    level_capacity,
    lit,
    next_item,
    next_key,
    prefetch_span,
    read_int,
    scalar_end,
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
    R_AUX,
    R_COLS,
    R_EVT,
    R_ID,
    R_KIND,
    R_LINE,
    R_SEQ,
    R_SYM,
    R_TS,
    R_TYPE,
    ROW_LAYOUT,
    quotes_table,
    text_symbols,
    trades_table,
)
from fluxforge.events import CHECKSUM_KRAKEN, NormalizeError
from fluxforge.venues import kraken
from fluxforge.wire.decimal import decimal_end
from fluxforge.wire.envelope import as_bytes
from fluxforge.wire.shape import pack_words

_BOOK = as_bytes(kraken.BOOK_CHANNEL_PREFIX.encode())
_MSG_COLS = 11  # line, ts, seq, snapshot, ts_event, pair s/e, channel s/e, checksum, depth


# One pass over the Kraken lines' payloads (``_lines``, from the demux's envelope rows): per
# line the payload's position (after its opener and blanks), receive time, daemon seq, and
# which reader takes it; each scanner
# below then visits only its own lines, from the payload on.
# (v1 arrays also: where the payload elements end (the comma before "NAME"), the NAME and PAIR
# string spans, so that the readers parse only the payload elements)
_E_POS, _E_TS, _E_SEQ, _E_CLASS, _E_TAIL, _E_NAME0, _E_NAME1, _E_PAIR0, _E_PAIR1 = range(9)
_V1_BOOK, _V1_TRADE, _V1_TICKER, _V2_LINE = range(4)


@njit(cache=True)
def _str_start(buf, q, s):
    """q at a string's closing quote: its opening quote's position (>= s), or -1 when the
    string holds a byte ``str_end`` refuses (the scanners would refuse the line anyway)."""
    k = q - 1
    found = -1
    while k >= s and found < 0:
        c = buf[k]
        if c == QUOTE:
            found = k
        elif c == BACKSLASH or c < 32 or c >= 128:
            break
        k -= 1
    len(buf)  # (one exit: see fluxforge/demux/bytescan.py)
    return found


@njit(cache=True)
def _blank_before(buf, k, s):
    """The last position <= k (and >= s) that is not a blank, or s - 1."""
    while k >= s and (buf[k] == 32 or buf[k] == 9):
        k -= 1
    return k


@njit(cache=True)
def _lines(buf, ends, todo, envelopes, names, name_off, book):
    """Per `todo` msg line (from its payload: the envelope rows `envelopes`,
    ``bytescan.envelopes``) the ``_E_*`` columns: class _V2_LINE for an object payload (position:
    its first key); for an array ``[id, ..., "NAME", "PAIR"]`` the class of its channel NAME
    (packed `names` trade, ticker; `book` the book prefix), read from the line's end with the
    spans of NAME and PAIR and the comma that ends the payload elements (position: the first
    of them); class -1 for any other line (the per-line path)."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf = borrowed(buf)
    n = len(ends)
    env = np.full((n, 9), -1, np.int64)
    for i in range(n):
        k = i + AHEAD_LINES
        if k < n and todo[k]:
            prefetch_span(buf, envelopes[k, ENV_AT], ends[k])
        if not todo[i] or envelopes[i, ENV_KIND] != KIND_MSG:
            continue
        end = ends[i]
        p, ts, seq = envelopes[i, ENV_AT], envelopes[i, ENV_TS], envelopes[i, ENV_SEQ]
        c = buf[p] if p < end else 0
        cls = -1
        if c == LBRACE:
            cls = _V2_LINE
        elif c == LBRACKET:  # [id, ...payload elements..., "NAME", "PAIR" ] }
            k = end - 1 if buf[end - 1] == RBRACE else -1
            k = _blank_before(buf, k - 1, p) if k > p else -1
            k = _blank_before(buf, k - 1, p) if k > p and buf[k] == RBRACKET else -1
            pair1 = k
            k = _str_start(buf, k, p) if k > p and buf[k] == QUOTE else -1  # "PAIR"
            pair0 = k + 1
            k = _blank_before(buf, k - 1, p) if k > p else -1
            k = _blank_before(buf, k - 1, p) if k > p and buf[k] == COMMA else -1
            q = _str_start(buf, k, p) if k > p and buf[k] == QUOTE else -1  # "NAME"
            tail = _blank_before(buf, q - 1, p) if q > p else -1
            _cid, h = read_int(buf, ws(buf, p + 1, end), end)  # the channel id: not read
            h = ws(buf, h, end) if h >= 0 else -1
            if tail > p and buf[tail] == COMMA and 0 <= h < tail and buf[h] == COMMA:
                if eq_word(buf, q + 1, k, names, name_off, 0):
                    cls = _V1_TRADE
                elif eq_word(buf, q + 1, k, names, name_off, 1):
                    cls = _V1_TICKER
                elif lit(buf, q + 1, k, book) >= 0:
                    cls = _V1_BOOK
                env[i, _E_TAIL], env[i, _E_NAME0], env[i, _E_NAME1] = tail, q + 1, k
                env[i, _E_PAIR0], env[i, _E_PAIR1] = pair0, pair1
                p = h  # (the payload elements start after the id's comma)
        if cls >= 0:
            env[i, _E_POS] = ws(buf, p + 1, end)
            env[i, _E_TS] = ts
            env[i, _E_SEQ] = seq
            env[i, _E_CLASS] = cls
    return env


# The v1 book payload object as declared in fluxforge.venues.kraken (``BOOK_PAYLOAD``), read
# by ``flat_object`` into a scratch row: the latest time of each level list, the checksum;
# the message rules (snapshot keys, one checksum for an update, its bound) come from there too
_PAY_CK = 4
_PAY_LAYOUT = {"snapshot_asks": 0, "snapshot_bids": 1, "asks": 2, "bids": 3, "checksum": _PAY_CK}
_BOOK_PAYLOAD = kraken.BOOK_PAYLOAD.args_for(_PAY_LAYOUT)


def _book_rules() -> np.ndarray:
    """(snapshot key bits, checksum bit, bits of the keys of each side, checksum bound)."""
    decl = kraken.BOOK_PAYLOAD
    key_of = dict(zip(decl.columns, decl.names, strict=True))
    side_bits = {
        side: decl.bits(*(key_of[c] for c, s in kraken.BOOK_LEVEL_COLUMNS if s == side))
        for side in ("ask", "bid")
    }
    return np.array(
        [decl.bits(*kraken.BOOK_SNAPSHOT_KEYS), decl.bits("c"), side_bits["ask"],
         side_bits["bid"], kraken.CHECKSUM_MAX],
        np.int64,
    )  # fmt: skip


_BOOK_RULES = _book_rules()


@njit(cache=True)
def _scan(buf, ends, env, book, capacity, payload, rules):
    """v1 book lines ``[id, {payload}(, {payload}), "book-D", "PAIR"]`` -> msg rows and level
    rows; each payload read by its declaration `payload` (``_BOOK_PAYLOAD``), the message by
    `rules` (``_book_rules``)."""
    snap_bits, ck_bit, ask_bits, bid_bits, ck_max = rules[0], rules[1], rules[2], rules[3], rules[4]
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, payload = borrowed(buf), borrowed(payload)
    pay = np.zeros(_PAY_CK + 1, np.int64)
    n = len(ends)
    ok = np.zeros(n, np.bool_)
    msg = np.empty((1024, _MSG_COLS), np.int64)
    n_msg = 0
    lv = np.empty((capacity, LV_COLS), np.int64)
    n_lv = 0
    for i in range(n):
        if env[i, _E_CLASS] != _V1_BOOK:
            continue
        end = ends[i]
        p, ts, seq = env[i, _E_POS], env[i, _E_TS], env[i, _E_SEQ]
        mark = n_lv
        snap = False
        ck = -1
        latest = 0
        n_pay = 0
        bad = False
        tail = env[i, _E_TAIL]
        while p < tail and buf[p] == LBRACE:
            n_pay += 1
            pay[:] = 0
            p, seen, lv, n_lv = flat_object(buf, p, end, payload, pay, n_msg, lv, n_lv)
            # (a side's snapshot and update lists in one payload: the per-line path's order)
            if p < 0 or (seen & ask_bits) == ask_bits or (seen & bid_bits) == bid_bits:
                bad = True
                break
            snap = snap or (seen & snap_bits) != 0
            if seen & ck_bit:
                if pay[_PAY_CK] > ck_max:
                    bad = True
                    break
                ck = pay[_PAY_CK]
            for c in range(_PAY_CK):
                latest = max(latest, pay[c])
            p = ws(buf, p, end)
            if p == tail:
                break
            if p >= end or buf[p] != COMMA:
                bad = True
                break
            p = ws(buf, p + 1, end)
        if bad or n_pay == 0 or p != tail:
            n_lv = mark
            continue
        # "book-D" (its class: ``_lines``), the depth D
        ch_s, q = env[i, _E_NAME0], env[i, _E_NAME1]
        d0 = ch_s + len(book)
        if q == d0 or q - d0 > 9:
            n_lv = mark
            continue
        depth = 0
        for k in range(d0, q):
            c = buf[k]
            if c < 48 or c > 57:
                depth = -1
                break
            depth = depth * 10 + (c - 48)
        if depth < 0:
            n_lv = mark
            continue
        ch_e, pair_s, pair_e = q, env[i, _E_PAIR0], env[i, _E_PAIR1]
        if (not snap and ck < 0) or (n_lv == mark and not snap):
            n_lv = mark  # the normalizer refuses these: it gives the reason
            continue
        if n_msg == len(msg):  # (a call per row costs reference counts)
            msg = grow(msg, n_msg)
        msg[n_msg, 0] = i
        msg[n_msg, 1] = ts
        msg[n_msg, 2] = seq
        msg[n_msg, 3] = 1 if snap else 0
        msg[n_msg, 4] = latest if latest > 0 else ts
        msg[n_msg, 5] = pair_s
        msg[n_msg, 6] = pair_e
        msg[n_msg, 7] = ch_s
        msg[n_msg, 8] = ch_e
        msg[n_msg, 9] = ck
        msg[n_msg, 10] = depth
        n_msg += 1
        ok[i] = True
    return ok, msg[:n_msg], lv[:n_lv]


def fast_kraken_books(
    buf: np.ndarray, ends: np.ndarray, env: np.ndarray, capacity: int
) -> ScanResult:
    """Kraken v1 book lines (``_lines`` class _V1_BOOK) -> FastBooks per instrument and the
    mask of the lines taken; every other line is left to the per-line path. `capacity`: level
    rows (``bytescan.level_capacity``)."""
    n = len(ends)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not (env[:, _E_CLASS] == _V1_BOOK).any():
        return ScanResult(none)
    ok, msg, lv = _scan(buf, ends, env, _BOOK, capacity, _BOOK_PAYLOAD, _BOOK_RULES)
    if not ok.any():
        return ScanResult(none)
    msg_line = msg[:, 0]
    # instrument = one (pair, channel): one batch carries one venue symbol and one channel;
    # numbered as the pairs first appear
    pair, pairs = distinct_spans(buf, msg[:, 5], msg[:, 6])
    chan, chans = distinct_spans(buf, msg[:, 7], msg[:, 8])
    codes, first = int_codes(pair * len(chans) + chan)
    pair_text, chan_text = pairs.to_pylist(), chans.to_pylist()
    labels = [[pair_text[pair[j]], chan_text[chan[j]]] for j in first]
    symbols = checked_symbols(
        [raw for raw, _ in labels], kraken.symbol_of, (NormalizeError, TypeError)
    )
    msg_ok = np.array([s is not None for s in symbols] + [False], dtype=bool)[codes]
    # two pairs or channels for one symbol: leave them to the per-line path
    msg_ok = one_code_per_symbol(codes, msg_ok, symbols)
    ok[msg_line[~msg_ok]] = False
    if not ok.any():
        return ScanResult(none)
    groups = by_code(codes, msg_ok)
    levels = LevelColumns(buf, lv, msg_ok, len(msg)).of_groups(
        [sel for _c, sel in groups], spend=True
    )
    out: dict[tuple[str, str], FastBook] = {}
    for (c, sel), level_cols in zip(groups, levels, strict=True):
        (raw, channel), sym = labels[c], symbols[c]
        assert sym is not None
        out[("kraken", sym)] = _fast_book(
            sym, raw, channel, msg[sel, 0], msg[sel, 4], msg[sel, 1], msg[sel, 2],
            msg[sel, 3] == 1, msg[sel, 9], int(msg[sel[0], 10]), level_cols,
        )  # fmt: skip
    return ScanResult(ok, books=out)


def _fast_book(
    sym: str,
    raw: str,
    channel: str,
    line: np.ndarray,
    ts_event: np.ndarray,
    ts_recv: np.ndarray,
    seq: np.ndarray,
    is_snapshot: np.ndarray,
    checksum: np.ndarray,
    depth: int,
    levels: dict[str, Any],
) -> FastBook:
    """One instrument's Kraken book messages (v1 or v2; line indexes, a checksum < 0: none;
    no update ids) as the columnar container."""
    has_ck = checksum >= 0
    return FastBook(
        exchange="kraken",
        symbol=sym,
        venue_symbol=raw,
        channel=channel,
        line=line + 1,
        ts_event=ts_event,
        ts_recv=ts_recv,
        seq=seq,
        is_snapshot=is_snapshot,
        final_id=np.full(len(line), -1, np.int64),
        checksum=np.where(has_ck, checksum, 0),
        has_checksum=has_ck,
        checksum_kind=CHECKSUM_KRAKEN,
        depth=depth,
        **levels,
    )


# ---------------------------------------------------------------- v1 trades, websocket v2
_TRADE = kraken.TRADE.args_for(ROW_LAYOUT)
_TRADE_SIDES = tuple(kraken.TRADE_SIDES[w] for w in kraken.TRADE.words[3])
_V2_BOOK, _V2_TRADE, _V2_TICKER = 0, 1, 2
_V2_CHANNELS = pack_words([kraken.V2_BOOK_CHANNEL, "trade", "ticker", "heartbeat"])
_V2_HEARTBEAT = 3
_R_CK = R_ID  # a v2 book row keeps its checksum where a trade row has its id
_BOOK_LAYOUT = {**ROW_LAYOUT, "bids": -1, "asks": -1, "checksum": _R_CK}
_V2_ARGS = (
    kraken.V2_BOOK.args_for(_BOOK_LAYOUT),
    kraken.V2_TRADE.args_for(ROW_LAYOUT),
    kraken.V2_TICKER.args_for(ROW_LAYOUT),
)
_V2_WORDS = tuple(
    as_bytes(w) for w in (b"channel", b"type", b"data", b"snapshot", b"update", b"event")
)
# a v1 control event object: "event" once, naming one of ``kraken.CONTROL_EVENTS``, no key the
# normalizer reads as v2 (``kraken.V2_KEYS``), every other value surely valid JSON
# (``bytescan.control_object_end``); anything else goes to the per-line path
_V1_CONTROL = pack_words(sorted(kraken.CONTROL_EVENTS))
_V2_KEYS = pack_words(kraken.V2_KEYS)


@njit(cache=True)
def _scan_v1_trades(buf, ends, env, shape):
    """v1 trade lines ``[id, [[row], ...], "trade", "PAIR"]``: one row per trade (declaration
    `shape`), the pair's span in R_AUX."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, shape = borrowed(buf), borrowed(shape)
    rows = np.empty((256, R_COLS), np.int64)
    n_rows = 0
    no_lv = np.empty((1, LV_COLS), np.int64)
    for i in range(len(ends)):
        if env[i, _E_CLASS] != _V1_TRADE:
            continue
        end = ends[i]
        p, ts, seq = env[i, _E_POS], env[i, _E_TS], env[i, _E_SEQ]
        if p >= end or buf[p] != LBRACKET:
            continue
        p = ws(buf, p + 1, end)
        mark = n_rows
        while True:  # one trade row (an empty list: the per-line path)
            if p >= end or buf[p] != LBRACKET:
                p = -1
                break
            if n_rows == len(rows):
                rows = grow(rows, n_rows)
            out = rows[n_rows]
            out[:] = -1
            out[R_LINE], out[R_TS], out[R_SEQ] = i, ts, seq
            p, _s, _a, _b = flat_object(buf, p, end, shape, out, 0, no_lv, 0)
            if p < 0:
                break
            n_rows += 1
            p, done = next_item(buf, p, end)
            if p < 0 or done:
                break
        if p < 0 or ws(buf, p, end) != env[i, _E_TAIL]:  # (then "trade", "PAIR": ``_lines``)
            n_rows = mark
            continue
        for r in range(mark, n_rows):
            rows[r, R_AUX], rows[r, R_AUX + 1] = env[i, _E_PAIR0], env[i, _E_PAIR1]
    return rows[:n_rows]


@njit(cache=True)
def _scan_v2(buf, ends, env, words, ch_flat, ch_off, decl, cap, events, v2_keys):
    """Websocket v2 lines ``{"channel", "type", "data": [items]}`` ("channel" before "data"):
    book, trade and ticker items -> one row each (R_KIND: the channel; R_TYPE: 1 snapshot,
    2 update), book levels -> lv; bare heartbeats, and v1 control event objects (packed
    `events`, none of the keys `v2_keys`: ``bytescan.control_object_end``) -> `control`."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, ch_flat = borrowed(buf), borrowed(ch_flat)
    book, trade, ticker = decl
    k_channel, k_type, k_data, v_snap, v_update = words[0], words[1], words[2], words[3], words[4]
    k_event = words[5]
    ev_flat, ev_off = events
    n = len(ends)
    control = np.zeros(n, np.bool_)
    rows = np.empty((256, R_COLS), np.int64)
    n_rows = 0
    lv = np.empty((cap, LV_COLS), np.int64)
    n_lv = 0
    for i in range(n):
        if env[i, _E_CLASS] != _V2_LINE:
            continue
        end = ends[i]
        p, ts, seq = env[i, _E_POS], env[i, _E_TS], env[i, _E_SEQ]
        mark_rows, mark_lv = n_rows, n_lv
        ch = -1
        typ = 0
        seen = 0
        while True:
            ks, ke, p = key_at(buf, p, end)
            if p < 0:
                break
            if eq(buf, ks, ke, k_channel) and not seen & 1:
                seen |= 1
                q = str_end(buf, p, end)
                if q < 0:
                    p = -1
                    break
                for c in range(len(ch_off) - 1):
                    if eq_word(buf, p + 1, q, ch_flat, ch_off, c):
                        ch = c
                        break
                if ch < 0:
                    p = -1
                    break
                p = q + 1
            elif eq(buf, ks, ke, k_type) and not seen & 2:
                seen |= 2
                q = str_end(buf, p, end)
                if q >= 0 and eq(buf, p + 1, q, v_snap):
                    typ = 1
                elif q >= 0 and eq(buf, p + 1, q, v_update):
                    typ = 2
                else:
                    p = -1
                    break
                p = q + 1
            elif eq(buf, ks, ke, k_data) and not seen & 4 and seen & 1 and ch < _V2_HEARTBEAT:
                seen |= 4
                if p >= end or buf[p] != LBRACKET:
                    p = -1
                    break
                p = ws(buf, p + 1, end)
                while True:  # one item (an empty list: the per-line path)
                    if p >= end or buf[p] != LBRACE:
                        p = -1
                        break
                    if n_rows == len(rows):  # (a call per row costs reference counts)
                        rows = grow(rows, n_rows)
                    out = rows[n_rows]
                    out[:] = -1
                    out[R_LINE], out[R_TS], out[R_SEQ], out[R_EVT] = i, ts, seq, ts
                    out[R_KIND] = ch
                    if ch == _V2_BOOK:
                        p, _s, lv, n_lv = flat_object(buf, p, end, book, out, n_rows, lv, n_lv)
                    elif ch == _V2_TRADE:
                        p, _s, lv, n_lv = flat_object(buf, p, end, trade, out, n_rows, lv, n_lv)
                    else:
                        p, _s, lv, n_lv = flat_object(buf, p, end, ticker, out, n_rows, lv, n_lv)
                    if p < 0:
                        break
                    n_rows += 1
                    p, done = next_item(buf, p, end)
                    if p < 0 or done:
                        break
                if p < 0:
                    break
            else:
                p = -1
                break
            p, done = next_key(buf, p, end)
            if p < 0 or done:
                break
        if p < 0 and seen == 0:  # no v2 key read: a v1 control object? (seen 8: it is)
            n_rows, n_lv = mark_rows, mark_lv
            # (_E_POS is the first key: the object's '{' comes before it)
            p = control_object_end(buf, env[i, _E_POS] - 1, end, k_event, ev_flat, ev_off, *v2_keys)
            seen = 8 if p >= 0 else 0
        if p >= 0:
            p = ws(buf, p, end)
        good = p >= 0 and p < end and buf[p] == RBRACE and p + 1 == end
        if good and ((ch == _V2_HEARTBEAT and seen == 1) or seen == 8):
            control[i] = True
            continue
        if not good or seen != 7:
            n_rows, n_lv = mark_rows, mark_lv
            continue
        for r in range(mark_rows, n_rows):
            rows[r, R_TYPE] = typ
    return rows[:n_rows], lv[:n_lv], control


_V1_NAMES = pack_words([kraken.TRADE_CHANNEL, kraken.TICKER_CHANNEL])  # _lines: classes
_TICKER_KEYS = pack_words(kraken.TICKER_KEYS)


def _ticker_columns() -> np.ndarray:
    """TICKER_PARTS as a table: [key index, element] -> row column (-1: not read)."""
    width = 1 + max(i for parts in kraken.TICKER_PARTS.values() for i in parts)
    table = np.full((len(kraken.TICKER_KEYS), width), -1, np.int64)
    for key, parts in kraken.TICKER_PARTS.items():
        for idx, col in parts.items():
            table[kraken.TICKER_KEYS.index(key), idx] = ROW_LAYOUT[col]
    return table


_TICKER_COLS = _ticker_columns()


@njit(cache=True)
def _ticker_payload(buf, p, end, k_flat, k_off, pos_col, out):
    """The v1 ticker object at p ('{'): its documented keys, each once, each an array of
    scalars; the elements of ``pos_col`` are plain decimal strings -> spans in `out`.
    Returns the position after it, or -1."""
    p = ws(buf, p + 1, end)
    seen = 0
    while True:
        ks, ke, p = key_at(buf, p, end)
        if p < 0:
            return -1
        f = -1
        for k in range(len(k_off) - 1):
            if eq_word(buf, ks, ke, k_flat, k_off, k):
                f = k
                break
        if f < 0 or seen & (1 << f) or p >= end or buf[p] != LBRACKET:
            return -1
        seen |= 1 << f
        need = 0  # elements this key must have
        for j in range(pos_col.shape[1]):
            if pos_col[f, j] >= 0:
                need = j + 1
        p = ws(buf, p + 1, end)
        j = 0
        while True:
            col = pos_col[f, j] if j < pos_col.shape[1] else -1
            if col >= 0:
                q = decimal_end(buf, p, end, False)
                if q < 0:
                    return -1
                out[col], out[col + 1] = p + 1, q
                p = q + 1
            else:
                p = scalar_end(buf, p, end)
                if p < 0:
                    return -1
            j += 1
            p, done = next_item(buf, p, end)
            if p < 0:
                return -1
            if done:
                break
        if j < need:
            return -1
        p, done = next_key(buf, p, end)
        if p < 0:
            return -1
        if done:
            return p


@njit(cache=True)
def _scan_v1_tickers(buf, ends, env, k_flat, k_off, pos_col):
    """v1 ticker lines ``[id, {..}, "ticker", "PAIR"]`` -> one quote row each (receive time),
    the pair's span in R_AUX."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, k_flat = borrowed(buf), borrowed(k_flat)
    rows = np.empty((256, R_COLS), np.int64)
    n_rows = 0
    for i in range(len(ends)):
        if env[i, _E_CLASS] != _V1_TICKER:
            continue
        end = ends[i]
        p, ts, seq = env[i, _E_POS], env[i, _E_TS], env[i, _E_SEQ]
        if p >= end or buf[p] != LBRACE:
            continue
        if n_rows == len(rows):  # (a call per row costs reference counts)
            rows = grow(rows, n_rows)
        out = rows[n_rows]
        out[:] = -1
        out[R_LINE], out[R_TS], out[R_SEQ], out[R_EVT] = i, ts, seq, ts
        p = _ticker_payload(buf, p, end, k_flat, k_off, pos_col, out)
        if p < 0 or ws(buf, p, end) != env[i, _E_TAIL]:  # (then "ticker", "PAIR": ``_lines``)
            continue
        out[R_AUX], out[R_AUX + 1] = env[i, _E_PAIR0], env[i, _E_PAIR1]
        n_rows += 1
    return rows[:n_rows]


def fast_kraken_rows(
    buf: np.ndarray,
    ends: np.ndarray,
    env: np.ndarray,
    v1_books: dict[tuple[str, str], FastBook],
    capacity: int,
) -> ScanResult:
    """v1 trade and ticker lines and websocket v2 lines (``_lines`` classes) -> trade and
    quote rows, v2 books as FastBooks (symbols without a v1 book in `v1_books`), heartbeats
    as control; every other line is left to the per-line path. `capacity`: level rows
    (``bytescan.level_capacity``)."""
    n = len(ends)
    out = ScanResult(np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    classes = env[:, _E_CLASS]
    if (classes == _V1_TRADE).any():
        trades = _scan_v1_trades(buf, ends, env, _TRADE)
    else:
        trades = np.empty((0, R_COLS), np.int64)
    if len(trades):
        good, codes, symbols, raws = text_symbols(buf, trades, R_AUX, kraken.symbol_of)
        _take_rows(trades, good, out)
        keep = out.taken[trades[:, R_LINE]]
        trades, codes = trades[keep], codes[keep]
        take = pa.array(codes, pa.int64())
        table = trades_table("kraken", buf, trades, symbols.take(take), raws.take(take),
                             _TRADE_SIDES)  # fmt: skip
        out.trades.append((trades[:, R_LINE].copy(), table))
    if (classes == _V1_TICKER).any():
        tickers = _scan_v1_tickers(buf, ends, env, *_TICKER_KEYS, _TICKER_COLS)
    else:
        tickers = np.empty((0, R_COLS), np.int64)
    if len(tickers):
        good, codes, symbols, raws = text_symbols(buf, tickers, R_AUX, kraken.symbol_of)
        tickers, codes = tickers[good], codes[good]
        out.taken[tickers[:, R_LINE]] = True
        take = pa.array(codes, pa.int64())
        table = quotes_table("kraken", buf, tickers, symbols.take(take), raws.take(take))
        out.quotes.append((tickers[:, R_LINE].copy(), table))
    if not (classes == _V2_LINE).any():
        return out
    rows, lv, control = _scan_v2(
        buf,
        ends,
        env,
        _V2_WORDS,
        *_V2_CHANNELS,
        _V2_ARGS,
        capacity,
        _V1_CONTROL,
        _V2_KEYS,
    )
    out.control |= control
    if not len(rows):
        return out
    good, codes, symbols, raws = text_symbols(buf, rows, R_SYM, kraken.symbol_of)
    kind = rows[:, R_KIND]
    is_book = kind == _V2_BOOK
    # the kernel's rule: an unsigned 32-bit checksum (the per-line path gives the reason)
    good &= ~is_book | (rows[:, _R_CK] <= kraken.CHECKSUM_MAX)
    sym_list = symbols.to_pylist()
    taken_v1 = {sym for _ex, sym in v1_books}
    book_ok = np.array([s not in taken_v1 for s in sym_list] + [False], dtype=bool)[codes]
    good &= ~is_book | book_ok
    good &= ~is_book | one_code_per_symbol(codes, is_book & good, sym_list)
    v2_taken = _take_rows(rows, good, ScanResult(np.zeros(n, dtype=bool)))
    keep = v2_taken[rows[:, R_LINE]]
    out.taken |= v2_taken
    for k in (_V2_TRADE, _V2_TICKER):
        sel = np.flatnonzero(keep & (kind == k))
        if not len(sel):
            continue
        r = rows[sel]
        take = pa.array(codes[sel], pa.int64())
        if k == _V2_TRADE:
            sides = kraken.V2_TRADE.words[1]
            table = trades_table("kraken", buf, r, symbols.take(take), raws.take(take), sides)
            out.trades.append((r[:, R_LINE].copy(), table))
        else:
            table = quotes_table("kraken", buf, r, symbols.take(take), raws.take(take))
            out.quotes.append((r[:, R_LINE].copy(), table))
    book_rows = keep & is_book
    if book_rows.any():
        groups = by_code(codes, book_rows)
        levels = LevelColumns(buf, lv, book_rows, len(rows)).of_groups(
            [s for _c, s in groups], spend=True
        )
        raw_list = raws.to_pylist()
        for (c, sel), level_cols in zip(groups, levels, strict=True):
            out.books[("kraken", sym_list[c])] = _fast_book(
                sym_list[c], raw_list[c], kraken.V2_BOOK_CHANNEL, rows[sel, R_LINE],
                rows[sel, R_EVT], rows[sel, R_TS], rows[sel, R_SEQ], rows[sel, R_TYPE] == 1,
                rows[sel, _R_CK], 0, level_cols,
            )  # fmt: skip
    return out


def _take_rows(rows: np.ndarray, good: np.ndarray, out: ScanResult) -> np.ndarray:
    """Mark in `out.taken` the lines whose rows are all `good` (a line is taken whole)."""
    line = rows[:, R_LINE]
    out.taken[line] = True
    out.taken[line[~good]] = False
    return out.taken


def scan_kraken(
    exchange: str,
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    envelopes: np.ndarray,
) -> ScanResult:
    """The `todo` lines of `exchange` (kraken, the scanner's one): one pass over their
    payloads (``_lines``), then v1 book lines (``fast_kraken_books``), v1 trades and tickers
    and the websocket v2 lines."""
    env = _lines(buf, ends, todo, envelopes, *_V1_NAMES, _BOOK)
    capacity = level_capacity(starts, ends)
    out = fast_kraken_books(buf, ends, env, capacity)
    rows = fast_kraken_rows(buf, ends, env, out.books, capacity)
    out.taken |= rows.taken
    out.control = rows.control
    out.books.update(rows.books)
    out.trades.extend(rows.trades)
    out.quotes.extend(rows.quotes)
    return out


SCANNER = register(Scanner("kraken", ("kraken",), scan_kraken))
