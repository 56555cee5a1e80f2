"""Columnar fast path for Kraken v1 book lines (``book-N`` snapshots and updates).

Kraken's book updates are the most numerous lines of the five-venue mix after Coinbase's,
and small: through the per-line path each costs an orjson parse, an Envelope, the
normalizer and a BookMessage (~20 us a line). Here one numba pass over the segment bytes
checks them against exactly the rules of ``fluxforge.venues.kraken._book`` and records byte
spans, as the Coinbase scanner in ``fluxforge.demux`` does. Accepted shape (anything else,
including escapes, JSON numbers for prices/sizes/times, unknown or duplicate keys, is left to
the per-line path, which gives it the normalizer's own treatment)::

    {"ts":N,"src":"..","ex":"kraken","seq":N,"kind":"msg","data":
     [int, {"as"|"a":[levels], "bs"|"b":[levels], "c":"digits"}, ..., "book-D", "PAIR"]}
    level = ["price", "size"(, "seconds"(, "string"...))]

Semantics kept: bids/asks in payload order; ts_event = the latest level time (else the
receive time); the last "c" is the checksum (unsigned 32-bit); an update needs one; a message
with no levels must be a snapshot; depth from the channel name.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
from numba import njit

from fluxforge.demux.bytescan import (
    COMMA,
    LBRACE,
    LBRACKET,
    RBRACE,
    RBRACKET,
    add_level,
    envelope,
    grow,
    key_at,
    lit,
    next_item,
    next_key,
    read_int,
    spans,
    str_end,
    ws,
)
from fluxforge.demux.fastbook import FastBook, LevelColumns, checked_symbols, one_code_per_symbol
from fluxforge.demux.registry import Scanner, ScanResult, register
from fluxforge.events import CHECKSUM_KRAKEN, NormalizeError
from fluxforge.venues import kraken
from fluxforge.wire.decimal import plain_decimal
from fluxforge.wire.envelope import SCAN_HEAD, SCAN_MSG, SCAN_SRC, as_bytes, scan_ex
from fluxforge.wire.times import TS_MAX_S, plausible_ns

_EX = scan_ex("kraken")
_BOOK = as_bytes(kraken.BOOK_CHANNEL_PREFIX.encode())
_MSG_COLS = 11  # line, ts, seq, snapshot, ts_event, pair s/e, channel s/e, checksum, depth


@njit(cache=True)
def _seconds_ns(buf, s, e):
    """common.seconds_to_ns ("1618678133.136361" -> ns, fraction cut at 9 digits) with its
    plausibility range, or -1."""
    whole = 0
    k = s
    while k < e and 48 <= buf[k] <= 57:
        if k - s >= 10:
            return -1
        whole = whole * 10 + (buf[k] - 48)
        k += 1
    if k == s:
        return -1
    frac = 0
    n_frac = 0
    if k < e:
        if buf[k] != 46:
            return -1
        k += 1
        if k == e:
            return -1
        while k < e:
            c = buf[k]
            if c < 48 or c > 57:
                return -1
            if n_frac < 9:
                frac = frac * 10 + (c - 48)
                n_frac += 1
            k += 1
    for _ in range(9 - n_frac):
        frac *= 10
    if whole > TS_MAX_S:  # (and no int64 overflow below)
        return -1
    ns = whole * 1_000_000_000 + frac
    return ns if plausible_ns(ns) else -1


@njit(cache=True)
def _levels(buf, p, end, row, side, lv, n_lv):
    """[[px, sz(, time(, str...))], ...] at p -> (position after, n_lv, lv, latest time ns);
    position -1 when anything is not the plain shape."""
    latest = 0
    if p >= end or buf[p] != LBRACKET:
        return -1, n_lv, lv, 0
    p = ws(buf, p + 1, end)
    if p < end and buf[p] == RBRACKET:
        return p + 1, n_lv, lv, 0
    while True:
        if p >= end or buf[p] != LBRACKET:
            return -1, n_lv, lv, 0
        p = ws(buf, p + 1, end)
        k = 0
        px0 = px1 = sz0 = sz1 = 0
        while True:
            q = str_end(buf, p, end)
            if q < 0:
                return -1, n_lv, lv, 0
            if k == 0:
                px0, px1 = p + 1, q
            elif k == 1:
                sz0, sz1 = p + 1, q
            elif k == 2:
                t = _seconds_ns(buf, p + 1, q)
                if t < 0:
                    return -1, n_lv, lv, 0
                if t > latest:
                    latest = t
            k += 1
            p, done = next_item(buf, q + 1, end)
            if p < 0:
                return -1, n_lv, lv, 0
            if done:
                break
        if k < 2:
            return -1, n_lv, lv, 0
        if not plain_decimal(buf, px0, px1, True) or not plain_decimal(buf, sz0, sz1, False):
            return -1, n_lv, lv, 0
        lv, n_lv = add_level(lv, n_lv, row, side, px0, px1, sz0, sz1)
        p, done = next_item(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, 0
        if done:
            return p, n_lv, lv, latest


@njit(cache=True)
def _payload(buf, p, end, row, lv, n_lv):
    """One payload object at p ('{'). Returns (position after, n_lv, lv, snapshot, checksum
    (-1 none), latest time); position -1 when not the plain shape."""
    p = ws(buf, p + 1, end)
    snap = False
    ck = -1
    latest = 0
    if p < end and buf[p] == RBRACE:
        return p + 1, n_lv, lv, snap, ck, latest
    seen = 0
    while True:
        ks, ke, p = key_at(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, snap, ck, latest
        klen = ke - ks
        c0 = buf[ks]
        bit = 0
        side = -1
        if klen == 1 and c0 == 97:  # a
            bit, side = 1, 1
        elif klen == 1 and c0 == 98:  # b
            bit, side = 2, 0
        elif klen == 2 and c0 == 97 and buf[ks + 1] == 115:  # as
            bit, side = 4, 1
        elif klen == 2 and c0 == 98 and buf[ks + 1] == 115:  # bs
            bit, side = 8, 0
        elif klen == 1 and c0 == 99:  # c
            bit = 16
        if bit == 0 or seen & bit:
            return -1, n_lv, lv, snap, ck, latest
        seen |= bit
        if bit == 16:
            q = str_end(buf, p, end)
            if q < 0 or q == p + 1 or q - p - 1 > 10:
                return -1, n_lv, lv, snap, ck, latest
            v = 0
            for k in range(p + 1, q):
                c = buf[k]
                if c < 48 or c > 57:
                    return -1, n_lv, lv, snap, ck, latest
                v = v * 10 + (c - 48)
            if v >= 4294967296:
                return -1, n_lv, lv, snap, ck, latest
            ck = v
            p = q + 1
        else:
            p, n_lv, lv, t = _levels(buf, p, end, row, side, lv, n_lv)
            if p < 0:
                return -1, n_lv, lv, snap, ck, latest
            if t > latest:
                latest = t
            if bit >= 4:
                snap = True
        p, done = next_key(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, snap, ck, latest
        if done:
            break
    if (seen & 5) == 5 or (seen & 10) == 10:  # "as" and "a" (or "bs" and "b") together
        return -1, n_lv, lv, snap, ck, latest
    return p, n_lv, lv, snap, ck, latest


@njit(cache=True)
def _scan(buf, starts, ends, todo, head, src, exk, kind, book, capacity):
    n = len(starts)
    ok = np.zeros(n, np.bool_)
    msg = np.empty((1024, _MSG_COLS), np.int64)
    n_msg = 0
    lv = np.empty((capacity, 6), np.int64)
    n_lv = 0
    for i in range(n):
        if not todo[i]:
            continue
        s, end = starts[i], ends[i]
        p, ts, seq = envelope(buf, s, end, head, src, exk, kind, LBRACKET)
        if p < 0:
            continue
        _cid, p = read_int(buf, p, end)  # channel id: ignored by the normalizer
        if p < 0:
            continue
        p = ws(buf, p, end)
        if p >= end or buf[p] != COMMA:
            continue
        p = ws(buf, p + 1, end)
        mark = n_lv
        snap = False
        ck = -1
        latest = 0
        n_pay = 0
        bad = False
        while p < end and buf[p] == LBRACE:
            n_pay += 1
            p, n_lv, lv, sn, c, t = _payload(buf, p, end, n_msg, lv, n_lv)
            if p < 0:
                bad = True
                break
            snap = snap or sn
            if c >= 0:
                ck = c
            if t > latest:
                latest = t
            p = ws(buf, p, end)
            if p >= end or buf[p] != COMMA:
                bad = True
                break
            p = ws(buf, p + 1, end)
        if bad or n_pay == 0:
            n_lv = mark
            continue
        # "book-D", "PAIR"]}
        q = str_end(buf, p, end)
        if q < 0 or lit(buf, p + 1, q, book) < 0:
            n_lv = mark
            continue
        d0 = p + 1 + len(book)
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
        ch_s, ch_e = p + 1, q
        p = ws(buf, q + 1, end)
        if p >= end or buf[p] != COMMA:
            n_lv = mark
            continue
        p = ws(buf, p + 1, end)
        q = str_end(buf, p, end)
        if q < 0:
            n_lv = mark
            continue
        pair_s, pair_e = p + 1, q
        p = ws(buf, q + 1, end)
        if p >= end or buf[p] != RBRACKET:
            n_lv = mark
            continue
        p = ws(buf, p + 1, end)
        if p >= end or buf[p] != RBRACE or p + 1 != end:
            n_lv = mark
            continue
        if (not snap and ck < 0) or (n_lv == mark and not snap):
            n_lv = mark  # the normalizer refuses these: it gives the reason
            continue
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
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, todo: np.ndarray
) -> ScanResult:
    """Kraken book lines among the `todo` lines -> FastBooks per instrument and the mask of
    the lines taken; every other line is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return ScanResult(none)
    ok, msg, lv = _scan(
        buf, starts, ends, todo, SCAN_HEAD, SCAN_SRC, _EX, SCAN_MSG, _BOOK, 4096 + len(buf) // 512
    )
    if not ok.any():
        return ScanResult(none)
    msg_line = msg[:, 0]
    # instrument = one (pair, channel): one batch carries one venue symbol and one channel
    pair = spans(buf, msg[:, 5], msg[:, 6])
    chan = spans(buf, msg[:, 7], msg[:, 8])
    key = pc.binary_join_element_wise(pair, chan, "\x00").dictionary_encode()
    codes = key.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    labels = [text.split("\x00", 1) for text in key.dictionary.to_pylist()]
    symbols = checked_symbols(
        [raw for raw, _ in labels], kraken.symbol_of, (NormalizeError, TypeError)
    )
    msg_ok = np.array([s is not None for s in symbols] + [False], dtype=bool)[codes]
    # two pairs or channels for one symbol: leave them to the per-line path
    msg_ok = one_code_per_symbol(codes, msg_ok, symbols)
    ok[msg_line[~msg_ok]] = False
    if not ok.any():
        return ScanResult(none)
    levels = LevelColumns(buf, lv, msg_ok, len(msg))
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(np.unique(codes[msg_ok]).tolist()):
        (raw, channel), sym = labels[c], symbols[c]
        assert sym is not None
        sel = np.flatnonzero(msg_ok & (codes == c))
        ck = msg[sel, 9]
        has_ck = ck >= 0
        out[("kraken", sym)] = FastBook(
            exchange="kraken",
            symbol=sym,
            venue_symbol=raw,
            channel=channel,
            line=msg_line[sel] + 1,
            ts_event=msg[sel, 4],
            ts_recv=msg[sel, 1],
            seq=msg[sel, 2],
            is_snapshot=msg[sel, 3] == 1,
            final_id=np.full(len(sel), -1, np.int64),
            checksum=np.where(has_ck, ck, 0),
            has_checksum=has_ck,
            checksum_kind=CHECKSUM_KRAKEN,
            depth=int(msg[sel[0], 10]),
            **levels.of(sel),
        )
    return ScanResult(ok, books=out)


SCANNER = register(Scanner("kraken", ("kraken",), fast_kraken_books))
