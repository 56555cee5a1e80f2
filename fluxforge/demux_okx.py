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

from fluxforge.demux import (
    _LB,
    _LC,
    _SIDE_WORDS,
    FastBook,
    _envelope,
    _eq,
    _grow,
    _int,
    _key,
    _levels_scan,
    _next,
    _next_item,
    _safe_symbol,
    _spans,
    _str,
    _ws,
)
from fluxforge.events import CHECKSUM_OKX, NormalizeError

_HEAD = np.frombuffer(b'{"ts":', np.uint8).copy()
_SRC = np.frombuffer(b',"src":"', np.uint8).copy()
_KIND = np.frombuffer(b',"kind":"msg","data":', np.uint8).copy()
_EX = {
    ex: np.frombuffer(f',"ex":"{ex}","seq":'.encode(), np.uint8).copy() for ex in ("okx", "bitget")
}
_WORDS = tuple(
    np.frombuffer(w, np.uint8).copy()
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
_INT32 = 2**31
_MS_MIN = 1_000_000_000_000  # common.TS_MIN_NS / 1e6
_MS_MAX = 4_102_444_800_000  # common.TS_MAX_NS / 1e6


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
        q = _str(buf, p, end)
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
        v, after = _int(buf, p, end)
        if after < 0:
            return 0, -1
    if v < _MS_MIN or v > _MS_MAX:
        return 0, -1
    return v * 1_000_000, after


@njit(cache=True)
def _item(buf, p, end, m, msg, lv, n_lv, words, is_okx, line, ts, seq):
    """One data item object at p ('{') -> message row m. Returns (position after, lv, n_lv);
    position -1 when not the plain shape."""
    k_asks, k_bids, k_ts, k_ck = words[6], words[7], words[8], words[9]
    k_seqid, k_prev, k_seq = words[10], words[11], words[12]
    p = _ws(buf, p + 1, end)
    seen = 0
    ev = 0
    ck = 0
    final = -1
    prev = -1
    while True:
        ks, ke, p = _key(buf, p, end)
        if p < 0:
            return -1, lv, n_lv
        if _eq(buf, ks, ke, k_asks) and not seen & 1:
            seen |= 1
            p, n_lv, lv = _levels_scan(buf, p, end, m, 1, lv, n_lv, 2, _SIDE_WORDS)
        elif _eq(buf, ks, ke, k_bids) and not seen & 2:
            seen |= 2
            p, n_lv, lv = _levels_scan(buf, p, end, m, 0, lv, n_lv, 2, _SIDE_WORDS)
        elif _eq(buf, ks, ke, k_ts) and not seen & 4:
            seen |= 4
            ev, p = _ms(buf, p, end)
        elif _eq(buf, ks, ke, k_ck) and not seen & 8:
            seen |= 8
            ck, p = _sint(buf, p, end)
            if p >= 0 and not (-_INT32 <= ck < _INT32):
                p = -1
        elif is_okx and _eq(buf, ks, ke, k_seqid) and not seen & 16:
            seen |= 16
            final, p = _sint(buf, p, end)
        elif is_okx and _eq(buf, ks, ke, k_prev) and not seen & 32:
            seen |= 32
            prev, p = _sint(buf, p, end)
        elif not is_okx and _eq(buf, ks, ke, k_seq) and not seen & 16:
            seen |= 16
            final, p = _sint(buf, p, end)
        else:
            return -1, lv, n_lv
        if p < 0:
            return -1, lv, n_lv
        p, done = _next(buf, p, end)
        if p < 0:
            return -1, lv, n_lv
        if done:
            break
    if (seen & 7) != 7:
        return -1, lv, n_lv
    has_ck = (seen & 8) != 0
    if has_ck and ck == 0 and (seen & 16):
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
    v_snap, v_update = words[13], words[14]
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
        p, ts, seq = _envelope(buf, s, end, head, src, exk, kind, _LC)
        if p < 0:
            continue
        mark_lv, mark_msg = n_lv, n_msg
        seen = 0
        action = 0  # 0 absent, 1 snapshot, 2 update
        bad = False
        while True:
            ks, ke, p = _key(buf, p, end)
            if p < 0:
                bad = True
                break
            if _eq(buf, ks, ke, k_arg) and not seen & 1:
                seen |= 1
                if p >= end or buf[p] != _LC:
                    bad = True
                    break
                p = _ws(buf, p + 1, end)
                a_seen = 0
                while True:
                    ks2, ke2, p = _key(buf, p, end)
                    if p < 0:
                        break
                    q = _str(buf, p, end)
                    if q < 0:
                        p = -1
                        break
                    if _eq(buf, ks2, ke2, k_channel) and not a_seen & 1:
                        a_seen |= 1
                        info[i, 0], info[i, 1] = p + 1, q
                    elif _eq(buf, ks2, ke2, k_inst) and not a_seen & 2:
                        a_seen |= 2
                        info[i, 2], info[i, 3] = p + 1, q
                    elif _eq(buf, ks2, ke2, k_type) and not a_seen & 4:
                        a_seen |= 4
                        info[i, 4], info[i, 5] = p + 1, q
                    else:
                        p = -1
                        break
                    p, done = _next(buf, q + 1, end)
                    if p < 0 or done:
                        break
                if p < 0 or (a_seen & 3) != 3:
                    bad = True
                    break
            elif _eq(buf, ks, ke, k_action) and not seen & 2:
                seen |= 2
                q = _str(buf, p, end)
                if q < 0:
                    bad = True
                    break
                if _eq(buf, p + 1, q, v_snap):
                    action = 1
                elif _eq(buf, p + 1, q, v_update):
                    action = 2
                else:
                    bad = True
                    break
                p = q + 1
            elif _eq(buf, ks, ke, k_data) and not seen & 4:
                seen |= 4
                if p >= end or buf[p] != _LB:
                    bad = True
                    break
                p = _ws(buf, p + 1, end)
                while True:  # one item object (an empty list: the per-line path)
                    if p >= end or buf[p] != _LC:
                        bad = True
                        break
                    msg = _grow(msg, n_msg)
                    p, lv, n_lv = _item(
                        buf, p, end, n_msg, msg, lv, n_lv, words, is_okx, i, ts, seq
                    )
                    if p < 0:
                        bad = True
                        break
                    n_msg += 1
                    p, done = _next_item(buf, p, end)
                    if p < 0:
                        bad = True
                        break
                    if done:
                        break
                if bad:
                    break
            else:
                bad = True
                break
            p, done = _next(buf, p, end)
            if p < 0:
                bad = True
                break
            if done:
                break
        if not bad:
            p = _ws(buf, p, end)
            bad = (seen & 5) != 5 or p >= end or buf[p] != 125 or p + 1 != end
        if bad:
            n_lv, n_msg = mark_lv, mark_msg
            continue
        info[i, 6] = action
        ok[i] = True
    return ok, info, msg[:n_msg], lv[:n_lv]


def fast_okx_bitget_books(
    exchange: str, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> tuple[dict[tuple[str, str], FastBook], np.ndarray]:
    """OKX or Bitget book pushes among the `todo` lines -> FastBooks per instrument and the
    mask of the lines taken; every other line is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return {}, none
    is_okx = exchange == "okx"
    ok, info, msg, lv = _scan(
        buf, starts, ends, todo, _HEAD, _SRC, _EX[exchange], _KIND, _WORDS, is_okx,
        4096 + len(buf) // 256,
    )  # fmt: skip
    if not ok.any():
        return {}, none
    if is_okx:
        from fluxforge.venues import okx as venue

        channels = venue._BOOK_CHANNELS
    else:
        from fluxforge.venues import bitget as venue  # type: ignore[no-redef]

        channels = venue._BOOK_DEPTH
    lines = np.flatnonzero(ok)
    # label of a line: channel NUL instId NUL instType (absent instType: no third part)
    ch = _spans(buf, info[lines, 0], info[lines, 1])
    inst = _spans(buf, info[lines, 2], info[lines, 3])
    has_type = info[lines, 4] >= 0
    ty = _spans(buf, np.where(has_type, info[lines, 4], 0), np.where(has_type, info[lines, 5], 0))
    ty = pc.if_else(pa.array(has_type), pc.binary_join_element_wise("\x00", ty, ""), "")
    key = pc.binary_join_element_wise(ch, inst, "\x00")
    key = pc.binary_join_element_wise(key, ty, "").dictionary_encode()
    codes_line = np.full(n, -1, np.int64)
    codes_line[lines] = key.indices.to_numpy(zero_copy_only=False)
    labels: list[tuple[str, str, str | None]] = []  # (channel, raw, symbol or None)
    for text in key.dictionary.to_pylist():
        parts = text.split("\x00")
        channel, raw = parts[0], parts[1]
        sym: str | None = None
        if channel in channels:
            try:
                if is_okx:
                    sym = venue._symbol_of(raw)
                else:
                    sym = venue.venue_symbol_to_symbol(
                        _bitget_raw(raw), parts[2] if len(parts) > 2 else "sp"
                    )
            except (NormalizeError, TypeError):
                sym = None
        if sym is not None and not _safe_symbol(sym):
            sym = None
        labels.append((channel, raw, sym))
    by_symbol: dict[str, list[int]] = {}
    for c, (_, _, sym) in enumerate(labels):
        if sym is not None:
            by_symbol.setdefault(sym, []).append(c)
    good = np.array([lab[2] is not None for lab in labels], dtype=bool)
    for cs in by_symbol.values():
        if len(cs) > 1:  # one batch carries one venue symbol and one channel
            good[cs] = False
    line_ok = ok.copy()
    line_ok[lines] = good[codes_line[lines]]
    msg_line = msg[:, _M_LINE]
    msg_ok = line_ok[msg_line]
    if not msg_ok.any():
        return {}, none

    row_of, side = lv[:, 0], lv[:, 1].astype(np.uint8)
    order = np.lexsort((np.arange(len(row_of)), side, row_of))
    order = order[msg_ok[row_of[order]]]
    row_sorted = row_of[order]
    side_sorted = side[order]
    price_sorted = _spans(buf, lv[order, 2], lv[order, 3], large=True)
    size_sorted = _spans(buf, lv[order, 4], lv[order, 5], large=True)
    counts = np.bincount(row_sorted, minlength=len(msg))
    starts_lv = np.concatenate(([0], np.cumsum(counts)[:-1]))
    msg_code = codes_line[msg_line]
    action = info[msg_line, 6]
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(np.unique(msg_code[msg_ok]).tolist()):
        channel, raw, sym = labels[c]
        assert sym is not None
        sel = np.flatnonzero(msg_ok & (msg_code == c))
        lens = counts[sel]
        offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        lvl_idx = np.repeat(starts_lv[sel] - offsets[:-1], lens) + np.arange(offsets[-1])
        take = pa.array(lvl_idx, pa.int64())
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
            level_offsets=offsets,
            side=side_sorted[lvl_idx],
            price=price_sorted.take(take),
            size=size_sorted.take(take),
            final_id=msg[sel, _M_FINAL],
            prev_id=msg[sel, _M_PREV] if is_okx else None,
            checksum=msg[sel, _M_CK],
            has_checksum=msg[sel, _M_HASCK] == 1,
            checksum_kind=CHECKSUM_OKX,
            depth=int(channels[channel]),
        )
    return out, line_ok


def _bitget_raw(raw: str) -> str:
    from fluxforge.venues.common import venue_symbol

    return venue_symbol(raw, "bitget instId")
