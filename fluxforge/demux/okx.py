"""Columnar fast path for OKX and Bitget book pushes (the two venues share the shape).

Bitget and OKX book lines are large (hundreds of levels): through the per-line path they
cost an orjson parse, the level checks and, later, the BookMessage -> batch conversion, all
per level in Python. Here one numba pass checks them against exactly the rules of
``fluxforge.venues.okx._books`` / ``fluxforge.venues.bitget._books`` and records byte spans,
as the Coinbase scanner in ``fluxforge.demux`` does. Accepted shape (anything else, including
escapes, JSON numbers for prices/sizes, null, unknown or duplicate keys, an empty data list,
is left to the per-line path)::

    {"ts":N,"src":"..","ex":"okx"|"bitget","seq":N,"kind":"msg","data":
     {"arg":{"channel":"..","instId":".."(,"instType":"..")}, "action":"snapshot"|"update",
      "data":[{"asks":[levels],"bids":[levels],"ts":"ms"|ms,"checksum":int32
               (okx: ,"seqId":int,"prevSeqId":int; bitget: ,"seq":int)}, ...]}}
    level = ["price", "size"(, "string"...)]

The channel decides the rest in Python per distinct (instId, instType, channel): book
channel or not (not: the per-line path), depth, snapshot rule, symbol.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from fluxforge.demux.bytescan import (
    LBRACE,
    LBRACKET,
    NO_SIDES,
    NO_WORDS,
    envelope,
    eq,
    grow,
    key_at,
    levels_scan,
    next_item,
    next_key,
    read_int,
    spans,
    str_end,
    ws,
)
from fluxforge.demux.fastbook import FastBook, LevelColumns, checked_symbols, one_code_per_symbol
from fluxforge.demux.registry import Scanner, ScanResult, register
from fluxforge.events import CHECKSUM_OKX, NormalizeError
from fluxforge.venues import bitget, okx
from fluxforge.venues.common import venue_symbol
from fluxforge.venues.okx import CHECKSUM_MAX, CHECKSUM_MIN, ZERO_CHECKSUM_WITH_SEQ_IS_NONE
from fluxforge.wire.envelope import SCAN_HEAD, SCAN_MSG, SCAN_SRC, as_bytes, scan_ex
from fluxforge.wire.times import TS_MAX_MS, TS_MIN_MS

_EX = {ex: scan_ex(ex) for ex in ("okx", "bitget")}
_WORDS = tuple(
    as_bytes(w)
    for w in (
        b"arg", b"action", b"data", b"channel", b"instId", b"instType", b"asks", b"bids",
        b"ts", b"checksum", b"seqId", b"prevSeqId", b"seq", b"snapshot", b"update",
    )
)  # fmt: skip
# msg columns
_M_LINE, _M_TS, _M_SEQ, _M_EVT, _M_CK, _M_HASCK, _M_FINAL, _M_PREV, _M_SEQKEY = range(9)
_M_COLS = 9
# per-line columns (spans of arg values, action code)
_L_CH0, _L_CH1, _L_ID0, _L_ID1, _L_TY0, _L_TY1, _L_ACTION = range(7)


@njit(cache=True)
def _sint(buf, p, end):
    """(value, position after) of a JSON integer (optional '-', <= 18 digits), or (0, -1)."""
    neg = p < end and buf[p] == 45
    if neg:
        p += 1
    k = p
    v = 0
    while k < end and 48 <= buf[k] <= 57:
        v = v * 10 + (buf[k] - 48)
        k += 1
    if k == p or k - p > 18 or (buf[p] == 48 and k - p > 1) or (neg and v == 0):
        return 0, -1
    return (-v if neg else v), k


@njit(cache=True)
def _ms(buf, p, end):
    """common.ms_to_ns of a JSON int or a digit string at p: (ns, position after) or (0, -1)."""
    if p < end and buf[p] == 34:
        q = str_end(buf, p, end)
        if q < 0 or q == p + 1 or q - p - 1 > 13:
            return 0, -1
        v = 0
        for k in range(p + 1, q):
            c = buf[k]
            if c < 48 or c > 57:
                return 0, -1
            v = v * 10 + (c - 48)
        after = q + 1
    else:
        v, after = read_int(buf, p, end)
        if after < 0:
            return 0, -1
    if v < TS_MIN_MS or v > TS_MAX_MS:
        return 0, -1
    return v * 1_000_000, after


@njit(cache=True)
def _item(buf, p, end, m, msg, lv, n_lv, words, is_okx, line, ts, seq):
    """One data item object at p ('{') -> message row m. Returns (position after, lv, n_lv);
    position -1 when not the plain shape."""
    k_asks, k_bids, k_ts, k_ck = words[6], words[7], words[8], words[9]
    k_seqid, k_prev, k_seq, k_inst = words[10], words[11], words[12], words[4]
    p = ws(buf, p + 1, end)
    seen = 0
    ev = 0
    ck = 0
    final = -1
    prev = -1
    while True:
        ks, ke, p = key_at(buf, p, end)
        if p < 0:
            return -1, lv, n_lv
        if eq(buf, ks, ke, k_asks) and not seen & 1:
            seen |= 1
            p, n_lv, lv = levels_scan(buf, p, end, m, 1, lv, n_lv, 2, NO_WORDS, NO_SIDES)
        elif eq(buf, ks, ke, k_bids) and not seen & 2:
            seen |= 2
            p, n_lv, lv = levels_scan(buf, p, end, m, 0, lv, n_lv, 2, NO_WORDS, NO_SIDES)
        elif eq(buf, ks, ke, k_ts) and not seen & 4:
            seen |= 4
            ev, p = _ms(buf, p, end)
        elif eq(buf, ks, ke, k_ck) and not seen & 8:
            seen |= 8
            ck, p = _sint(buf, p, end)
            if p >= 0 and not (CHECKSUM_MIN <= ck <= CHECKSUM_MAX):
                p = -1
        elif is_okx and eq(buf, ks, ke, k_seqid) and not seen & 16:
            seen |= 16
            final, p = _sint(buf, p, end)
        elif is_okx and eq(buf, ks, ke, k_prev) and not seen & 32:
            seen |= 32
            prev, p = _sint(buf, p, end)
        elif not is_okx and eq(buf, ks, ke, k_seq) and not seen & 16:
            seen |= 16
            final, p = _sint(buf, p, end)
        elif eq(buf, ks, ke, k_inst) and not seen & 64:  # OKX books5 repeats it: ignored
            seen |= 64
            q = str_end(buf, p, end)
            p = -1 if q < 0 else q + 1
        else:
            return -1, lv, n_lv
        if p < 0:
            return -1, lv, n_lv
        p, done = next_key(buf, p, end)
        if p < 0:
            return -1, lv, n_lv
        if done:
            break
    if (seen & 7) != 7:
        return -1, lv, n_lv
    has_ck = (seen & 8) != 0
    if has_ck and ck == 0 and (seen & 16) and ZERO_CHECKSUM_WITH_SEQ_IS_NONE:
        has_ck = False  # 0 with a sequence key: "checksum not computed"
    msg[m, _M_LINE] = line
    msg[m, _M_TS] = ts
    msg[m, _M_SEQ] = seq
    msg[m, _M_EVT] = ev
    msg[m, _M_CK] = ck if has_ck else 0
    msg[m, _M_HASCK] = 1 if has_ck else 0
    msg[m, _M_FINAL] = final
    msg[m, _M_PREV] = prev
    msg[m, _M_SEQKEY] = 1 if (seen & 16) else 0
    return p, lv, n_lv


@njit(cache=True)
def _scan(buf, starts, ends, todo, head, src, exk, kind, words, is_okx, capacity):
    k_arg, k_action, k_data = words[0], words[1], words[2]
    k_channel, k_inst, k_type = words[3], words[4], words[5]
    v_snap, v_update, k_ts = words[13], words[14], words[8]
    n = len(starts)
    ok = np.zeros(n, np.bool_)
    info = np.full((n, 7), -1, np.int64)
    msg = np.empty((1024, _M_COLS), np.int64)
    n_msg = 0
    lv = np.empty((capacity, 6), np.int64)
    n_lv = 0
    for i in range(n):
        if not todo[i]:
            continue
        s, end = starts[i], ends[i]
        p, ts, seq = envelope(buf, s, end, head, src, exk, kind, LBRACE)
        if p < 0:
            continue
        mark_lv, mark_msg = n_lv, n_msg
        seen = 0
        action = 0  # 0 absent, 1 snapshot, 2 update
        bad = False
        while True:
            ks, ke, p = key_at(buf, p, end)
            if p < 0:
                bad = True
                break
            if eq(buf, ks, ke, k_arg) and not seen & 1:
                seen |= 1
                if p >= end or buf[p] != LBRACE:
                    bad = True
                    break
                p = ws(buf, p + 1, end)
                a_seen = 0
                while True:
                    ks2, ke2, p = key_at(buf, p, end)
                    if p < 0:
                        break
                    q = str_end(buf, p, end)
                    if q < 0:
                        p = -1
                        break
                    if eq(buf, ks2, ke2, k_channel) and not a_seen & 1:
                        a_seen |= 1
                        info[i, 0], info[i, 1] = p + 1, q
                    elif eq(buf, ks2, ke2, k_inst) and not a_seen & 2:
                        a_seen |= 2
                        info[i, 2], info[i, 3] = p + 1, q
                    elif eq(buf, ks2, ke2, k_type) and not a_seen & 4:
                        a_seen |= 4
                        info[i, 4], info[i, 5] = p + 1, q
                    else:
                        p = -1
                        break
                    p, done = next_key(buf, q + 1, end)
                    if p < 0 or done:
                        break
                if p < 0 or (a_seen & 3) != 3:
                    bad = True
                    break
            elif eq(buf, ks, ke, k_action) and not seen & 2:
                seen |= 2
                q = str_end(buf, p, end)
                if q < 0:
                    bad = True
                    break
                if eq(buf, p + 1, q, v_snap):
                    action = 1
                elif eq(buf, p + 1, q, v_update):
                    action = 2
                else:
                    bad = True
                    break
                p = q + 1
            elif eq(buf, ks, ke, k_data) and not seen & 4:
                seen |= 4
                if p >= end or buf[p] != LBRACKET:
                    bad = True
                    break
                p = ws(buf, p + 1, end)
                while True:  # one item object (an empty list: the per-line path)
                    if p >= end or buf[p] != LBRACE:
                        bad = True
                        break
                    msg = grow(msg, n_msg)
                    p, lv, n_lv = _item(
                        buf, p, end, n_msg, msg, lv, n_lv, words, is_okx, i, ts, seq
                    )
                    if p < 0:
                        bad = True
                        break
                    n_msg += 1
                    p, done = next_item(buf, p, end)
                    if p < 0:
                        bad = True
                        break
                    if done:
                        break
                if bad:
                    break
            elif not is_okx and eq(buf, ks, ke, k_ts) and not seen & 8:
                seen |= 8  # Bitget v2's push time: ignored by the normalizer
                _v, p = read_int(buf, p, end)
                if p < 0:
                    bad = True
                    break
            else:
                bad = True
                break
            p, done = next_key(buf, p, end)
            if p < 0:
                bad = True
                break
            if done:
                break
        if not bad:
            p = ws(buf, p, end)
            bad = (seen & 5) != 5 or p >= end or buf[p] != 125 or p + 1 != end
        if bad:
            n_lv, n_msg = mark_lv, mark_msg
            continue
        info[i, 6] = action
        ok[i] = True
    return ok, info, msg[:n_msg], lv[:n_lv]


def fast_okx_bitget_books(
    exchange: str, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    """OKX or Bitget book pushes among the `todo` lines -> FastBooks per instrument and the
    mask of the lines taken; every other line is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return ScanResult(none)
    is_okx = exchange == "okx"
    ok, info, msg, lv = _scan(
        buf, starts, ends, todo, SCAN_HEAD, SCAN_SRC, _EX[exchange], SCAN_MSG, _WORDS, is_okx,
        4096 + len(buf) // 256,
    )  # fmt: skip
    if not ok.any():
        return ScanResult(none)
    channels = okx.BOOK_CHANNELS if is_okx else bitget.BOOK_DEPTH
    lines = np.flatnonzero(ok)
    # label of a line: channel NUL instId NUL instType (absent instType: no third part)
    ch = spans(buf, info[lines, 0], info[lines, 1])
    inst = spans(buf, info[lines, 2], info[lines, 3])
    has_type = info[lines, 4] >= 0
    ty = spans(buf, np.where(has_type, info[lines, 4], 0), np.where(has_type, info[lines, 5], 0))
    ty = pc.if_else(pa.array(has_type), pc.binary_join_element_wise("\x00", ty, ""), "")
    key = pc.binary_join_element_wise(ch, inst, "\x00")
    key = pc.binary_join_element_wise(key, ty, "").dictionary_encode()
    codes_line = np.full(n, -1, np.int64)
    codes_line[lines] = key.indices.to_numpy(zero_copy_only=False)
    labels = [text.split("\x00") for text in key.dictionary.to_pylist()]

    def symbol_of(parts: list[str]) -> str | None:
        if parts[0] not in channels:
            return None  # not a book channel: the per-line path
        if is_okx:
            return okx.symbol_of(parts[1])
        raw = venue_symbol(parts[1], "bitget instId")
        return bitget.venue_symbol_to_symbol(raw, parts[2] if len(parts) > 2 else "sp")

    symbols = checked_symbols(labels, symbol_of, (NormalizeError, TypeError))
    msg_line = msg[:, _M_LINE]
    msg_code = codes_line[msg_line]
    msg_ok = np.array([s is not None for s in symbols], dtype=bool)[msg_code]
    # one batch carries one venue symbol and one channel
    msg_ok = one_code_per_symbol(msg_code, msg_ok, symbols)
    line_ok = np.zeros(n, dtype=bool)
    line_ok[msg_line[msg_ok]] = True
    line_ok[msg_line[~msg_ok]] = False
    if not msg_ok.any():
        return ScanResult(none)
    levels = LevelColumns(buf, lv, msg_ok, len(msg))
    action = info[msg_line, 6]
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(np.unique(msg_code[msg_ok]).tolist()):
        channel, raw, sym = labels[c][0], labels[c][1], symbols[c]
        assert sym is not None
        sel = np.flatnonzero(msg_ok & (msg_code == c))
        snapshot = action[sel] != 2  # no action: a whole top-N push (normalizer default)
        if not is_okx and channel != "books":
            snapshot = np.ones(len(sel), dtype=bool)
        out[(exchange, sym)] = FastBook(
            exchange=exchange,
            symbol=sym,
            venue_symbol=raw,
            channel=channel,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, _M_EVT],
            ts_recv=msg[sel, _M_TS],
            seq=msg[sel, _M_SEQ],
            is_snapshot=snapshot,
            final_id=msg[sel, _M_FINAL],
            prev_id=msg[sel, _M_PREV] if is_okx else None,
            checksum=msg[sel, _M_CK],
            has_checksum=msg[sel, _M_HASCK] == 1,
            checksum_kind=CHECKSUM_OKX,
            depth=int(channels[channel]),
            **levels.of(sel),
        )
    return ScanResult(line_ok, books=out)


def _scan_okx(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    return fast_okx_bitget_books("okx", buf, starts, ends, todo)


def _scan_bitget(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    return fast_okx_bitget_books("bitget", buf, starts, ends, todo)


register(Scanner("okx", ("okx",), _scan_okx))
register(Scanner("bitget", ("bitget",), _scan_bitget))
