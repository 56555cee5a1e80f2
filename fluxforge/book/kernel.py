"""numba kernels of the book engine: one call applies a whole batch of messages.

Book layout (per side, rows of 2-D arrays, side 0 = bids, 1 = asks): ``key`` ascending with
the best level LAST (bids key = price, asks key = -price), live levels in ``[lo, hi)``. Most
updates touch the top of the book, so insertions and deletions shift the short side of the
array, and depth truncation (Kraken) is ``lo = hi - depth``: no copy at all.

Every level also keeps the string id ``pid`` of the ORIGINAL wire text of its price; the size
string id follows from it (``_size_id``), so shifts move two arrays, not three. Ids ``< n0``
live in the book arena (strings that survived earlier batches, price then size, so size id =
price id + 1), ids ``>= n0`` in the batch arena (``id - n0``: prices ``0..nl``, sizes
``nl..2nl``, so size id = price id + nl). Checksums (Kraken, OKX,
Bitget) are CRC32 over those bytes, computed here; snapshot rows and tops gather the same
bytes, so no value ever goes through a float on its way out.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from fluxforge.book.drift import CAUSE as DRIFT_CAUSE
from fluxforge.book.drift import below, compare_side
from fluxforge.wire.decimal import times_pow10

# message flags
F_SNAPSHOT = 1
F_REST = 2
# checksum kinds
CK_NONE = 0
CK_KRAKEN = 1
CK_OKX = 2
# per checksum kind: the levels of each side it covers (Kraken 10, OKX/Bitget 25)
CK_TOP = np.array([0, 10, 25], dtype=np.int64)
# update-id chains
CH_NONE = 0
CH_BINANCE_FUTURES = 1
CH_BINANCE_SPOT = 2
# snapshot reasons (index into REASONS)
R_SOD = 0
R_PERIODIC = 1
R_RESYNC = 2
R_RECONNECT = 3
REASONS = ("sod", "periodic", "resync", "reconnect")
# gap causes found by the kernel (index into CAUSES)
G_CHAIN_BREAK = 0
G_CHECKSUM = 1
G_DRIFT = 2  # a compared venue snapshot differed from the book (``expected``: its drift row)
CAUSES = ("chain_break", "checksum_mismatch", DRIFT_CAUSE)

# scalar state (int64 vector ``st``)
S_EPOCH = 0
S_VALID = 1
S_NEED_BRIDGE = 2
S_SNAP_ID = 3  # lastUpdateId of the (REST) snapshot being bridged
S_LAST_ID = 4  # final id of the last applied chained message
S_LAST_GOOD_TS = 5  # ts_recv of the last applied message (-1 = none)
S_LAST_DATE = 6  # UTC day number of the last book row (-1 = none)
S_LAST_BUCKET = 7  # ts_event // interval of the last injected snapshot
S_PENDING = 8  # reason of the snapshot after the next rebuild (resync | reconnect)
S_LO0 = 9
S_HI0 = 10
S_LO1 = 11
S_HI1 = 12
S_EVICTED = 13  # buffered updates evicted since the book last became invalid (gap detail)
# 1 when an update came after the last snapshot: an unchained snapshot is compared with the
# book only then (the engine keeps it in the checkpoint)
S_UPDATED = 14
N_STATE = 15
# semantic part of the state written as the checkpoint's scalars (positions lo/hi are layout;
# S_EVICTED is written by the engine next to the buffer it belongs to)
N_STATE_SERIAL = 9

# counters (int64 vector ``stats``), names in the engine's BookStats order
T_UPDATES = 0
T_VERIFIED = 1
T_MISMATCH = 2
T_LINKS = 3
T_BREAKS = 4
T_SNAPSHOTS = 5
T_GAPS = 6
T_DROPPED = 7
T_CROSSED = 8
T_BRIDGES = 9
T_BUFFERED = 10
T_REPLAYED = 11
T_EVICTED = 12
T_STALE = 13  # REST snapshots skipped: the valid book was already at or past their id
T_DRIFT_CHECKS = 14  # venue snapshots compared with the book of a valid epoch
T_DRIFTS = 15  # of those, the ones that differed
N_STATS = 16

DAY_NS = 86_400_000_000_000
_U1 = np.uint64(1)  # unsigned one, for the level shifts' unsigned indices
_DOT = 46
_ZERO = 48
_COLON = 58


def crc_table() -> np.ndarray:
    """CRC-32 (IEEE) tables for slicing by 8: row 0 is the byte-at-a-time table, row k
    advances a byte's contribution by k more bytes."""
    table = np.empty((8, 256), dtype=np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[0, i] = c
    for i in range(256):
        for k in range(1, 8):
            table[k, i] = (table[k - 1, i] >> 8) ^ table[0, table[k - 1, i] & 0xFF]
    return table


def new_state() -> np.ndarray:
    st = np.zeros(N_STATE, dtype=np.int64)
    st[S_LAST_GOOD_TS] = -1
    st[S_LAST_DATE] = -1
    st[S_LAST_BUCKET] = np.iinfo(np.int64).min
    st[S_PENDING] = R_RESYNC
    return st


@njit(cache=True, inline="always")
def _size_id(p, n0, nl):
    return p + 1 if p < n0 else p + nl


@njit(cache=True)
def crc32(buf, n, table):
    """CRC-32 of ``buf[:n]``, eight bytes per step (slicing by 8: about 1 ns a byte here,
    where a byte at a time over the pooled strings cost 4-5)."""
    crc = np.int64(0xFFFFFFFF)
    i = 0
    while i + 8 <= n:
        one = crc ^ (
            np.int64(buf[i])
            | (np.int64(buf[i + 1]) << 8)
            | (np.int64(buf[i + 2]) << 16)
            | (np.int64(buf[i + 3]) << 24)
        )
        crc = (
            table[7, one & 0xFF]
            ^ table[6, (one >> 8) & 0xFF]
            ^ table[5, (one >> 16) & 0xFF]
            ^ table[4, (one >> 24) & 0xFF]
            ^ table[3, buf[i + 4]]
            ^ table[2, buf[i + 5]]
            ^ table[1, buf[i + 6]]
            ^ table[0, buf[i + 7]]
        )
        i += 8
    while i < n:
        crc = table[0, (crc ^ buf[i]) & 0xFF] ^ (crc >> 8)
        i += 1
    return crc ^ 0xFFFFFFFF


@njit(cache=True)
def _checksum(kind, pid, st, n0, nl, a0, o0, a1, o1, table, buf):
    """Venue CRC32 of the current book from the pooled wire strings: the checksummed text is
    laid out in `buf` (a scratch buffer the caller sizes for the longest text,
    ``_checksum_room``), then hashed in one pass.

    Kraken: top 10 asks then top 10 bids, price then size, '.' dropped then leading '0's,
    unsigned. OKX/Bitget: top 25 interleaved bid, ask as "px:sz" joined by ':', signed."""
    kraken = kind == CK_KRAKEN
    top = CK_TOP[kind]
    ids = np.empty(4 * top, dtype=np.int64)
    k = 0
    for it in range(2 * top):
        if kraken:
            s = 1 if it < top else 0
            rank = it % top
        else:
            s = it & 1
            rank = it >> 1
        j = st[S_HI0 + 2 * s] - 1 - rank
        if j < st[S_LO0 + 2 * s]:
            continue
        p = pid[s, j]
        ids[k] = p
        ids[k + 1] = _size_id(p, n0, nl)
        k += 2
    n = 0
    for r in range(k):
        ident = ids[r]
        if not kraken and r > 0:
            buf[n] = _COLON
            n += 1
        # each arena copied by a loop of its own: an array chosen in a branch, or passed to
        # a helper, costs numba a reference-count pair per string, more than the copy
        un = np.uint64(n)
        if ident < n0:
            b0, b1 = np.uint64(o0[ident]), np.uint64(o0[ident + 1])
            if kraken:
                while b0 < b1 and (a0[b0] == _ZERO or a0[b0] == _DOT):
                    b0 += _U1
                while b0 < b1:
                    c = a0[b0]
                    buf[un] = c
                    un += np.uint64(c != _DOT)
                    b0 += _U1
            else:
                while b0 < b1:
                    buf[un] = a0[b0]
                    un += _U1
                    b0 += _U1
        else:
            b0, b1 = np.uint64(o1[ident - n0]), np.uint64(o1[ident - n0 + 1])
            if kraken:
                while b0 < b1 and (a1[b0] == _ZERO or a1[b0] == _DOT):
                    b0 += _U1
                while b0 < b1:
                    c = a1[b0]
                    buf[un] = c
                    un += np.uint64(c != _DOT)
                    b0 += _U1
            else:
                while b0 < b1:
                    buf[un] = a1[b0]
                    un += _U1
                    b0 += _U1
        n = np.int64(un)
    v = crc32(buf, n, table)
    if not kraken and v >= 2147483648:
        v -= 4294967296
    return v


@njit(cache=True)
def _checksum_room(m_ckkind, n0, o0, o1):
    """Bytes of the longest checksummed text a batch can lay out: every level of the widest
    checksummed top, price and size each at most the longest string of either arena plus a
    separator (0 when no message carries a checksum)."""
    top = 0
    for m in range(m_ckkind.shape[0]):
        top = max(top, CK_TOP[m_ckkind[m]])
    if top == 0:
        return 0
    longest = 0
    for i in range(n0):
        longest = max(longest, o0[i + 1] - o0[i])
    for i in range(o1.shape[0] - 1):
        longest = max(longest, o1[i + 1] - o1[i])
    return 4 * top * (longest + 1)


@njit(cache=True)
def _relayout(key, pid, st, cap):
    """Copy both sides into arrays of capacity ``cap``, each side centred."""
    nkey = np.empty((2, cap), dtype=np.float64)
    npid = np.empty((2, cap), dtype=np.int64)
    for s in range(2):
        lo = st[S_LO0 + 2 * s]
        hi = st[S_HI0 + 2 * s]
        n = hi - lo
        start = (cap - n) // 2
        for j in range(n):
            nkey[s, start + j] = key[s, lo + j]
            npid[s, start + j] = pid[s, lo + j]
        st[S_LO0 + 2 * s] = start
        st[S_HI0 + 2 * s] = start + n
    return nkey, npid


@njit(cache=True)
def _recentre(key, pid, st, s):
    cap = key.shape[1]
    lo = st[S_LO0 + 2 * s]
    hi = st[S_HI0 + 2 * s]
    n = hi - lo
    start = (cap - n) // 2
    if start < lo:
        for j in range(n):
            key[s, start + j] = key[s, lo + j]
            pid[s, start + j] = pid[s, lo + j]
    elif start > lo:
        for j in range(n - 1, -1, -1):
            key[s, start + j] = key[s, lo + j]
            pid[s, start + j] = pid[s, lo + j]
    st[S_LO0 + 2 * s] = start
    st[S_HI0 + 2 * s] = start + n


@njit(cache=True)
def _grow_rows(a, rows):
    out = np.empty((rows, a.shape[1]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True)
def _gap_row(gap_meta, n_gap, m, cause, st, expected, got, ts_to, evicted):
    """Append one gap-ledger row (message, cause, epoch, last good time, expected, got, time,
    evicted buffer entries; the kernel keeps a free row); returns the rows."""
    gap_meta[n_gap, 0] = m
    gap_meta[n_gap, 1] = cause
    gap_meta[n_gap, 2] = st[S_EPOCH]
    gap_meta[n_gap, 3] = st[S_LAST_GOOD_TS]
    gap_meta[n_gap, 4] = expected
    gap_meta[n_gap, 5] = got
    gap_meta[n_gap, 6] = ts_to
    gap_meta[n_gap, 7] = evicted
    return n_gap + 1


@njit(cache=True)
def _push(ring, head, count, buf_max, m, now, window, ts_recv, st, stats):
    """Append message ``m`` to the pre-snapshot buffer (a ring of message indices, oldest
    first). Entries received more than ``window`` ns before ``now`` (0 = no age limit) and,
    when full, the oldest entry are evicted and counted. Returns the new (head, count)."""
    cap = ring.shape[0]
    if window > 0:
        while count > 0 and ts_recv[ring[head]] < now - window:
            head = (head + 1) % cap
            count -= 1
            stats[T_EVICTED] += 1
            stats[T_DROPPED] += 1
            st[S_EVICTED] += 1
    if count == buf_max:
        head = (head + 1) % cap
        count -= 1
        stats[T_EVICTED] += 1
        stats[T_DROPPED] += 1
        st[S_EVICTED] += 1
    ring[(head + count) % cap] = m
    stats[T_BUFFERED] += 1
    return head, count + 1


@njit(cache=True)
def _boundaries(st, interval):
    """(start, end) of the UTC day of the last snapshot row and the first ts_event of the next
    periodic bucket: outside them a snapshot row may be due."""
    if st[S_LAST_DATE] >= 0:
        day_start = st[S_LAST_DATE] * DAY_NS
        day_end = day_start + DAY_NS
    else:
        day_start = np.int64(0)
        day_end = np.int64(0)
    if st[S_LAST_BUCKET] == np.iinfo(np.int64).min:
        next_bucket = np.iinfo(np.int64).min
    else:
        next_bucket = (st[S_LAST_BUCKET] + 1) * interval
    return day_start, day_end, next_bucket


@njit(cache=True)
def _inject(
    st, pid, m, c, rebuilt_reason, m_ts_recv, m_ts_event, interval, depth, n0, n_lv,
    snap_meta, snap_ids, n_snap, stats,
):  # fmt: skip
    """One snapshot row after message ``m`` (book state), at the clock of message ``c``, if
    one is due: ``sod`` on a new UTC date of the receive time, else the rebuild's reason
    (``rebuilt_reason`` >= 0), else ``periodic`` when ``ts_event // interval`` moved on.
    Called only when the kernel's cached boundaries say one may be due (rarely, so it is a
    call: the code in the message loop made the whole loop slower). Returns the rows (the
    kernel keeps a free row)."""
    tr = m_ts_recv[c]
    te = m_ts_event[m]
    day = tr // DAY_NS
    if day != st[S_LAST_DATE]:
        reason = R_SOD
        st[S_LAST_DATE] = day
    elif rebuilt_reason >= 0:
        reason = rebuilt_reason
    elif te // interval > st[S_LAST_BUCKET]:
        reason = R_PERIODIC
    else:
        return n_snap
    st[S_LAST_BUCKET] = te // interval
    stats[T_SNAPSHOTS] += 1
    lo0, hi0, lo1, hi1 = st[S_LO0], st[S_HI0], st[S_LO1], st[S_HI1]
    nb = min(depth, hi0 - lo0)
    na = min(depth, hi1 - lo1)
    snap_meta[n_snap, 0] = m
    snap_meta[n_snap, 1] = reason
    snap_meta[n_snap, 2] = st[S_EPOCH]
    snap_meta[n_snap, 3] = nb
    snap_meta[n_snap, 4] = na
    snap_meta[n_snap, 5] = c
    for j in range(nb):
        snap_ids[n_snap, j] = pid[0, hi0 - 1 - j]
        snap_ids[n_snap, depth + j] = _size_id(pid[0, hi0 - 1 - j], n0, n_lv)
    for j in range(na):
        snap_ids[n_snap, 2 * depth + j] = pid[1, hi1 - 1 - j]
        snap_ids[n_snap, 3 * depth + j] = _size_id(pid[1, hi1 - 1 - j], n0, n_lv)
    return n_snap + 1


@njit(cache=True)
def _drift_check(
    m, pid, st, n0, n_lv, a0, o0, a1, o1, m_off, l_side, words0, words1, scale, max_int
):
    """Book drift (``fluxforge.book.drift``): the book against snapshot message `m`, before
    it applies. Returns (prices compared, levels differing, string id of the snapshot's and
    of the book's size at the largest difference, -1 where absent); differing -1 when a
    level is not a decimal the lake holds (not reachable: every level was parsed on input).

    Every level's price and size are parsed once, in one ``decimals`` call: book bids and
    asks in ascending price (bids are stored ascending, asks descending), then the
    snapshot's levels of each side."""
    n_side = np.zeros(4, np.int64)  # book bids, book asks, snapshot bids, snapshot asks
    for s in range(2):
        n_side[s] = st[S_HI0 + 2 * s] - st[S_LO0 + 2 * s]
    for i in range(m_off[m], m_off[m + 1]):
        n_side[2 + l_side[i]] += 1
    start = np.zeros(5, np.int64)
    for k in range(4):
        start[k + 1] = start[k] + 2 * n_side[k]
    ids = np.empty(start[4], np.int64)
    for s in range(2):
        lo, hi = st[S_LO0 + 2 * s], st[S_HI0 + 2 * s]
        r = start[s]
        for k in range(hi - lo):
            p = pid[s, lo + k] if s == 0 else pid[s, hi - 1 - k]
            ids[r] = p
            ids[r + 1] = _size_id(p, n0, n_lv)
            r += 2
    fill = start[2:4].copy()
    for i in range(m_off[m], m_off[m + 1]):
        s = l_side[i]
        ids[fill[s]] = n0 + i
        ids[fill[s] + 1] = n0 + i + n_lv
        fill[s] += 2
    if words0.shape[0] == 2 * n0 and words1.shape[0] == 4 * n_lv:
        words = words_of(ids, n0, words0, words1)
    else:
        words, ok = decimals(ids, n0, a0, o0, a1, o1, scale, max_int)
        if not ok:
            return 0, -1, -1, -1
    prices = 0
    differing = 0
    best_hi, best_lo = np.int64(-1), np.int64(0)
    want_id, have_id = -1, -1
    for s in range(2):
        h = words[2 * start[s] : 2 * start[s + 1]].reshape((n_side[s], 4))
        w = words[2 * start[2 + s] : 2 * start[3 + s]].reshape((n_side[2 + s], 4))
        p, d, wi, hi_, d_hi, d_lo = compare_side(w[:, 0:2], w[:, 2:4], h[:, 0:2], h[:, 2:4], s == 0)
        prices += p
        differing += d
        if d and below(best_hi, best_lo, d_hi, d_lo):  # equal: the bids' (the first)
            best_hi, best_lo = d_hi, d_lo
            want_id = ids[start[2 + s] + 2 * wi + 1] if wi >= 0 else -1
            have_id = ids[start[s] + 2 * hi_ + 1] if hi_ >= 0 else -1
    return prices, differing, want_id, have_id


@njit(cache=True)
def words_of(ids, n0, words0, words1):
    """The decimal words of pooled strings `ids`, taken from the words already parsed for
    each arena (``decimals`` of every string of the book's arena, then of the batch's)."""
    out = np.empty(2 * ids.shape[0], dtype=np.int64)
    for i in range(ids.shape[0]):
        d = ids[i]
        if d < n0:
            out[2 * i] = words0[2 * d]
            out[2 * i + 1] = words0[2 * d + 1]
    for i in range(ids.shape[0]):
        d = ids[i] - n0
        if d >= 0:
            out[2 * i] = words1[2 * d]
            out[2 * i + 1] = words1[2 * d + 1]
    return out


@njit(cache=True)
def apply_kernel(
    st,
    key,
    pid,
    m_ts_event,
    m_ts_recv,
    m_flags,
    m_first,
    m_final,
    m_prev,
    m_cks,
    m_ckkind,
    m_chain,
    m_vdepth,
    m_off,
    l_side,
    l_px,
    l_sz,
    n0,
    a0,
    o0,
    a1,
    o1,
    depth,
    interval,
    table,
    m0,
    buf_max,
    buf_window,
    out_order,
    out_clock,
    out_epoch,
    out_top,
    stats,
    words0,
    words1,
    scale,
    max_int,
):
    """Apply messages ``m0..n`` in order; see the module docstring for the book layout.

    Messages ``0..m0`` are the pre-snapshot buffer carried from earlier calls (updates of a
    Binance chain received while the book waited for its REST snapshot, oldest first). Such
    updates are buffered (at most ``buf_max``, none older than ``buf_window`` ns of receive
    time; evictions are counted) instead of dropped; when a chained snapshot arrives the book
    is replaced and the buffer replayed right after it through the same drop / bridge / chain
    rules. A replayed message's rows take the receive time and seq of the snapshot (its
    "clock", ``out_clock``), and the snapshot row of the rebuild is injected once, after the
    replay, so that it sorts with the book it shows.

    A venue snapshot met while the epoch is valid is first compared with the book (drift,
    ``_drift_check``): a chained one only at the book's own update id, an unchained one only
    when an update came since the previous snapshot (``S_UPDATED``; consecutive pushes of a
    partial-depth stream are two instants, not a replay to check). A difference ends the
    epoch (a gap event, cause ``G_DRIFT``) and the snapshot rebuilds the book; a chained one
    then goes on from its own id. An unchained snapshot that does not differ (not compared,
    or equal) replaces the book inside the valid epoch: no new epoch, no resync row.
    `words0` and `words1`: the decimal words of every string of the book's and the batch's
    arena when the caller has them (else empty: the drift check parses the strings it
    compares); `scale` and `max_int`: the lake's decimal (``decimals``).

    Returns the (possibly reallocated) book arrays, the snapshot events (message index,
    reason, epoch, counts, clock message; then 4*depth string ids: bid px, bid sz, ask px,
    ask sz), the gap events (message index, cause, ended epoch, ts_from, expected, got, ts_to,
    evicted), the drift events (message index, epoch, prices compared, levels differing,
    string id of the snapshot's and the book's size at the largest difference), the number
    of applied messages (their indices in application order are ``out_order[:k]``) and the
    buffer left for the next call (message indices, oldest first).
    """
    n = m_ts_event.shape[0]
    n_lv = l_px.shape[0]
    snap_meta = np.empty((16, 6), dtype=np.int64)
    snap_ids = np.empty((16, 4 * depth), dtype=np.int64)
    n_snap = 0
    gap_meta = np.empty((16, 8), dtype=np.int64)
    n_gap = 0
    drift_meta = np.empty((4, 6), dtype=np.int64)
    n_drift = 0
    # the checksummed text of one book; sized once: no array the loops use is ever replaced
    # inside them (numba counts the references of such an array at every turn of the loop,
    # two atomic operations per array: half the time of a Coinbase batch)
    ck_buf = np.empty(_checksum_room(m_ckkind, n0, o0, o1), dtype=np.uint8)
    # the last checksum computed, while no level of the checksummed top (CK_TOP) changed
    # since: an update deeper in the book leaves the venue's checksum as it was
    ck_kind = CK_NONE
    ck_val = np.int64(0)
    # cached boundaries of the current UTC day and of the next periodic bucket
    day_start, day_end, next_bucket = _boundaries(st, interval)
    # pre-snapshot buffer: never holds a message twice, so n entries always suffice
    cap = max(1, min(buf_max, n))
    ring = np.empty(cap, dtype=np.int64)
    head = 0
    count = 0
    for b in range(m0):
        if count == buf_max:  # only when this engine's limit is below the checkpoint's
            if count > 0:
                head = (head + 1) % cap
                count -= 1
            stats[T_EVICTED] += 1
            stats[T_DROPPED] += 1
            st[S_EVICTED] += 1
            if buf_max == 0:
                continue
        ring[(head + count) % cap] = b
        count += 1
    replay = np.empty(cap, dtype=np.int64)
    rq_n = 0
    rq_pos = 0
    rq_clock = -1
    pos = m0
    n_out = 0
    # pending snapshot injection: after message inj_m (book state), at the clock of inj_c
    inj_m = -1
    inj_c = -1
    inj_rebuilt = False
    inj_reason = R_RESYNC
    grow = False
    book_need = 0  # book slots the message waiting for room needs (the room check below)
    # runs the message loop again after each replay's snapshot row, and after the book or an
    # event table is grown: they are replaced only here, between turns of the message loop
    while True:
        while True:
            replaying = rq_pos < rq_n
            if inj_m >= 0 and not replaying:
                break  # (a call here, even never made, slowed the whole loop by 20%)
            if replaying:
                m = replay[rq_pos]
            elif pos < n:
                m = pos
            else:
                break
            # room for all this message can add: a gap, a drift and two snapshot rows (the
            # message's and a replay's), and one book level per level on either side (so a
            # side at an end of its array is always recentred, never relaid out, below)
            book_need = 2 * (
                max(st[S_HI0] - st[S_LO0], st[S_HI1] - st[S_LO1]) + m_off[m + 1] - m_off[m]
            )
            if (
                n_gap == gap_meta.shape[0]
                or n_drift == drift_meta.shape[0]
                or n_snap + 2 > snap_meta.shape[0]
                or book_need >= key.shape[1]
            ):
                grow = True
                break
            if replaying:
                rq_pos += 1
                c = rq_clock
            else:
                pos += 1
                c = m
            tr = m_ts_recv[c]
            out_top[m, 0] = -1
            out_top[m, 1] = -1
            out_top[m, 2] = -1
            out_top[m, 3] = -1
            flags = m_flags[m]
            chain = m_chain[m]
            is_snap = (flags & F_SNAPSHOT) != 0
            rebuilt = False
            resume_chain = False
            if is_snap:
                if st[S_VALID] == 1 and (
                    st[S_UPDATED] == 1
                    if chain == CH_NONE
                    else st[S_NEED_BRIDGE] == 0 and st[S_LAST_ID] == m_final[m]
                ):
                    stats[T_DRIFT_CHECKS] += 1
                    found = _drift_check(
                        m,
                        pid,
                        st,
                        n0,
                        n_lv,
                        a0,
                        o0,
                        a1,
                        o1,
                        m_off,
                        l_side,
                        words0,
                        words1,
                        scale,
                        max_int,
                    )
                    if found[1] != 0:
                        drift_meta[n_drift, 0] = m
                        drift_meta[n_drift, 1] = st[S_EPOCH]
                        drift_meta[n_drift, 2] = found[0]
                        drift_meta[n_drift, 3] = found[1]
                        drift_meta[n_drift, 4] = found[2]
                        drift_meta[n_drift, 5] = found[3]
                        n_gap = _gap_row(gap_meta, n_gap, m, G_DRIFT, st, n_drift, found[1], tr, 0)
                        n_drift += 1
                        stats[T_DRIFTS] += 1
                        # the epoch ends here: the snapshot rebuilds the book (a chained REST
                        # snapshot at the book's own id would otherwise be skipped as stale)
                        st[S_VALID] = 0
                        st[S_NEED_BRIDGE] = 0
                        st[S_PENDING] = R_RESYNC
                        resume_chain = chain != CH_NONE
                st[S_UPDATED] = 0
            elif c == m:  # received now (a replayed update counted when it came)
                st[S_UPDATED] = 1
            if (
                is_snap
                and (flags & F_REST) != 0
                and chain != CH_NONE
                and st[S_VALID] == 1
                and st[S_NEED_BRIDGE] == 0
                and st[S_LAST_ID] >= m_final[m]
            ):
                # a re-fetched REST snapshot no newer than the verified chain: replacing the book
                # with it would rewind it and break the chain on the next update
                stats[T_STALE] += 1
                continue
            if is_snap:
                ck_kind = CK_NONE
                for s in range(2):
                    mid = key.shape[1] // 2
                    st[S_LO0 + 2 * s] = mid
                    st[S_HI0 + 2 * s] = mid
                # an unchained venue snapshot in a valid epoch that did not differ from the
                # book (consecutive pushes of a partial-depth stream, or compared equal) goes on
                # in that epoch: no gap, so no new epoch and no resync snapshot row
                if chain != CH_NONE or st[S_VALID] == 0:
                    st[S_EPOCH] += 1
                    st[S_VALID] = 1
                    rebuilt = True
                if chain != CH_NONE:
                    # after a drift at the book's own id the chain goes on from it: no bridge
                    st[S_NEED_BRIDGE] = 0 if resume_chain else 1
                    st[S_SNAP_ID] = m_final[m]
                    st[S_LAST_ID] = m_final[m]
                if count > 0:
                    if buf_window > 0:
                        while count > 0 and m_ts_recv[ring[head]] < tr - buf_window:
                            head = (head + 1) % cap
                            count -= 1
                            stats[T_EVICTED] += 1
                            stats[T_DROPPED] += 1
                            st[S_EVICTED] += 1
                    if chain != CH_NONE:  # replay the buffer right after this snapshot
                        for j in range(count):
                            replay[j] = ring[(head + j) % cap]
                        rq_n = count
                        rq_pos = 0
                        rq_clock = m
                    else:
                        stats[T_DROPPED] += count
                    head = 0
                    count = 0
                if chain == CH_NONE:
                    st[S_EVICTED] = 0
            else:
                if st[S_VALID] == 0:
                    if chain != CH_NONE and buf_max > 0:
                        head, count = _push(
                            ring, head, count, buf_max, m, tr, buf_window, m_ts_recv, st, stats
                        )
                    else:
                        stats[T_DROPPED] += 1
                    continue
                if chain != CH_NONE:
                    u = m_final[m]
                    first = m_first[m]
                    broken = False
                    expected = 0
                    got = 0
                    if st[S_NEED_BRIDGE] == 1:
                        last = st[S_SNAP_ID]
                        if chain == CH_BINANCE_FUTURES:
                            if u < last:
                                stats[T_DROPPED] += 1
                                continue
                            if first <= last:
                                stats[T_BRIDGES] += 1
                            else:
                                broken = True
                        else:
                            if u <= last:
                                stats[T_DROPPED] += 1
                                continue
                            if first <= last + 1:
                                stats[T_BRIDGES] += 1
                            else:
                                broken = True
                        expected = last
                        got = first
                    elif chain == CH_BINANCE_FUTURES:
                        broken = m_prev[m] != st[S_LAST_ID]
                        expected = st[S_LAST_ID]
                        got = m_prev[m]
                    else:
                        broken = first != st[S_LAST_ID] + 1
                        expected = st[S_LAST_ID] + 1
                        got = first
                    if broken:
                        stats[T_BREAKS] += 1
                        n_gap = _gap_row(
                            gap_meta, n_gap, m, G_CHAIN_BREAK, st, expected, got, tr, st[S_EVICTED]
                        )
                        st[S_VALID] = 0
                        st[S_PENDING] = R_RESYNC
                        st[S_EVICTED] = 0
                        if buf_max > 0:  # it may be the one that bridges the next snapshot
                            head, count = _push(
                                ring, head, count, buf_max, m, tr, buf_window, m_ts_recv, st, stats
                            )
                        continue
                    stats[T_LINKS] += 1
                    if st[S_NEED_BRIDGE] == 1:
                        st[S_NEED_BRIDGE] = 0
                        st[S_EVICTED] = 0
                    st[S_LAST_ID] = u
            # apply the levels. Written out here rather than calling helpers: numba did not
            # inline them and the calls cost more than the work (27 vs 12 M levels/s).
            # A finger per side: every book level at index >= fpos has a key >= fkey (the
            # last level this message touched), so a next level with a key not above it is
            # searched below fpos, not from the top: the levels of a wide update come best
            # first (Bitget, OKX: 100-200 levels a message)
            fkey0 = -np.inf  # no finger yet
            fkey1 = -np.inf
            fpos0 = 0
            fpos1 = 0
            top = CK_TOP[ck_kind]  # the levels the cached checksum covers (none: 0)
            for i in range(m_off[m], m_off[m + 1]):
                s = l_side[i]
                lo = st[S_LO0 + 2 * s]
                hi = st[S_HI0 + 2 * s]
                cap_s = key.shape[1]
                if lo == 0 or hi == cap_s:  # the room checked above: less than half full
                    _recentre(key, pid, st, s)
                    lo = st[S_LO0 + 2 * s]
                    hi = st[S_HI0 + 2 * s]
                    fkey0 = -np.inf  # every level moved: no finger
                    fkey1 = -np.inf
                k = l_px[i] if s == 0 else -l_px[i]
                delete = l_sz[i] == 0.0
                # position: first index in [lo, hi) with key >= k; most updates are within a few
                # levels of the best (the top of the array), or of the finger: scan, then bisect
                p = hi
                if s == 0 and k <= fkey0:
                    p = fpos0
                elif s == 1 and k <= fkey1:
                    p = fpos1
                stop = max(lo, p - 16)
                while p > stop and key[s, p - 1] >= k:
                    p -= 1
                if p == stop and p > lo:
                    a = lo
                    b = p
                    while a < b:
                        half = (a + b) >> 1
                        if key[s, half] < k:
                            a = half + 1
                        else:
                            b = half
                    p = a
                if hi - p <= top:  # a level within the checksummed top (rank hi - 1 - p)
                    ck_kind = CK_NONE
                # the finger after this level: index p holds a key >= k once it is applied
                # (updated, inserted, or the next one after an absent or removed level),
                # except after a removal that shifted the lower part up (then p + 1)
                finger = p
                # the shifts index with unsigned integers: numba then leaves out its fix-up of
                # negative indices and a move costs a third (0.5 instead of 1.5 ns), which
                # matters on deep books (Bitget, OKX: updates anywhere in 1,000+ levels)
                us = np.uint64(s)
                if p < hi and key[s, p] == k:
                    if not delete:
                        pid[s, p] = n0 + i
                    elif p - lo < hi - 1 - p:  # remove: shift the shorter part
                        j = np.uint64(p)
                        while j > np.uint64(lo):
                            key[us, j] = key[us, j - _U1]
                            pid[us, j] = pid[us, j - _U1]
                            j -= _U1
                        st[S_LO0 + 2 * s] = lo + 1
                        finger = p + 1
                    else:
                        j = np.uint64(p)
                        while j < np.uint64(hi - 1):
                            key[us, j] = key[us, j + _U1]
                            pid[us, j] = pid[us, j + _U1]
                            j += _U1
                        st[S_HI0 + 2 * s] = hi - 1
                elif not delete:  # removing an absent level is normal (Binance documents it)
                    if p - lo <= hi - p:  # insert: open a slot on the shorter side
                        j = np.uint64(lo)
                        while j < np.uint64(p):
                            key[us, j - _U1] = key[us, j]
                            pid[us, j - _U1] = pid[us, j]
                            j += _U1
                        st[S_LO0 + 2 * s] = lo - 1
                        p -= 1
                        finger = p
                    else:
                        j = np.uint64(hi)
                        while j > np.uint64(p):
                            key[us, j] = key[us, j - _U1]
                            pid[us, j] = pid[us, j - _U1]
                            j -= _U1
                        st[S_HI0 + 2 * s] = hi + 1
                    key[s, p] = k
                    pid[s, p] = n0 + i
                if s == 0:
                    fkey0 = k
                    fpos0 = finger
                else:
                    fkey1 = k
                    fpos1 = finger
            vd = m_vdepth[m]
            if vd > 0:
                if vd < top:
                    ck_kind = CK_NONE
                for s in range(2):
                    if st[S_HI0 + 2 * s] - st[S_LO0 + 2 * s] > vd:
                        st[S_LO0 + 2 * s] = st[S_HI0 + 2 * s] - vd
            ck = m_ckkind[m]
            if ck != CK_NONE:
                if ck_kind == ck:
                    got = ck_val
                else:
                    got = _checksum(ck, pid, st, n0, n_lv, a0, o0, a1, o1, table, ck_buf)
                    ck_kind, ck_val = ck, got
                if got != m_cks[m]:
                    ck_kind = CK_NONE
                    stats[T_MISMATCH] += 1
                    n_gap = _gap_row(gap_meta, n_gap, m, G_CHECKSUM, st, m_cks[m], got, tr, 0)
                    st[S_VALID] = 0
                    st[S_PENDING] = R_RESYNC
                    continue
                stats[T_VERIFIED] += 1
            # applied
            stats[T_UPDATES] += 1
            if c != m:
                stats[T_REPLAYED] += 1
            out_order[n_out] = m
            n_out += 1
            out_clock[m] = c
            out_epoch[m] = st[S_EPOCH]
            st[S_LAST_GOOD_TS] = tr
            lo0, hi0, lo1, hi1 = st[S_LO0], st[S_HI0], st[S_LO1], st[S_HI1]
            if hi0 > lo0:
                out_top[m, 0] = pid[0, hi0 - 1]
                out_top[m, 1] = _size_id(pid[0, hi0 - 1], n0, n_lv)
            if hi1 > lo1:
                out_top[m, 2] = pid[1, hi1 - 1]
                out_top[m, 3] = _size_id(pid[1, hi1 - 1], n0, n_lv)
                if hi0 > lo0 and key[0, hi0 - 1] >= -key[1, hi1 - 1]:
                    stats[T_CROSSED] += 1
            if rebuilt:
                inj_rebuilt = True
                inj_reason = st[S_PENDING]
                st[S_PENDING] = R_RESYNC
            if rq_pos < rq_n:  # a replay follows or is running: one snapshot row after it
                inj_m = m
                inj_c = c
                continue
            inj_m = -1
            # snapshot injection: the call only when a boundary may have been crossed
            if inj_rebuilt or tr < day_start or tr >= day_end or m_ts_event[m] >= next_bucket:
                n_snap = _inject(
                    st, pid, m, c, inj_reason if inj_rebuilt else -1, m_ts_recv, m_ts_event,
                    interval, depth, n0, n_lv, snap_meta, snap_ids, n_snap, stats,
                )  # fmt: skip
                inj_rebuilt = False
                day_start, day_end, next_bucket = _boundaries(st, interval)
        if grow:
            grow = False
            if n_gap == gap_meta.shape[0]:
                gap_meta = _grow_rows(gap_meta, 2 * n_gap)
            if n_drift == drift_meta.shape[0]:
                drift_meta = _grow_rows(drift_meta, 2 * n_drift)
            if n_snap + 2 > snap_meta.shape[0]:
                snap_meta = _grow_rows(snap_meta, 2 * snap_meta.shape[0])
                snap_ids = _grow_rows(snap_ids, 2 * snap_ids.shape[0])
            if book_need >= key.shape[1]:
                cap_new = 2 * key.shape[1]
                while book_need >= cap_new:
                    cap_new *= 2
                key, pid = _relayout(key, pid, st, cap_new)
            continue
        if inj_m < 0:
            break
        # the replay after a rebuild is over: the rebuild's snapshot row, after it
        n_snap = _inject(
            st, pid, inj_m, inj_c, inj_reason if inj_rebuilt else -1, m_ts_recv, m_ts_event,
            interval, depth, n0, n_lv, snap_meta, snap_ids, n_snap, stats,
        )  # fmt: skip
        inj_m = -1
        inj_rebuilt = False
        day_start, day_end, next_bucket = _boundaries(st, interval)
    stats[T_GAPS] += n_gap
    left = np.empty(count, dtype=np.int64)
    for j in range(count):
        left[j] = ring[(head + j) % cap]
    return (
        key, pid, snap_meta[:n_snap], snap_ids[:n_snap], gap_meta[:n_gap],
        drift_meta[:n_drift], n_out, left,
    )  # fmt: skip


@njit(cache=True)
def delta_columns(
    order, clock, epoch, m_off, l_side, ts_event, ts_recv, final_id, flags, seq, vsym
):
    """The per-level columns of the delta rows of applied messages `order` (application
    order), in one pass: (level index, ts_event, ts_recv and seq of the message's clock,
    update id, is_snapshot, epoch, side code, venue-symbol code)."""
    n = 0
    for k in range(order.shape[0]):
        n += m_off[order[k] + 1] - m_off[order[k]]
    idx = np.empty(n, np.int64)
    t_ev = np.empty(n, np.int64)
    t_rv = np.empty(n, np.int64)
    upd = np.empty(n, np.int64)
    snap = np.empty(n, np.bool_)
    ep = np.empty(n, np.int32)
    sq = np.empty(n, np.int64)
    sd = np.empty(n, np.uint8)
    vs = np.empty(n, vsym.dtype)
    r = 0
    for k in range(order.shape[0]):
        m = order[k]
        c = clock[m]
        for i in range(m_off[m], m_off[m + 1]):
            idx[r] = i
            t_ev[r] = ts_event[m]
            t_rv[r] = ts_recv[c]
            upd[r] = final_id[m]
            snap[r] = (flags[m] & F_SNAPSHOT) != 0
            ep[r] = epoch[m]
            sq[r] = seq[c]
            sd[r] = l_side[i]
            vs[r] = vsym[m]
            r += 1
    return idx, t_ev, t_rv, upd, snap, ep, sq, sd, vs


@njit(cache=True)
def fixed_width_strings(codes, table):
    """``table[codes]`` laid end to end: the bytes of a string column whose values (rows of
    `table`) share one width. ok is False when a code is not a row of `table`."""
    n = codes.shape[0]
    k, w = table.shape
    out = np.empty(n * w, np.uint8)
    if w == 3:  # the side column (bid / ask): the copy unrolled, 4x faster than the loop
        for i in range(n):
            c = codes[i]
            if c < 0 or c >= k:
                return out, False
            out[3 * i] = table[c, 0]
            out[3 * i + 1] = table[c, 1]
            out[3 * i + 2] = table[c, 2]
        return out, True
    for i in range(n):
        c = codes[i]
        if c < 0 or c >= k:
            return out, False
        for j in range(w):
            out[i * w + j] = table[c, j]
    return out, True


@njit(cache=True)
def gather(ids, n0, a0, o0, a1, o1):
    """Pooled strings -> (bytes, int64 offsets) of an Arrow large_string array; id -1 = ''."""
    n = ids.shape[0]
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0] = 0
    total = 0
    for i in range(n):
        d = ids[i]
        if d >= 0:
            if d < n0:
                total += o0[d + 1] - o0[d]
            else:
                total += o1[d - n0 + 1] - o1[d - n0]
        offsets[i + 1] = total
    data = np.empty(total, dtype=np.uint8)
    # one pass per arena: an array chosen per string costs numba a reference-count pair
    for i in range(n):
        d = ids[i]
        if 0 <= d < n0:
            pos = offsets[i]
            for j in range(o0[d], o0[d + 1]):
                data[pos] = a0[j]
                pos += 1
    for i in range(n):
        d = ids[i] - n0
        if d >= 0:
            pos = offsets[i]
            for j in range(o1[d], o1[d + 1]):
                data[pos] = a1[j]
                pos += 1
    return data, offsets


@njit(cache=True)
def compact(key, pid, st, n0, nl, a0, o0, a1, o1):
    """Rewrite the book's strings into a fresh arena in canonical order (bids best first, then
    asks best first; price then size), so that the arena depends only on the book content."""
    nb = st[S_HI0] - st[S_LO0]
    na = st[S_HI1] - st[S_LO1]
    ids = np.empty(2 * (nb + na), dtype=np.int64)
    r = 0
    for s in range(2):
        lo = st[S_LO0 + 2 * s]
        for j in range(st[S_HI0 + 2 * s] - 1, lo - 1, -1):
            ids[r] = pid[s, j]
            ids[r + 1] = _size_id(pid[s, j], n0, nl)
            pid[s, j] = r
            r += 2
    return gather(ids, n0, a0, o0, a1, o1)


@njit(cache=True)
def decimals(ids, n0, a0, o0, a1, o1, scale, max_int):
    """Pooled decimal strings -> Arrow decimal128(p, `scale`) values (two int64 words each).

    The caller passes the lake's scale and integer-digit limit (``fluxforge.tables``;
    arguments rather than imported constants, so numba's on-disk cache can never keep an old
    scale). Up to 18 digits accumulate in one int64; the value is then scaled by
    10**(scale - decimals) in four 32-bit limbs (``fluxforge.wire.decimal.times_pow10``).
    Digits past the `scale`-th decimal must be zeros (venue padding, the same number) and
    are skipped, as ``fluxforge.wire.decimal.to_scale`` cuts them. Returns
    (words, ok); ok is False when a string is not a plain non-negative decimal with at most
    `max_int` integer digits and no non-zero digit past the scale: the caller then names the
    bad value."""
    n = ids.shape[0]
    out = np.zeros(2 * n, dtype=np.int64)
    mask = np.int64(0xFFFFFFFF)
    run_end = 0
    arr = a1
    off = o1
    base = n0
    for i in range(n):
        d = ids[i]
        if i == run_end:
            # the arena chosen once per run of ids in it, not per value: an array variable
            # set per value costs numba a reference-count pair (37 -> 27 ns a value)
            first = d < n0
            run_end = i + 1
            while run_end < n and (ids[run_end] < n0) == first:
                run_end += 1
            arr = a0 if first else a1
            off = o0 if first else o1
            base = 0 if first else n0
        b0 = off[d - base]
        b1 = off[d - base + 1]
        if b1 == b0:
            return out, False
        acc = np.int64(0)
        nd = 0
        l0 = np.int64(0)
        l1 = np.int64(0)
        l2 = np.int64(0)
        l3 = np.int64(0)
        big = False
        frac = -1  # digits after the dot, -1 before it
        int_digits = 0
        for q in range(b0, b1):
            c = np.int64(arr[q])
            if c == _DOT:
                if frac >= 0:
                    return out, False
                frac = 0
                continue
            c -= _ZERO
            if c < 0 or c > 9:
                return out, False
            if frac >= 0:
                if frac >= scale:  # past the scale: padding zeros only, not accumulated
                    if c != 0:
                        return out, False
                    continue
                frac += 1
            else:
                int_digits += 1
                if int_digits > max_int:
                    return out, False
            if not big:
                if nd < 18:
                    acc = acc * 10 + c
                    nd += 1
                    continue
                big = True
                l0 = acc & mask
                l1 = acc >> 32
            t = l0 * 10 + c
            l0 = t & mask
            t = l1 * 10 + (t >> 32)
            l1 = t & mask
            t = l2 * 10 + (t >> 32)
            l2 = t & mask
            l3 = l3 * 10 + (t >> 32)
        if int_digits == 0 and frac <= 0:
            return out, False  # "." alone: no digit at all
        if not big:
            l0 = acc & mask
            l1 = acc >> 32
        l0, l1, l2, l3 = times_pow10(l0, l1, l2, l3, scale - max(frac, 0))
        out[2 * i] = l0 | (l1 << 32)
        out[2 * i + 1] = l2 | (l3 << 32)
    return out, True
