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
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from fluxforge.demux import (
    _COMMA,
    _LB,
    _LC,
    _RB,
    _RC,
    FastBook,
    _decimal,
    _envelope,
    _grow,
    _int,
    _key,
    _lit,
    _next,
    _next_item,
    _safe_symbol,
    _spans,
    _str,
    _ws,
)
from fluxforge.events import CHECKSUM_KRAKEN, NormalizeError

_HEAD = np.frombuffer(b'{"ts":', np.uint8).copy()
_SRC = np.frombuffer(b',"src":"', np.uint8).copy()
_EX = np.frombuffer(b',"ex":"kraken","seq":', np.uint8).copy()
_KIND = np.frombuffer(b',"kind":"msg","data":', np.uint8).copy()
_BOOK = np.frombuffer(b"book-", np.uint8).copy()
_TS_MIN_S = 1_000_000_000  # common.TS_MIN_NS / 1e9
_TS_MAX_S = 4_102_444_800  # common.TS_MAX_NS / 1e9
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
    if whole < _TS_MIN_S or whole > _TS_MAX_S:
        return -1
    ns = whole * 1_000_000_000 + frac
    if ns > _TS_MAX_S * 1_000_000_000:
        return -1
    return ns


@njit(cache=True)
def _levels(buf, p, end, row, side, lv, n_lv):
    """[[px, sz(, time(, str...))], ...] at p -> (position after, n_lv, lv, latest time ns);
    position -1 when anything is not the plain shape."""
    latest = 0
    if p >= end or buf[p] != _LB:
        return -1, n_lv, lv, 0
    p = _ws(buf, p + 1, end)
    if p < end and buf[p] == _RB:
        return p + 1, n_lv, lv, 0
    while True:
        if p >= end or buf[p] != _LB:
            return -1, n_lv, lv, 0
        p = _ws(buf, p + 1, end)
        k = 0
        px0 = px1 = sz0 = sz1 = 0
        while True:
            q = _str(buf, p, end)
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
            p, done = _next_item(buf, q + 1, end)
            if p < 0:
                return -1, n_lv, lv, 0
            if done:
                break
        if k < 2:
            return -1, n_lv, lv, 0
        if not _decimal(buf, px0, px1, True) or not _decimal(buf, sz0, sz1, False):
            return -1, n_lv, lv, 0
        lv = _grow(lv, n_lv)
        lv[n_lv, 0] = row
        lv[n_lv, 1] = side
        lv[n_lv, 2] = px0
        lv[n_lv, 3] = px1
        lv[n_lv, 4] = sz0
        lv[n_lv, 5] = sz1
        n_lv += 1
        p, done = _next_item(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, 0
        if done:
            return p, n_lv, lv, latest


@njit(cache=True)
def _payload(buf, p, end, row, lv, n_lv):
    """One payload object at p ('{'). Returns (position after, n_lv, lv, snapshot, checksum
    (-1 none), latest time); position -1 when not the plain shape."""
    p = _ws(buf, p + 1, end)
    snap = False
    ck = -1
    latest = 0
    if p < end and buf[p] == _RC:
        return p + 1, n_lv, lv, snap, ck, latest
    seen = 0
    while True:
        ks, ke, p = _key(buf, p, end)
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
            q = _str(buf, p, end)
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
        p, done = _next(buf, p, end)
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
        p, ts, seq = _envelope(buf, s, end, head, src, exk, kind, _LB)
        if p < 0:
            continue
        _cid, p = _int(buf, p, end)  # channel id: ignored by the normalizer
        if p < 0:
            continue
        p = _ws(buf, p, end)
        if p >= end or buf[p] != _COMMA:
            continue
        p = _ws(buf, p + 1, end)
        mark = n_lv
        snap = False
        ck = -1
        latest = 0
        n_pay = 0
        bad = False
        while p < end and buf[p] == _LC:
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
            p = _ws(buf, p, end)
            if p >= end or buf[p] != _COMMA:
                bad = True
                break
            p = _ws(buf, p + 1, end)
        if bad or n_pay == 0:
            n_lv = mark
            continue
        # "book-D", "PAIR"]}
        q = _str(buf, p, end)
        if q < 0 or _lit(buf, p + 1, q, book) < 0:
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
        p = _ws(buf, q + 1, end)
        if p >= end or buf[p] != _COMMA:
            n_lv = mark
            continue
        p = _ws(buf, p + 1, end)
        q = _str(buf, p, end)
        if q < 0:
            n_lv = mark
            continue
        pair_s, pair_e = p + 1, q
        p = _ws(buf, q + 1, end)
        if p >= end or buf[p] != _RB:
            n_lv = mark
            continue
        p = _ws(buf, p + 1, end)
        if p >= end or buf[p] != _RC or p + 1 != end:
            n_lv = mark
            continue
        if (not snap and ck < 0) or (n_lv == mark and not snap):
            n_lv = mark  # the normalizer refuses these: it gives the reason
            continue
        msg = _grow(msg, n_msg)
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
) -> tuple[dict[tuple[str, str], FastBook], np.ndarray]:
    """Kraken book lines among the `todo` lines -> FastBooks per instrument and the mask of
    the lines taken; every other line is left to the per-line path."""
    n = len(starts)
    none = np.zeros(n, dtype=bool)
    if n == 0 or not todo.any():
        return {}, none
    ok, msg, lv = _scan(
        buf, starts, ends, todo, _HEAD, _SRC, _EX, _KIND, _BOOK, 4096 + len(buf) // 512
    )
    if not ok.any():
        return {}, none
    from fluxforge.venues import kraken

    msg_line = msg[:, 0]
    # instrument = one (pair, channel): one batch carries one venue symbol and one channel
    pair = _spans(buf, msg[:, 5], msg[:, 6])
    chan = _spans(buf, msg[:, 7], msg[:, 8])
    key = pc.binary_join_element_wise(pair, chan, "\x00").dictionary_encode()
    codes = key.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    labels: list[tuple[str, str, str | None]] = []
    for text in key.dictionary.to_pylist():
        raw, channel = text.split("\x00", 1)
        try:
            sym: str | None = kraken._symbol_of(raw)
        except (NormalizeError, TypeError):
            sym = None
        if sym is not None and not _safe_symbol(sym):
            sym = None
        labels.append((raw, channel, sym))
    by_symbol: dict[str, list[int]] = {}
    for c, (_, _, sym) in enumerate(labels):
        if sym is not None:
            by_symbol.setdefault(sym, []).append(c)
    good = np.array([lab[2] is not None for lab in labels] + [False], dtype=bool)
    for cs in by_symbol.values():
        if len(cs) > 1:  # two pairs or channels for one symbol: leave them to the objects
            good[cs] = False
    msg_ok = good[codes]
    ok[msg_line[~msg_ok]] = False
    if not ok.any():
        return {}, none

    row_of, side = lv[:, 0], lv[:, 1].astype(np.uint8)
    # per message: bids then asks, each side in wire order (the normalizer's order)
    order = np.lexsort((np.arange(len(row_of)), side, row_of))
    order = order[msg_ok[row_of[order]]]
    row_sorted = row_of[order]
    side_sorted = side[order]
    price_sorted = _spans(buf, lv[order, 2], lv[order, 3], large=True)
    size_sorted = _spans(buf, lv[order, 4], lv[order, 5], large=True)
    counts = np.bincount(row_sorted, minlength=len(msg))
    starts_lv = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out: dict[tuple[str, str], FastBook] = {}
    for c in sorted(np.unique(codes[msg_ok]).tolist()):
        raw, channel, sym = labels[c]
        assert sym is not None
        sel = np.flatnonzero(msg_ok & (codes == c))
        lens = counts[sel]
        offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        lvl_idx = np.repeat(starts_lv[sel] - offsets[:-1], lens) + np.arange(offsets[-1])
        take = pa.array(lvl_idx, pa.int64())
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
            level_offsets=offsets,
            side=side_sorted[lvl_idx],
            price=price_sorted.take(take),
            size=size_sorted.take(take),
            final_id=np.full(len(sel), -1, np.int64),
            checksum=np.where(has_ck, ck, 0),
            has_checksum=has_ck,
            checksum_kind=CHECKSUM_KRAKEN,
            depth=int(msg[sel[0], 10]),
        )
    return out, ok
