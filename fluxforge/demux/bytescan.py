"""Numba primitives of the byte scanners: one JSON value at a time over the segment bytes.

Every function takes the segment as a uint8 array and positions in it; a position of -1 means
"not the shape this scanner accepts" and the line goes to the per-line path. Strings with
escapes, control or non-ASCII bytes are never accepted here (``str_end``), so a byte span of an
accepted string is its exact text.

Reference counts: numba increments and decrements an array argument's reference count around
every call, atomically (~10 ns each on these machines), unless it can pair the two; it pairs
them when the array's last use sits in one block before the function's exit(s). The
primitives called once per value are therefore written with one pass and no early exit while
they read the array, and end with ``len(buf)`` (the array used once more after every branch)
before they return: measured 20-50 ns -> 2-10 ns a call, which had been most of a scanner's
time.

The same counts cost a scanner that passes its arguments down to helpers too big to inline
(``flat_object``): a scanner's long-lived read-only arrays (the segment, the declarations, the
envelope literals) are therefore taken as ``borrowed`` views once at its start, whose counts
are a null check instead of an atomic add.

A column of names (symbols, streams, urls) that is only needed dictionary-encoded is coded
from its spans (``span_codes``, ``distinct_spans``; ``int_codes`` for codes combined into
pairs) without building each row's string: Arrow's ``dictionary_encode`` hashes strings it
first has to copy.

Calls: a compiled call from one numba function to another passes each array as its seven
fields and returns through a status check, and LLVM's inliner leaves most helpers here as
calls. The ones a scanner calls once per key (``key_at``, ``declared_key_at``, ``next_key``),
and the decimal rules called once per level (``copy_decimal_key``, ``scaled_words`` in
fluxforge/wire/decimal.py) are therefore inlined by numba itself (``inline="always"``).
Measured on 60 MB of the documented shapes of all five venues: ``level_arenas`` 57-61 ->
49-51 ms, the OKX/Bitget scan 41-42 -> 37-38 ms, the Binance scans 3-4 ms less. Inlining every
small helper as well (``ws``, ``str_end``, ``eq``, the number readers) gained nothing more and
took a cold compilation from 85 to 138 s (this set: 89 s).

numba's on-disk cache (cache=True) is keyed on each function's own file only, while these
helpers are inlined into kernels of other modules: ``fluxforge.jitcache`` keeps the cache in
a directory named by a digest of every module, so any change starts a fresh one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

from fluxforge.wire.decimal import copy_decimal_key, decimal_end, plain_decimal, scaled_words
from fluxforge.wire.envelope import SCAN_DATA, SCAN_HEAD, SCAN_MSG, SCAN_REST, SCAN_SRC, scan_ex
from fluxforge.wire.shape import (
    A_COL,
    A_FIRST,
    A_FLAGS,
    A_KIND,
    A_KOFF,
    A_NEED,
    A_NF,
    A_NNEED,
    A_WHI,
    A_WLO,
    A_WOFF,
    A_WSIDE,
    F_ARRAY,
    F_OPEN,
    NO_KEY,
    SEVERAL_KEYS,
    V_ASKS_OBJ,
    V_BIDS,
    V_BIDS_OBJ,
    V_BOOL,
    V_DEC,
    V_DIGITS,
    V_ENUM,
    V_ID,
    V_INT,
    V_INT_SPAN,
    V_ISO,
    V_ISO_OPT,
    V_LIST,
    V_MS,
    V_MS_ANY,
    V_NESTED,
    V_NUM,
    V_NUM_POS,
    V_OPT_DEC,
    V_POS,
    V_SCALAR,
    V_SECONDS,
    V_SIDED_LEVELS,
    V_SINT,
    V_STR,
    V_TEXT,
    V_TIMED_ASKS,
    V_TIMED_BIDS,
    pack_words,
)
from fluxforge.wire.times import TS_MAX_MS, TS_MAX_S, TS_MIN_MS, days_from_civil, plausible_ns

QUOTE = 34  # "
BACKSLASH = 92  # backslash
LBRACKET = 91  # [
RBRACKET = 93  # ]
LBRACE = 123  # {
RBRACE = 125  # }
COMMA = 44
COLON = 58
DOT = 46


@intrinsic
def borrowed(typingctx, arr):
    """`arr` without its memory owner (the meminfo pointer NULL): numba's reference count
    operations on the view are a null check instead of an atomic add (~10 ns) around every
    call that passes it on. Only for an array that outlives every use of the view: an
    argument of the calling function (the caller holds it for the whole call)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        out = context.make_array(signature.return_type)(context, builder)
        out.meminfo = context.get_constant_null(types.MemInfoPointer(types.voidptr))
        out.parent = src.parent
        out.nitems = src.nitems
        out.itemsize = src.itemsize
        out.data = src.data
        out.shape = src.shape
        out.strides = src.strides
        return out._getvalue()

    return arr(arr), codegen


@intrinsic
def load8(typingctx, arr, idx):
    """The 8 bytes of a uint8 array from idx as one int64 (little endian), at any alignment:
    eight bytes compared at once. The caller keeps 0 <= idx <= len(arr) - 8."""

    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), llvm_ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return types.int64(arr, idx), codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Asks for the cache line of arr[idx] (a hint: never faults, any idx)."""

    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = llvm_ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        i32 = llvm_ir.IntType(32)
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        # (read, keep in every cache level, data)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


# a scanner asks for the first bytes of the line this many lines ahead (``prefetch_span``)
AHEAD_LINES = 8


@njit(cache=True)
def prefetch_span(buf, s, e):
    """Ask for the cache lines of buf[s:e], its first 2 KiB at most. A pass that reads some of
    the segment's lines jumps from one to the next, which the processor's own prefetcher does
    not foresee, and a 60 MB segment is far bigger than its caches: a scanner asks for the
    line ``AHEAD_LINES`` ahead when it will read it (60 MB of documented Binance shapes: the
    demux 345 -> 290-300 ms)."""
    for c in range(s, min(e, s + 2048), 64):
        prefetch(buf, c)


@njit(cache=True)
def eq(buf, s, e, word):
    if e - s != len(word):
        return False
    for k in range(len(word)):  # noqa: SIM110 (numba: no generators)
        if buf[s + k] != word[k]:
            return False
    return True


@njit(cache=True)
def eq_word(buf, s, e, flat, off, k):
    """buf[s:e] == word k of a packed word list (``fluxforge.wire.shape.pack_words``)."""
    a = off[k]
    n = off[k + 1] - a
    ok = e - s == n and s >= 0
    j = 0
    while ok and j + 8 <= n:
        ok = load8(buf, s + j) == load8(flat, a + j)
        j += 8
    while ok and j < n:
        ok = buf[s + j] == flat[a + j]
        j += 1
    len(buf), len(flat), len(off)  # (arrays live to the one exit: see the module doc)
    return ok


@njit(cache=True)
def eq_at(buf, s, e, arr, a, b):
    """buf[s:e] == arr[a:b] (bytes held in any integer array, e.g. a packed declaration)."""
    if e - s != b - a:
        return False
    for j in range(b - a):  # noqa: SIM110 (numba: no generators)
        if buf[s + j] != arr[a + j]:
            return False
    return True


@njit(cache=True)
def lit_word(buf, p, end, flat, off, k):
    """Position after word k of a packed word list at p, or -1."""
    n = off[k + 1] - off[k]
    ok = p + n <= end and eq_word(buf, p, p + n, flat, off, k)
    len(buf), len(flat), len(off)  # (one exit: see the module doc)
    return p + n if ok else -1


@njit(cache=True)
def lit(buf, p, end, word):
    """position after `word` at p, or -1."""
    n = len(word)
    ok = p >= 0 and p + n <= end
    k = 0
    while ok and k + 8 <= n:
        ok = load8(buf, p + k) == load8(word, k)
        k += 8
    while ok and k < n:
        ok = buf[p + k] == word[k]
        k += 1
    len(buf), len(word)  # (arrays live to the one exit: see the module doc)
    return p + n if ok else -1


@njit(cache=True)
def ws(buf, p, end):
    while p < end and (buf[p] == 32 or buf[p] == 9):
        p += 1
    return p


@njit(cache=True)
def read_int(buf, p, end):
    """(value, position after) of a non-negative JSON integer that fits int64, or (-1, -1)."""
    v = 0
    k = p
    while k < end and 48 <= buf[k] <= 57:
        v = v * 10 + (buf[k] - 48)
        k += 1
    first = buf[p] if k > p else 0
    len(buf)  # (buf live to the exits: see the module doc)
    n = k - p
    # 19 digits could pass int64: the per-line path judges them
    if n == 0 or n > 19 or (first == 48 and n > 1) or (n == 19 and first > 56):
        return -1, -1
    return v, k


def _every_byte(b: int) -> np.int64:
    """The int64 whose eight bytes are all `b` (two's complement bits of the uint64)."""
    return np.array([b * 0x0101010101010101], np.uint64).view(np.int64)[0]


_ONES, _HIGH = _every_byte(0x01), _every_byte(0x80)
_QUOTES, _BACKSLASHES, _CONTROL = _every_byte(QUOTE), _every_byte(BACKSLASH), _every_byte(32)


@njit(cache=True)
def _stops(x):
    """Whether a byte of the eight in `x` may end a plain string: a quote, a backslash, a
    control byte (< 32) or a non-ASCII one (>= 128). Exact when False (the classic "has a
    zero byte" tests, x ^ b - 1 and x - 32 borrowing into the high bit); a True may be a false
    alarm above the first such byte, which the byte loop settles."""
    q = x ^ _QUOTES
    b = x ^ _BACKSLASHES
    hit = ((q - _ONES) & ~q) | ((b - _ONES) & ~b) | ((x - _CONTROL) & ~x) | x
    return (hit & _HIGH) != 0


@njit(cache=True)
def str_end(buf, p, end):
    """p at the opening quote -> position of the closing quote, or -1 (escapes, control or
    non-ASCII bytes are left to the per-line path). Eight bytes are tested at once while none
    of them can end the string (``_stops``); the byte loop then finds which one does."""
    if p >= end or buf[p] != QUOTE:
        return -1
    k = p + 1
    while k + 8 <= end and not _stops(load8(buf, k)):
        k += 8
    while k < end:
        c = buf[k]
        if c == QUOTE:
            return k
        if c == BACKSLASH or c < 32 or c >= 128:
            return -1
        k += 1
    return -1


@njit(cache=True)
def envelope_source(buf, s, end, head, src):
    """The envelope of the line at [s, end) up to its source string (`head` ts `src` "..."):
    (position after the source string, ts), or (-1, 0) when the line does not fit."""
    p = lit(buf, s, end, head)
    ts, p = read_int(buf, p, end) if p >= 0 else (0, -1)
    p = lit(buf, p, end, src) if p >= 0 else -1
    q = str_end(buf, p - 1, end) if p >= 0 else -1
    len(buf), len(head), len(src)  # (arrays live to the exits: see the module doc)
    if q < 0:
        return -1, 0
    return q + 1, ts


# bytes of a uint64 word (SWAR): a word x holds a zero byte iff (x - ONES) & ~x & HIGHS != 0
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)


@njit(cache=True)
def _newline_from(buf, words, k):
    """Position of the first newline at or after k, or len(buf). `words` is buf's whole
    8-byte words viewed as uint64: eight bytes are ruled out at once."""
    n = len(buf)
    while k < n and (k & 7) != 0 and buf[k] != 10:
        k += 1
    if k < n and buf[k] != 10:
        i = k >> 3
        while i < len(words):
            x = words[i] ^ _NEWLINES
            if ((x - _ONES) & ~x & _HIGHS) != 0:
                break
            i += 1
        k = max(k, i << 3)
        while k < n and buf[k] != 10:
            k += 1
    len(buf), len(words)  # (arrays live to the exit: see the module doc)
    return k


@njit(cache=True)
def _line_bounds(buf, words):
    n = len(buf)
    starts = np.empty(1024, np.int64)
    ends = np.empty(1024, np.int64)
    n_lines = 0
    s = 0
    while True:
        e = _newline_from(buf, words, s)
        if n_lines == len(starts):
            grown = np.empty(2 * n_lines, np.int64)
            grown[:n_lines] = starts
            starts = grown
            grown = np.empty(2 * n_lines, np.int64)
            grown[:n_lines] = ends
            ends = grown
        starts[n_lines] = s
        ends[n_lines] = e
        n_lines += 1
        if e >= n:
            break
        s = e + 1
    return starts[:n_lines], ends[:n_lines]


def line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of every newline-separated line of `buf` (uint8), the empty ones too
    (after a final newline: one empty line), as ``bytes.split(b"\\n")`` cuts them."""
    words = buf[: len(buf) // 8 * 8].view(np.uint64)
    return _line_bounds(buf, words)


# The envelope pass (``envelopes``): one row per line, these columns. A line's kind: msg, rest
# (with a url) or any other (ctl...). Its payload: the position after ``"data":`` (msg and
# rest lines), and a rest line's url: the position of its opening quote.
ENV_EX, ENV_TS, ENV_SEQ, ENV_KIND, ENV_AT, ENV_URL = range(6)
KIND_MSG, KIND_REST, KIND_OTHER = 0, 1, 2


@njit(cache=True)
def envelopes(buf, starts, ends, todo, head, src, ex_flat, ex_off, msg, rest, data):
    """Per `todo` line, its envelope read once in the writer's fixed layout
    (fluxforge.wire.envelope): the index in the packed `ex_flat`/`ex_off` words
    (``fluxforge.wire.envelope.scan_ex`` literals) of its exchange, ts, seq, kind and payload
    (the ``ENV_*`` columns). The msg and rest literals (`msg`, `rest`) end at the payload and
    the url; a rest line's url is a plain string, then `data`. A line whose envelope does not
    fit up to its seq: -1 throughout (the per-line path judges it); of any other kind, or a
    rest line whose url or data key does not fit: KIND_OTHER, no payload."""
    buf, head, src = borrowed(buf), borrowed(head), borrowed(src)
    ex_flat, ex_off = borrowed(ex_flat), borrowed(ex_off)
    msg, rest, data = borrowed(msg), borrowed(rest), borrowed(data)
    n = len(starts)
    env = np.empty((n, 6), np.int64)  # (every row written below: no fill pass first)
    for i in range(n):
        k = i + AHEAD_LINES
        if k < n and todo[k]:  # (the envelope only: its line's first bytes)
            prefetch_span(buf, starts[k], starts[k] + 128)
        end = ends[i]
        p, ts = envelope_source(buf, starts[i], end, head, src) if todo[i] else (-1, 0)
        code = -1
        if p >= 0:
            for k in range(len(ex_off) - 1):
                q = lit_word(buf, p, end, ex_flat, ex_off, k)
                if q >= 0:
                    code, p = k, q
                    break
        seq, p = read_int(buf, p, end) if code >= 0 else (-1, -1)
        kind, at, url = KIND_OTHER, -1, -1
        q = lit(buf, p, end, msg) if p >= 0 else -1
        if q >= 0:
            kind, at = KIND_MSG, q
        elif p >= 0:
            u = lit(buf, p, end, rest)
            q = str_end(buf, u, end) if u >= 0 else -1
            q = lit(buf, q + 1, end, data) if q >= 0 else -1
            if q >= 0:
                kind, at, url = KIND_REST, q, u
        else:  # not the layout up to the seq
            code, ts, seq, kind = -1, -1, -1, -1
        env[i, ENV_EX] = code
        env[i, ENV_TS] = ts
        env[i, ENV_SEQ] = seq
        env[i, ENV_KIND] = kind
        env[i, ENV_AT] = at
        env[i, ENV_URL] = url
    return env


def read_envelopes(
    buf: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    todo: np.ndarray,
    exchanges: Sequence[str],
) -> np.ndarray:
    """``envelopes`` of the `todo` lines, exchange codes: indices in `exchanges`."""
    ex_flat, ex_off = pack_words([scan_ex(ex) for ex in exchanges])
    return envelopes(
        buf, starts, ends, todo, SCAN_HEAD, SCAN_SRC, ex_flat, ex_off, SCAN_MSG, SCAN_REST,
        SCAN_DATA,
    )  # fmt: skip


@njit(cache=True)
def digits(buf, s, n):
    v = 0
    for k in range(s, s + n):
        c = buf[k]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(cache=True)
def levels_scan(buf, p, end, row, side_fixed, lv, n_lv, shape, f):
    """[[price, size, string...], ...] at p when `side_fixed` is 0 (bid) or 1 (ask); when it
    is -1, [[side word, price, size, string...], ...] whose side words are those of field f
    of the declaration `shape` (``V_SIDED_LEVELS``, read in place: slices of it cost
    reference counts). Every element a string without escapes: level rows (row, side, price
    span, size span) -> lv. Returns (position after, n_lv, lv) or (-1, ...)."""
    wlo = whi = wo = wside = 0
    if side_fixed < 0:
        wlo, whi = shape[shape[A_WLO] + f], shape[shape[A_WHI] + f]
        wo, wside = shape[A_WOFF], shape[A_WSIDE]
    if p >= end or buf[p] != LBRACKET:
        return -1, n_lv, lv
    p = ws(buf, p + 1, end)
    if p < end and buf[p] == RBRACKET:
        return p + 1, n_lv, lv
    if n_lv + (end - p) // MIN_LEVEL_BYTES + 1 > len(lv):  # (see MIN_LEVEL_BYTES)
        lv = grow_to(lv, n_lv, n_lv + (end - p) // MIN_LEVEL_BYTES + 1)
    while True:
        if p >= end or buf[p] != LBRACKET:
            return -1, n_lv, lv
        p = ws(buf, p + 1, end)
        side = side_fixed
        if side < 0:
            q = str_end(buf, p, end)
            if q < 0:
                return -1, n_lv, lv
            for w in range(wlo, whi):
                if eq_at(buf, p + 1, q, shape, shape[wo + w], shape[wo + w + 1]):
                    side = shape[wside + w]
                    break
            if side < 0:
                return -1, n_lv, lv
            p, done = next_item(buf, q + 1, end)
            if p < 0 or done:
                return -1, n_lv, lv
        q = decimal_end(buf, p, end, True)  # the decimal rule checked while the string is read
        if q < 0:
            return -1, n_lv, lv
        px0, px1 = p + 1, q
        p, done = next_item(buf, q + 1, end)
        if p < 0 or done:
            return -1, n_lv, lv
        q = decimal_end(buf, p, end, False)
        if q < 0:
            return -1, n_lv, lv
        sz0, sz1 = p + 1, q
        p, done = next_item(buf, q + 1, end)
        while p >= 0 and not done:  # further elements: strings
            q = str_end(buf, p, end)
            if q < 0:
                return -1, n_lv, lv
            p, done = next_item(buf, q + 1, end)
        if p < 0:
            return -1, n_lv, lv
        put_level(buf, lv, n_lv, row, side, px0, px1, sz0, sz1)
        n_lv += 1
        p, done = next_item(buf, p, end)
        if p < 0:
            return -1, n_lv, lv
        if done:
            return p, n_lv, lv


@njit(cache=True)
def timed_levels_scan(buf, p, end, row, side, lv, n_lv):
    """[[price, size(, seconds(, str...))], ...] at p, every element a string without escapes:
    level rows of `side` -> lv. Returns (position after, n_lv, lv, latest level time in ns
    (0: none)), the position -1 when anything is not that shape."""
    latest = 0
    if p >= end or buf[p] != LBRACKET:
        return -1, n_lv, lv, 0
    p = ws(buf, p + 1, end)
    if p < end and buf[p] == RBRACKET:
        return p + 1, n_lv, lv, 0
    if n_lv + (end - p) // MIN_LEVEL_BYTES + 1 > len(lv):  # (see MIN_LEVEL_BYTES)
        lv = grow_to(lv, n_lv, n_lv + (end - p) // MIN_LEVEL_BYTES + 1)
    while True:
        if p >= end or buf[p] != LBRACKET:
            return -1, n_lv, lv, 0
        p = ws(buf, p + 1, end)
        k = 0
        px0 = px1 = sz0 = sz1 = 0
        while True:
            if k == 0:  # the decimal rule checked while the string is read
                q = decimal_end(buf, p, end, True)
                px0, px1 = p + 1, q
            elif k == 1:
                q = decimal_end(buf, p, end, False)
                sz0, sz1 = p + 1, q
            else:
                q = str_end(buf, p, end)
            if q < 0:
                return -1, n_lv, lv, 0
            if k == 2:
                t = seconds_ns(buf, p + 1, q)
                if t < 0:
                    return -1, n_lv, lv, 0
                latest = max(latest, t)
            k += 1
            p, done = next_item(buf, q + 1, end)
            if p < 0:
                return -1, n_lv, lv, 0
            if done:
                break
        if k < 2:
            return -1, n_lv, lv, 0
        put_level(buf, lv, n_lv, row, side, px0, px1, sz0, sz1)
        n_lv += 1
        p, done = next_item(buf, p, end)
        if p < 0:
            return -1, n_lv, lv, 0
        if done:
            return p, n_lv, lv, latest


@njit(cache=True)
def iso_raw(buf, s, e):
    """(ok, ns) of YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z without the plausibility range."""
    if e - s < 20 or buf[e - 1] != 90:  # Z
        return False, 0
    if buf[s + 4] != 45 or buf[s + 7] != 45 or buf[s + 10] != 84:
        return False, 0
    if buf[s + 13] != COLON or buf[s + 16] != COLON:
        return False, 0
    y = digits(buf, s, 4)
    mo = digits(buf, s + 5, 2)
    d = digits(buf, s + 8, 2)
    hh = digits(buf, s + 11, 2)
    mi = digits(buf, s + 14, 2)
    ss = digits(buf, s + 17, 2)
    if y < 0 or mo < 0 or d < 0 or hh < 0 or mi < 0 or ss < 0:
        return False, 0
    frac = 0
    p = s + 19
    if p < e - 1:
        if buf[p] != DOT:
            return False, 0
        nf = e - 1 - (p + 1)
        if nf < 1 or nf > 9:
            return False, 0
        frac = digits(buf, p + 1, nf)
        if frac < 0:
            return False, 0
        for _ in range(9 - nf):
            frac *= 10
    if not (1 <= mo <= 12 and 1 <= d <= 31 and hh < 24 and mi < 60 and ss < 61):
        return False, 0
    days = days_from_civil(y, mo, d)
    return True, (days * 86400 + hh * 3600 + mi * 60 + ss) * 1_000_000_000 + frac


@njit(cache=True)
def iso_ns(buf, s, e):
    """As venues.common.iso_to_ns (with the plausibility check), or -1."""
    good, ns = iso_raw(buf, s, e)
    if not good or not plausible_ns(ns):
        return -1
    return ns


@njit(cache=True)
def skip_container(buf, p, end):
    """p at '{' or '[' -> position after its matching close, or -1. Only finds the span: the
    values inside are judged by whoever parses it (strings must pass ``str_end``)."""
    depth = 0
    k = p
    while k < end:
        c = buf[k]
        if c == QUOTE:
            q = str_end(buf, k, end)
            if q < 0:
                return -1
            k = q + 1
            continue
        if c == LBRACE or c == LBRACKET:  # noqa: SIM109 (numba)
            depth += 1
        elif c == RBRACE or c == RBRACKET:  # noqa: SIM109 (numba)
            depth -= 1
            if depth == 0:
                return k + 1
        k += 1
    return -1


# A level row: message row, side, price span, size span, then the first TEXT_BYTES bytes of the
# segment at the price and at the size, copied while the scanner has just read them. Most
# prices and sizes are that short: ``level_arenas`` then reads them from the rows, which it
# walks in order, not from the segment, which it would read a second time long after the
# scan and out of the caches (60 MB of documented shapes mixed: 48 -> 37 ms).
LV_COLS = 10
LV_TEXT = 6  # columns LV_TEXT, +1: the price's bytes; +2, +3: the size's
TEXT_BYTES = 16


@njit(cache=True, inline="always")
def put_level(buf, lv, n_lv, row, side, px0, px1, sz0, sz1):
    """Level row n_lv of `lv` (room made by the caller): spans and their first bytes."""
    lv[n_lv, 0], lv[n_lv, 1], lv[n_lv, 2] = row, side, px0
    lv[n_lv, 3], lv[n_lv, 4], lv[n_lv, 5] = px1, sz0, sz1
    n = len(buf)
    if px0 + TEXT_BYTES <= n:  # (else level_arenas reads the segment: see text_at)
        lv[n_lv, LV_TEXT], lv[n_lv, LV_TEXT + 1] = load8(buf, px0), load8(buf, px0 + 8)
    if sz0 + TEXT_BYTES <= n:
        lv[n_lv, LV_TEXT + 2], lv[n_lv, LV_TEXT + 3] = load8(buf, sz0), load8(buf, sz0 + 8)


@njit(cache=True, inline="always")
def text_at(n_buf, s, e):
    """Whether the level row holds the bytes of the span [s, e) (``put_level``)."""
    return e - s <= TEXT_BYTES and s + TEXT_BYTES <= n_buf


@njit(cache=True, inline="always")
def level_string(buf, lv_bytes, at, s, e, out, o):
    """``copy_decimal_key`` of the span [s, e) of `buf`, read from its level row's bytes
    (`lv_bytes` from `at`) when the row holds them (``text_at``)."""
    if text_at(len(buf), s, e):
        return copy_decimal_key(lv_bytes, at, at + e - s, out, o)
    return copy_decimal_key(buf, s, e, out, o)


@njit(cache=True)
def add_level(buf, lv, n_lv, row, side, px0, px1, sz0, sz1):
    """Append one level row (``put_level``): (lv, n_lv)."""
    lv = grow(lv, n_lv)
    put_level(buf, lv, n_lv, row, side, px0, px1, sz0, sz1)
    return lv, n_lv + 1


@njit(cache=True)
def grow(a, n):
    if n < a.shape[0]:
        return a
    grown = np.empty((a.shape[0] * 2, a.shape[1]), np.int64)
    grown[:n] = a[:n]
    return grown


# The fewest bytes a level of a level list takes (``["1","1"]``; an object level takes more):
# a level scanner makes room in `lv` for every level the rest of the line could hold before
# its loop, so that `lv` is never replaced inside the loop (numba would then count its
# references, atomically, at every turn: about a fifth of the OKX book scan)
MIN_LEVEL_BYTES = 9


def level_capacity(starts: np.ndarray, ends: np.ndarray) -> int:
    """Level rows enough for every level the lines [starts, ends) could hold (each takes
    ``MIN_LEVEL_BYTES`` at least), so that a scanner's level rows never grow: each growth
    copied the rows into an array twice as large and left the old one to the heap, which
    keeps freed memory (fluxforge.heap): 100 MB of Bitget captures held about 470 MB of old
    rows at the peak. Rows never written are address space only, never touched."""
    return 4096 + int((ends - starts).sum()) // MIN_LEVEL_BYTES


@njit(cache=True)
def grow_to(a, n, need):
    """`a`'s first n rows in a new array of at least `need` rows (twice `a`'s, if more)."""
    grown = np.empty((max(need, 2 * a.shape[0]), a.shape[1]), np.int64)
    grown[:n] = a[:n]
    return grown


@njit(cache=True, inline="always")
def key_at(buf, p, end):
    """At a key's opening quote: (key start, key end, position of its value) or (-1, -1, -1)."""
    q = str_end(buf, p, end)
    v = ws(buf, q + 1, end) if q >= 0 else end
    c = buf[v] if v < end else 0
    w = ws(buf, v + 1, end)
    len(buf)  # (buf live to the exits: see the module doc)
    if c != COLON:
        return -1, -1, -1
    return p + 1, q, w


@njit(cache=True, inline="always")
def declared_key_at(buf, p, end, shape, a, b):
    """At a key's opening quote: the position of its value when the key is the declared
    word shape[a:b] (key bytes of a packed declaration), else -1. The key is compared in
    place, without a scan for its closing quote; a declared key is plain ASCII without
    quotes or escapes (``ObjectShape`` checks it), so the key ``key_at`` would read there
    is this word exactly when this compare holds."""
    n = b - a
    q = p + 1 + n  # where the closing quote must be
    ok = p >= 0 and q < end and buf[p] == QUOTE and buf[q] == QUOTE
    j = 0
    while ok and j < n:
        ok = buf[p + 1 + j] == shape[a + j]
        j += 1
    v = ws(buf, q + 1, end) if ok else end
    c = buf[v] if v < end else 0
    w = ws(buf, v + 1, end)
    len(buf), len(shape)  # (arrays live to the one exit: see the module doc)
    return w if c == COLON else -1


@njit(cache=True, inline="always")
def next_key(buf, p, end):
    """After a value: (position of the next key, 0) after ',', (position after '}', 1) at the
    end of the object, or (-1, -1)."""
    p = ws(buf, p, end)
    c = buf[p] if 0 <= p < end else 0
    q = ws(buf, p + 1, end)
    len(buf)  # (buf live to the exits: see the module doc)
    if c == COMMA:
        return q, 0
    if c == RBRACE:
        return p + 1, 1
    return -1, -1


@njit(cache=True)
def next_item(buf, p, end):
    """After an array element: (position of the next element, 0) after ',', (position after
    ']', 1) at the end of the array, or (-1, -1). The array twin of ``next_key``."""
    p = ws(buf, p, end)
    c = buf[p] if 0 <= p < end else 0
    q = ws(buf, p + 1, end)
    len(buf)  # (buf live to the exits: see the module doc)
    if c == COMMA:
        return q, 0
    if c == RBRACKET:
        return p + 1, 1
    return -1, -1


@njit(cache=True)
def gather(buf, s, e):
    """The bytes of the spans s[i]:e[i] of `buf`, one after another, and their offsets. The
    spans lie a line apart in a segment far bigger than the caches: each span's bytes are
    asked for `_AHEAD` spans before they are copied (as ``_span_run`` does)."""
    src = borrowed(buf)
    lens = e - s
    offsets = np.zeros(len(s) + 1, np.int64)
    for i in range(len(s)):
        offsets[i + 1] = offsets[i] + lens[i]
    out = np.empty(offsets[-1], np.uint8)
    n = len(s)
    for i in range(n):  # a byte loop: a slice copy per span costs ~10x more in numba
        if i + _AHEAD < n:
            prefetch(src, s[i + _AHEAD])
        o = offsets[i]
        a = s[i]
        for k in range(lens[i]):
            out[o + k] = src[a + k]
    len(buf)  # (buf live to the exit: see the module doc)
    return out, offsets


@njit(cache=True)
def level_order(lv, msg_ok, n_msg):
    """The level rows `lv` (message row, side 0/1, ...) of the messages where `msg_ok`,
    ordered per message, bids then asks, each side in row order (a stable counting sort on
    message * 2 + side): (order, levels per message, first position of each message, price
    bytes and size bytes per message, and `low`: the lowest row of messages m and after, so
    that the rows below ``low[m]`` are spent once messages before m are laid out). The byte
    totals come from the counting pass, which reads the rows anyway, so ``level_arenas``
    need not walk every row once more for them."""
    start = np.zeros(2 * n_msg + 1, np.int64)
    px_bytes = np.zeros(n_msg, np.int64)
    sz_bytes = np.zeros(n_msg, np.int64)
    low = np.full(n_msg + 1, len(lv), np.int64)
    for j in range(len(lv)):
        r = lv[j, 0]
        if msg_ok[r]:
            start[2 * r + lv[j, 1] + 1] += 1
            px_bytes[r] += lv[j, 3] - lv[j, 2]
            sz_bytes[r] += lv[j, 5] - lv[j, 4]
            low[r] = min(low[r], j)
    for m in range(n_msg - 1, -1, -1):
        low[m] = min(low[m], low[m + 1])
    for k in range(2 * n_msg):
        start[k + 1] += start[k]
    order = np.empty(start[2 * n_msg], np.int64)
    at = start[: 2 * n_msg].copy()
    for j in range(len(lv)):
        r = lv[j, 0]
        if msg_ok[r]:
            key = 2 * r + lv[j, 1]
            order[at[key]] = j
            at[key] += 1
    first = start[0 : 2 * n_msg : 2].copy()
    counts = start[2 : 2 * n_msg + 1 : 2] - first
    return order, counts, first, px_bytes, sz_bytes, low


@njit(cache=True)
def arena_layout(counts, px_bytes, sz_bytes, rows, bounds, n_msg):
    """Where ``level_arenas`` puts the levels of the messages of every group (group g:
    `rows[bounds[g]:bounds[g+1]]`, ascending; `counts`, `px_bytes`, `sz_bytes` per message:
    ``level_order``): per message its group (`k_of`: its position in `rows`, -1 if in none;
    `grp`: the group of each position), per group its first level and arena byte (`lv_at`,
    `ar_at`), per position its first level, price byte and size byte inside its group (`x_k`,
    `p_k`, `s_k`), and the level offsets of every group's messages."""
    n_grp = len(bounds) - 1
    n_rows = len(rows)
    k_of = np.full(n_msg, -1, np.int64)
    grp = np.empty(n_rows, np.int64)
    for g in range(n_grp):
        for k in range(bounds[g], bounds[g + 1]):
            k_of[rows[k]] = k
            grp[k] = g
    lv_at = np.zeros(n_grp + 1, np.int64)
    ar_at = np.zeros(n_grp + 1, np.int64)
    level_offsets = np.empty(n_rows + n_grp, np.int64)
    x_k = np.empty(n_rows, np.int64)
    p_k = np.empty(n_rows, np.int64)
    s_k = np.empty(n_rows, np.int64)
    for g in range(n_grp):
        n_px = 0
        n_sz = 0
        x = 0
        level_offsets[bounds[g] + g] = 0
        for k in range(bounds[g], bounds[g + 1]):
            x_k[k] = x
            p_k[k] = n_px
            s_k[k] = n_sz
            x += counts[rows[k]]
            n_px += px_bytes[rows[k]]
            n_sz += sz_bytes[rows[k]]
            level_offsets[k + g + 1] = x
        for k in range(bounds[g], bounds[g + 1]):
            s_k[k] += n_px
        lv_at[g + 1] = lv_at[g] + x
        ar_at[g + 1] = ar_at[g] + n_px + n_sz
    return k_of, grp, lv_at, ar_at, x_k, p_k, s_k, level_offsets


@njit(cache=True)
def level_arenas(buf, lv, lv_bytes, order, first, counts, layout, m0, m1, cols, scale, max_int):
    """The levels of messages [m0, m1) (in row order: the segment bytes are read in order,
    Coinbase levels 7.0 vs 9.4 ms on a 30 MB mixed segment, not group by group), each laid
    out where ``arena_layout`` puts it (`layout`) in the columns `cols`: side, one byte arena
    per group holding its price strings then its size strings, their offsets (from 0 in each
    group), the float keys of each price and size (``copy_decimal_key``; `slow` marks the
    levels whose keys it could not give), and the lake decimal of each price then each size
    (decimal128 words at `scale`, at most `max_int` integer digits: ``scaled_words``, from the
    digits the key was read from, up to 18 of them); `exact[g]` is cleared for a group with a
    level without them (the book engine then parses that group's strings). A string the
    level row holds (``text_at``) is read from the row (`lv_bytes`: `lv`'s bytes)."""
    # read-only arguments as borrowed views (bytescan.borrowed: no atomic counts per call)
    buf, lv_bytes = borrowed(buf), borrowed(lv_bytes)
    k_of, grp, lv_at, ar_at, x_k, p_k, s_k = layout[:7]
    side, arena, offsets, pkey, skey, slow, words, exact = cols
    into = borrowed(arena)  # (the caller's: alive for every write through the view)
    row_bytes = 8 * lv.shape[1]
    short = max_int >= 18  # every fast key's integer part fits (it has at most 18 digits)
    for m in range(m0, m1):  # row order: the segment bytes in order
        k = k_of[m]
        if k < 0:
            continue
        g = grp[k]
        base = ar_at[g]
        o_at = 2 * lv_at[g] + g
        n_g = lv_at[g + 1] - lv_at[g]
        w_px = 4 * lv_at[g]  # the group's price words, then its size words
        w_sz = w_px + 2 * n_g
        xl = x_k[k]
        o_px = p_k[k]
        o_sz = s_k[k]
        for t in range(first[m], first[m] + counts[m]):
            j = order[t]
            x = lv_at[g] + xl
            side[x] = lv[j, 1]
            a, b = lv[j, 2], lv[j, 3]
            at = j * row_bytes + 8 * LV_TEXT
            pkey[x], good, pw, pf = level_string(buf, lv_bytes, at, a, b, into, base + o_px)
            o_px += b - a
            offsets[o_at + xl + 1] = o_px
            a, b = lv[j, 4], lv[j, 5]
            at += TEXT_BYTES  # (the size's bytes follow the price's in the row)
            skey[x], good2, sw, sf = level_string(buf, lv_bytes, at, a, b, into, base + o_sz)
            o_sz += b - a
            offsets[o_at + n_g + xl + 1] = o_sz
            slow[x] = not (good and good2)
            if pf < 0 or sf < 0 or pf > scale or sf > scale or not short:
                exact[g] = False
            else:
                words[w_px + 2 * xl], words[w_px + 2 * xl + 1] = scaled_words(pw, pf, scale)
                words[w_sz + 2 * xl], words[w_sz + 2 * xl + 1] = scaled_words(sw, sf, scale)
            xl += 1
    len(buf), len(arena)  # (buf and arena live to the exit: see the module doc)


def spans(buf: np.ndarray, s: np.ndarray, e: np.ndarray, large: bool = False) -> pa.Array:
    """Arrow strings from (start, end) byte spans of `buf` (ASCII, checked by the scanner)."""
    data, offsets = gather(buf, np.ascontiguousarray(s), np.ascontiguousarray(e))
    if large:
        return pa.LargeStringArray.from_buffers(len(s), pa.py_buffer(offsets), pa.py_buffer(data))
    return pa.StringArray.from_buffers(
        len(s), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)
    )


# FNV-1a's 64-bit offset basis (as a signed int64) and prime; the hash goes 8 bytes at a time,
# then a final mix, since the table takes the low bits and a product's low bits see only the
# low bytes of a word
_FNV_BASIS = -3750763034362895579
_FNV_PRIME = 1099511628211
_MIX = -4658895280553007687  # 0xbf58476d1ce4e5b9 (splitmix64's first multiplier)
_FIRST_SLOTS = 16  # (a power of 2) the distinct values are usually a handful
# rows ahead whose bytes are asked for: the spans lie a line apart in a segment far bigger
# than the caches, and a row's hash and probes wait on its bytes (measured over 420k spans
# 237 bytes apart in 100 MB: 31-42 ms -> 10-15 ms)
_AHEAD = 16


@njit(cache=True)
def _span_hash(buf, a, b):
    h = _FNV_BASIS ^ (b - a)
    p = a
    while p + 8 <= b:
        h = (h ^ load8(buf, p)) * _FNV_PRIME
        p += 8
    while p < b:
        h = (h ^ buf[p]) * _FNV_PRIME
        p += 1
    h = (h ^ (h >> 31)) * _MIX
    len(buf)  # (buf live to the exit: see the module doc)
    return h ^ (h >> 29)


@njit(cache=True)
def _span_eq(buf, a, b, c, d):
    """buf[a:b] == buf[c:d]."""
    same = b - a == d - c
    k = 0
    while same and k + 8 <= b - a:
        same = load8(buf, a + k) == load8(buf, c + k)
        k += 8
    while same and k < b - a:
        same = buf[a + k] == buf[c + k]
        k += 1
    len(buf)  # (buf live to the exit: see the module doc)
    return same


@njit(cache=True)
def _doubled(a, n):
    """`a` (1-d) in a new array of n items."""
    grown = np.empty(n, np.int64)
    grown[: len(a)] = a
    return grown


@njit(cache=True)
def _slots_of(hashes, k, n_slots):
    """A table of `n_slots` (a power of 2) slots holding codes 0..k-1 by their hashes."""
    slots = np.full(n_slots, -1, np.int64)
    mask = n_slots - 1
    for c in range(k):
        j = hashes[c] & mask
        while slots[j] >= 0:
            j = (j + 1) & mask
        slots[j] = c
    return slots


@njit(cache=True)
def _span_run(buf, s, e, i, codes, first, hashes, slots, k):
    """Codes rows i.. until the table is half full (k == len(first)): (next row, k)."""
    src = borrowed(buf)
    mask = len(slots) - 1
    while i < len(s) and k < len(first):
        if i + _AHEAD < len(s):
            prefetch(src, s[i + _AHEAD])
        a, b = s[i], e[i]
        h = _span_hash(src, a, b)
        j = h & mask
        c = slots[j]
        while c >= 0 and not (hashes[c] == h and _span_eq(src, s[first[c]], e[first[c]], a, b)):
            j = (j + 1) & mask
            c = slots[j]
        if c < 0:
            c = k
            first[k], hashes[k], slots[j] = i, h, k
            k += 1
        codes[i] = c
        i += 1
    return i, k


@njit(cache=True)
def span_codes(buf, s, e):
    """(code of each span among the distinct byte strings, numbered in order of first
    appearance: the indices Arrow's ``dictionary_encode`` gives their strings; row of each
    distinct string's first appearance). An open-addressing table of codes, linear probing,
    doubled when half full; bytes compared where the hashes match. (The rows are coded by
    ``_span_run`` between two doublings: arrays replaced inside the loop would have their
    references counted at every row.)"""
    codes = np.empty(len(s), np.int64)
    first = np.empty(_FIRST_SLOTS // 2, np.int64)
    hashes = np.empty(_FIRST_SLOTS // 2, np.int64)
    slots = np.full(_FIRST_SLOTS, -1, np.int64)
    i, k = _span_run(buf, s, e, 0, codes, first, hashes, slots, 0)
    while i < len(s):
        first, hashes = _doubled(first, 2 * k), _doubled(hashes, 2 * k)
        slots = _slots_of(hashes, k, 4 * k)
        i, k = _span_run(buf, s, e, i, codes, first, hashes, slots, k)
    return codes, first[:k]


@njit(cache=True)
def _int_run(keys, i, codes, first, hashes, slots, k):
    """``_span_run`` of int64 keys."""
    mask = len(slots) - 1
    while i < len(keys) and k < len(first):
        x = keys[i]
        h = (x ^ (x >> 31)) * _MIX
        h ^= h >> 29
        j = h & mask
        c = slots[j]
        while c >= 0 and keys[first[c]] != x:
            j = (j + 1) & mask
            c = slots[j]
        if c < 0:
            c = k
            first[k], hashes[k], slots[j] = i, h, k
            k += 1
        codes[i] = c
        i += 1
    return i, k


@njit(cache=True)
def int_codes(keys):
    """``span_codes`` of int64 keys: (code of each key among the distinct keys, numbered in
    order of first appearance; row of each distinct key's first appearance)."""
    codes = np.empty(len(keys), np.int64)
    first = np.empty(_FIRST_SLOTS // 2, np.int64)
    hashes = np.empty(_FIRST_SLOTS // 2, np.int64)
    slots = np.full(_FIRST_SLOTS, -1, np.int64)
    i, k = _int_run(keys, 0, codes, first, hashes, slots, 0)
    while i < len(keys):
        first, hashes = _doubled(first, 2 * k), _doubled(hashes, 2 * k)
        slots = _slots_of(hashes, k, 4 * k)
        i, k = _int_run(keys, i, codes, first, hashes, slots, k)
    return codes, first[:k]


def distinct_spans(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """(code of each span, distinct strings by code): what ``spans(buf, s, e)``'s
    ``dictionary_encode()`` gives as indices (int64) and dictionary, without building the
    strings of every row."""
    codes, first = span_codes(buf, s, e)
    return codes, spans(buf, s[first], e[first])


@njit(cache=True)
def signed_int(buf, p, end):
    """(value, position after) of a JSON integer (optional '-', <= 18 digits), or (0, -1)."""
    neg = (buf[p] if p < end else 0) == 45
    if neg:
        p += 1
    k = p
    v = 0
    while k < end and 48 <= buf[k] <= 57:
        v = v * 10 + (buf[k] - 48)
        k += 1
    first = buf[p] if k > p else 0
    len(buf)  # (buf live to the exits: see the module doc)
    if k == p or k - p > 18 or (first == 48 and k - p > 1) or (neg and v == 0):
        return 0, -1
    return (-v if neg else v), k


@njit(cache=True)
def ms_any(buf, p, end):
    """venues.common.ms_to_ns of a JSON integer or a digit string at p: (ns, position after)
    or (0, -1)."""
    if (buf[p] if p < end else 0) == QUOTE:
        q = str_end(buf, p, end)
        v, after = -1, -1
        if q > p + 1 and q - p - 1 <= 13:
            v, after = 0, q + 1
            for k in range(p + 1, q):
                c = buf[k]
                if c < 48 or c > 57:
                    v = -1
                    break
                v = v * 10 + (c - 48)
    else:
        v, after = read_int(buf, p, end)
    len(buf)  # (buf live to the exits: see the module doc)
    if after < 0 or v < TS_MIN_MS or v > TS_MAX_MS:
        return 0, -1
    return v * 1_000_000, after


@njit(cache=True)
def seconds_ns(buf, s, e):
    """common.seconds_to_ns ("1618678133.136361" -> ns, fraction cut at 9 digits) with its
    plausibility range, or -1."""
    whole = n_int = frac = n_frac = 0
    dot = -1
    bad = False
    for k in range(s, e):  # one pass, no early exit (see the module doc)
        c = buf[k]
        if c == DOT and dot < 0 and n_int > 0:
            dot = k
        elif 48 <= c <= 57 and dot < 0:
            whole = whole * 10 + (c - 48)
            n_int += 1
        elif 48 <= c <= 57:
            if n_frac < 9:
                frac = frac * 10 + (c - 48)
                n_frac += 1
        else:
            bad = True
    len(buf)  # (buf live to the exit: see the module doc)
    for _ in range(9 - n_frac):
        frac *= 10
    # at most 10 integer digits (no int64 overflow below), a dot needs a decimal after it
    ok = not bad and 0 < n_int <= 10 and dot != e - 1 and whole <= TS_MAX_S
    ns = (whole if ok else 0) * 1_000_000_000 + frac
    return ns if ok and plausible_ns(ns) else -1


@njit(cache=True)
def number_dec_end(buf, p, end, positive):
    """A decimal sent as a JSON number (Kraken v2) at p: the position after it when its text
    is a plain decimal (> 0 when `positive`) and the whole JSON number, else -1. A string
    holding a plain decimal is accepted too (then: the position after its closing quote)."""
    if p < end and buf[p] == QUOTE:
        q = decimal_end(buf, p, end, positive)
        return -1 if q < 0 else q + 1
    k = p
    while k < end and (48 <= buf[k] <= 57 or buf[k] == DOT):
        k += 1
    if k == p or not plain_decimal(buf, p, k, positive) or number_end(buf, p, end) != k:
        return -1
    return k


@njit(cache=True)
def object_levels_scan(buf, p, end, row, side, lv, n_lv, k_px, k_qty):
    """[{"price": num, "qty": num}, ...] at p (each key once, no other): level rows of
    `side` -> lv. Returns (position after, n_lv, lv) or (-1, ...)."""
    if p >= end or buf[p] != LBRACKET:
        return -1, n_lv, lv
    p = ws(buf, p + 1, end)
    if p < end and buf[p] == RBRACKET:
        return p + 1, n_lv, lv
    if n_lv + (end - p) // MIN_LEVEL_BYTES + 1 > len(lv):  # (see MIN_LEVEL_BYTES)
        lv = grow_to(lv, n_lv, n_lv + (end - p) // MIN_LEVEL_BYTES + 1)
    while True:
        if p >= end or buf[p] != LBRACE:
            return -1, n_lv, lv
        p = ws(buf, p + 1, end)
        px0 = px1 = sz0 = sz1 = -1
        while True:
            ks, ke, p = key_at(buf, p, end)
            if p < 0:
                return -1, n_lv, lv
            if eq(buf, ks, ke, k_px) and px0 < 0:
                q = number_dec_end(buf, p, end, True)
                px0, px1 = (p + 1, q - 1) if buf[p] == QUOTE else (p, q)
            elif eq(buf, ks, ke, k_qty) and sz0 < 0:
                q = number_dec_end(buf, p, end, False)
                sz0, sz1 = (p + 1, q - 1) if buf[p] == QUOTE else (p, q)
            else:
                return -1, n_lv, lv
            if q < 0:
                return -1, n_lv, lv
            p, done = next_key(buf, q, end)
            if p < 0:
                return -1, n_lv, lv
            if done:
                break
        if px0 < 0 or sz0 < 0:
            return -1, n_lv, lv
        put_level(buf, lv, n_lv, row, side, px0, px1, sz0, sz1)
        n_lv += 1
        p, done = next_item(buf, p, end)
        if p < 0:
            return -1, n_lv, lv
        if done:
            return p, n_lv, lv


# ---------------------------------------------------------------- declared flat objects
# A venue event that is one JSON object of scalar fields (and level lists) is declared once as
# an ``ObjectShape`` (fluxforge.wire.shape): per key, what its value must be and which output
# column receives it. One numba loop (``flat_object``) then reads any such object, in any key
# order, instead of one hand-written key loop per event type.
_TRUE = np.frombuffer(b"true", np.uint8).copy()
_FALSE = np.frombuffer(b"false", np.uint8).copy()
_NULL = np.frombuffer(b"null", np.uint8).copy()
_PRICE = np.frombuffer(b"price", np.uint8).copy()
_QTY = np.frombuffer(b"qty", np.uint8).copy()


@njit(cache=True)
def number_end(buf, p, end):
    """Position after a JSON number at p (RFC 8259 grammar), or -1."""
    k = p
    c = buf[k] if k < end else 0
    if c == 45:  # -
        k += 1
        c = buf[k] if k < end else 0
    ok = 48 <= c <= 57
    if ok:
        k += 1
        if c != 48:
            while k < end and 48 <= buf[k] <= 57:
                k += 1
        c = buf[k] if k < end else 0
        if c == DOT:
            k += 1
            d = k
            while k < end and 48 <= buf[k] <= 57:
                k += 1
            ok = k > d
            c = buf[k] if k < end else 0
        if ok and (c == 101 or c == 69):  # e E
            k += 1
            c = buf[k] if k < end else 0
            if c == 43 or c == 45:  # + -
                k += 1
            d = k
            while k < end and 48 <= buf[k] <= 57:
                k += 1
            ok = k > d
    len(buf)  # (buf live to the exits: see the module doc)
    return k if ok else -1


@njit(cache=True)
def scalar_end(buf, p, end):
    """Position after a JSON scalar at p (string without escapes, number, true, false,
    null), or -1: what an open shape skips under keys it does not declare."""
    c = buf[p] if p < end else 0
    if c == QUOTE:
        q = str_end(buf, p, end)
        r = -1 if q < 0 else q + 1
    elif c == 45 or 48 <= c <= 57:
        r = number_end(buf, p, end)
    elif c == 116:  # t
        r = lit(buf, p, end, _TRUE)
    elif c == 102:  # f
        r = lit(buf, p, end, _FALSE)
    else:  # (past the end too: then no literal fits)
        r = lit(buf, p, end, _NULL)
    len(buf)  # (buf live to the exits: see the module doc)
    return r


# the longest integer ``plain_scalar_end`` takes: orjson reads a JSON integer past 64 bits
# as a float, and refuses one of 309 digits or more (infinity)
JSON_INT_DIGITS = 300


@njit(cache=True)
def plain_scalar_end(buf, p, end):
    """Position after a value at p that is surely valid JSON and plain: a string without
    escapes, an integer without fraction or exponent that orjson reads (up to
    ``JSON_INT_DIGITS`` digits: an int, or a float past 64 bits, such as the 20-digit
    ``connectionID`` of Kraken's system status), true, false or null; else -1 (the per-line
    path judges the rest)."""
    if p >= end:
        return -1
    c = buf[p]
    if c == QUOTE:
        q = str_end(buf, p, end)
        return -1 if q < 0 else q + 1
    if c == 45 or 48 <= c <= 57:  # - or digit
        k = p + 1 if c == 45 else p
        q = k
        while q < end and 48 <= buf[q] <= 57:
            q += 1
        if q == k or q - k > JSON_INT_DIGITS or (buf[k] == 48 and q - k > 1):  # (no "01")
            return -1
        if q < end and (buf[q] == 46 or buf[q] == 101 or buf[q] == 69):  # . e E
            return -1
        return q
    for w in (_TRUE, _FALSE, _NULL):
        q = lit(buf, p, end, w)
        if q >= 0:
            return q
    return -1


@njit(cache=True)
def scalar_object_end(buf, p, end):
    """p at '{' of a non-empty object of plain scalars (``plain_scalar_end``) -> position
    after its '}', or -1."""
    p = ws(buf, p + 1, end)
    while True:
        _ks, _ke, p = key_at(buf, p, end)
        if p < 0:
            return -1
        p = plain_scalar_end(buf, p, end)
        if p < 0:
            return -1
        p, done = next_key(buf, p, end)
        if p < 0:
            return -1
        if done:
            return p


@njit(cache=True)
def control_object_end(buf, p, end, key, words, word_off, refused, refused_off):
    """The object at p ('{') when it is surely valid JSON and a venue's control event: `key`
    once, its value one of the packed `words`; none of the packed keys `refused`; every other
    value a plain scalar or an object of them (``plain_scalar_end``, ``scalar_object_end``).
    Position after it, else -1 (the per-line path judges the rest)."""
    p = ws(buf, p + 1, end)
    seen = False
    while True:
        ks, ke, p = key_at(buf, p, end)
        if p < 0:
            return -1
        for r in range(len(refused_off) - 1):
            if eq_word(buf, ks, ke, refused, refused_off, r):
                return -1
        if eq(buf, ks, ke, key):
            q = str_end(buf, p, end)
            hit = False
            for c in range(len(word_off) - 1):
                if q >= 0 and eq_word(buf, p + 1, q, words, word_off, c):
                    hit = True
            if seen or not hit:
                return -1
            seen = True
            p = q + 1
        elif p < end and buf[p] == LBRACE:
            p = scalar_object_end(buf, p, end)
        else:
            p = plain_scalar_end(buf, p, end)
        if p < 0:
            return -1
        p, done = next_key(buf, p, end)
        if p < 0:
            return -1
        if done:
            return p if seen else -1


@njit(cache=True)
def flat_object(buf, p, end, shape, out, row, lv, n_lv):
    """The object at p ('{'; '[' for an array shape) by its declaration `shape`
    (``ObjectShape.args``: one packed int64 array): each key at most once, each column from
    one key, no other key (open shapes: other keys with scalar values are skipped), the
    required keys present.
    Returns (position after it, mask of the keys seen, lv, n_lv); position -1 when the object
    does not fit the declaration."""
    nf = shape[A_NF]
    ko, kd, cl, wl, wh, wo = (shape[A_KOFF], shape[A_KIND], shape[A_COL], shape[A_WLO],
                              shape[A_WHI], shape[A_WOFF])  # fmt: skip
    is_open = (shape[A_FLAGS] & F_OPEN) != 0
    is_array = (shape[A_FLAGS] & F_ARRAY) != 0
    p = ws(buf, p + 1, end)
    seen = 0
    cmask = 0
    pos = 0
    nxt = 0
    while True:
        if is_array:
            if pos >= nf:
                return -1, seen, lv, n_lv
            f = pos
            pos += 1
        else:
            # the key after the last one met compared in place (``declared_key_at``): keys
            # sent in their declared order (the usual case) match at the first compare; else
            # the one declared key its first byte can name (``A_FIRST``), each of them when
            # several start with that byte
            f = -1
            v = (
                declared_key_at(buf, p, end, shape, shape[ko + nxt], shape[ko + nxt + 1])
                if nf
                else -1
            )
            if v >= 0:
                f = nxt
            else:
                c = buf[p + 1] if p + 1 < end else 0
                cand = shape[shape[A_FIRST] + c] if c < 128 else NO_KEY
                if cand >= 0:
                    v = declared_key_at(buf, p, end, shape, shape[ko + cand], shape[ko + cand + 1])
                    if v >= 0:
                        f = cand
                elif cand == SEVERAL_KEYS:
                    for k in range(nf):
                        v = declared_key_at(buf, p, end, shape, shape[ko + k], shape[ko + k + 1])
                        if v >= 0:
                            f = k
                            break
            if f >= 0:
                p = v
            else:  # no declared key (the same ``key_at`` would have found none of them)
                _ks, _ke, p = key_at(buf, p, end)
                if p < 0:
                    return -1, seen, lv, n_lv
                if not is_open:
                    return -1, seen, lv, n_lv
                p = scalar_end(buf, p, end)
                if p < 0:
                    return -1, seen, lv, n_lv
                p, done = next_key(buf, p, end)
                if p < 0:
                    return -1, seen, lv, n_lv
                if done:
                    break
                continue
            if seen & (1 << f):
                return -1, seen, lv, n_lv
            nxt = f + 1 if f + 1 < nf else 0
        seen |= 1 << f
        kind = shape[kd + f]
        col = shape[cl + f]
        if col >= 0:  # one key per column (alternative names: the per-line path decides)
            if cmask & (1 << col):
                return -1, seen, lv, n_lv
            cmask |= 1 << col
        if kind == V_INT or kind == V_INT_SPAN or kind == V_MS:  # noqa: SIM109 (numba)
            v, q = read_int(buf, p, end)
            if q < 0:
                return -1, seen, lv, n_lv
            if kind == V_MS:
                if v < TS_MIN_MS or v > TS_MAX_MS:
                    return -1, seen, lv, n_lv
                v *= 1_000_000
            if kind == V_INT_SPAN:
                out[col], out[col + 1] = p, q
            elif col >= 0:
                out[col] = v
            p = q
        elif kind == V_SINT:
            v, p = signed_int(buf, p, end)
            if p < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = v
        elif kind == V_MS_ANY:
            v, p = ms_any(buf, p, end)
            if p < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = v
        elif kind == V_STR or kind == V_DEC or kind == V_POS or kind == V_TEXT:  # noqa: SIM109
            if kind == V_STR or kind == V_TEXT:  # noqa: SIM109 (numba)
                q = str_end(buf, p, end)
            else:
                q = decimal_end(buf, p, end, kind == V_POS)
            if q < 0 or (kind == V_TEXT and q == p + 1):
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col], out[col + 1] = p + 1, q
            p = q + 1
        elif kind == V_OPT_DEC:
            q = lit(buf, p, end, _NULL)
            if q >= 0:
                p = q  # null: no value
            elif p + 1 < end and buf[p] == QUOTE and buf[p + 1] == QUOTE:
                p += 2  # "": no value
            else:
                q = decimal_end(buf, p, end, False)
                if q < 0:
                    return -1, seen, lv, n_lv
                if col >= 0:
                    out[col], out[col + 1] = p + 1, q
                p = q + 1
        elif kind == V_ID:
            if p < end and buf[p] == QUOTE:
                q = str_end(buf, p, end)
                if q < 0 or q == p + 1:
                    return -1, seen, lv, n_lv
                s0, s1, p = p + 1, q, q + 1
            else:
                _v, q = read_int(buf, p, end)
                if q < 0:
                    return -1, seen, lv, n_lv
                s0, s1, p = p, q, q
            if col >= 0:
                out[col], out[col + 1] = s0, s1
        elif kind == V_ISO:
            q = str_end(buf, p, end)
            if q < 0:
                return -1, seen, lv, n_lv
            v = iso_ns(buf, p + 1, q)
            if v < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = v
            p = q + 1
        elif kind == V_SCALAR:
            p = scalar_end(buf, p, end)
            if p < 0:
                return -1, seen, lv, n_lv
        elif kind == V_NUM or kind == V_NUM_POS:  # noqa: SIM109 (numba)
            q = lit(buf, p, end, _NULL) if kind == V_NUM else -1
            if q >= 0:
                p = q  # null: no value
            else:
                q = number_dec_end(buf, p, end, kind == V_NUM_POS)
                if q < 0:
                    return -1, seen, lv, n_lv
                if col >= 0:
                    quoted = buf[p] == QUOTE
                    out[col], out[col + 1] = (p + 1, q - 1) if quoted else (p, q)
                p = q
        elif kind == V_SECONDS:
            q = str_end(buf, p, end)
            if q < 0:
                return -1, seen, lv, n_lv
            v = seconds_ns(buf, p + 1, q)
            if v < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = v
            p = q + 1
        elif kind == V_BIDS_OBJ or kind == V_ASKS_OBJ:  # noqa: SIM109 (numba)
            side = 0 if kind == V_BIDS_OBJ else 1
            p, n_lv, lv = object_levels_scan(buf, p, end, row, side, lv, n_lv, _PRICE, _QTY)
            if p < 0:
                return -1, seen, lv, n_lv
        elif kind == V_BOOL:
            if lit(buf, p, end, _TRUE) >= 0:
                v, p = 1, p + 4
            elif lit(buf, p, end, _FALSE) >= 0:
                v, p = 0, p + 5
            else:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = v
        elif kind == V_ENUM:
            q = str_end(buf, p, end)
            if q < 0:
                return -1, seen, lv, n_lv
            idx = -1
            for w in range(shape[wl + f], shape[wh + f]):
                if eq_at(buf, p + 1, q, shape, shape[wo + w], shape[wo + w + 1]):
                    idx = w - shape[wl + f]
                    break
            if idx < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = idx + 1
            p = q + 1
        elif kind == V_SIDED_LEVELS:
            p, n_lv, lv = levels_scan(buf, p, end, row, -1, lv, n_lv, shape, f)
            if p < 0:
                return -1, seen, lv, n_lv
        elif kind == V_ISO_OPT:
            q = str_end(buf, p, end)
            if q < 0:
                return -1, seen, lv, n_lv
            good, v = iso_raw(buf, p + 1, q)
            if not good or (v > 0 and not plausible_ns(v)):
                return -1, seen, lv, n_lv
            if v > 0 and col >= 0:
                out[col] = v  # (the epoch or earlier: no time)
            p = q + 1
        elif kind == V_LIST or kind == V_NESTED:  # noqa: SIM109 (numba)
            c = buf[p] if p < end else 0
            if c != LBRACKET and (kind == V_LIST or c != LBRACE):
                return -1, seen, lv, n_lv
            q = skip_container(buf, p, end)
            if q < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col], out[col + 1] = p, q
            p = q
        elif kind == V_TIMED_BIDS or kind == V_TIMED_ASKS:  # noqa: SIM109 (numba)
            side = 0 if kind == V_TIMED_BIDS else 1
            p, n_lv, lv, t = timed_levels_scan(buf, p, end, row, side, lv, n_lv)
            if p < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = t
        elif kind == V_DIGITS:
            q = str_end(buf, p, end)
            if q < 0 or q == p + 1 or q - p - 1 > 18:
                return -1, seen, lv, n_lv
            v = digits(buf, p + 1, q - p - 1)
            if v < 0:
                return -1, seen, lv, n_lv
            if col >= 0:
                out[col] = v
            p = q + 1
        else:  # V_BIDS / V_ASKS
            side = 0 if kind == V_BIDS else 1
            p, n_lv, lv = levels_scan(buf, p, end, row, side, lv, n_lv, shape, f)
            if p < 0:
                return -1, seen, lv, n_lv
        if is_array:
            p, done = next_item(buf, p, end)
        else:
            p, done = next_key(buf, p, end)
        if p < 0:
            return -1, seen, lv, n_lv
        if done:
            break
    if not has_required(shape, seen):
        return -1, seen, lv, n_lv
    return p, seen, lv, n_lv


@njit(cache=True)
def has_required(shape, seen):
    """Whether the keys in the `seen` mask cover every required group of the declaration
    `shape` (``ObjectShape.args``; per line: ``fluxforge.venues.common.missing_field``)."""
    ok = True
    for j in range(shape[A_NNEED]):  # one pass, no early exit (see the module doc)
        g = shape[shape[A_NEED] + j]
        ok = ok and (g == 0 or (seen & g) != 0)
    len(shape)
    return ok


@njit(cache=True)
def key_index(buf, ks, ke, shape):
    """The field number of the key buf[ks:ke] in the declaration `shape`, or -1."""
    ko = shape[A_KOFF]
    n = ke - ks
    found = -1
    for f in range(shape[A_NF]):  # one exit (see the module doc)
        a = shape[ko + f]
        if found < 0 and n == shape[ko + f + 1] - a:
            j = 0
            while j < n and buf[ks + j] == shape[a + j]:
                j += 1
            if j == n:
                found = f
    len(buf), len(shape)
    return found


@njit(cache=True)
def declared_keys(buf, p, end, shape):
    """The object at p ('{'), whatever its keys: (position after it, mask of the keys of the
    declaration `shape` among its top-level keys), the position -1 when no matching close is
    found (``skip_container``'s walk: the values are judged by whoever parses the object).
    What tells an object of another shape from a broken one of the declared shape."""
    seen = 0
    depth = 0
    k = p
    after = -1
    while k < end:  # one exit, the arrays' last use after it (see the module doc)
        c = buf[k]
        if c == QUOTE:
            q = str_end(buf, k, end)
            if q < 0:
                break
            if depth == 1:  # a top-level key when a ':' follows (valid JSON: exactly then)
                v = q + 1
                while v < end and (buf[v] == 32 or buf[v] == 9):
                    v += 1
                f = key_index(buf, k + 1, q, shape) if v < end and buf[v] == COLON else -1
                if f >= 0:
                    seen |= 1 << f
            k = q + 1
            continue
        if c == LBRACE or c == LBRACKET:  # noqa: SIM109 (numba)
            depth += 1
        elif c == RBRACE or c == RBRACKET:  # noqa: SIM109 (numba)
            depth -= 1
            if depth == 0:
                after = k + 1
                break
        k += 1
    len(buf), len(shape)
    return after, seen


def opt_spans(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> pa.Array:
    """``spans`` where a start of -1 gives null (a field the venue left empty)."""
    valid = s >= 0
    if valid.all():
        return spans(buf, s, e)
    arr = spans(buf, np.where(valid, s, 0), np.where(valid, e, 0))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(len(s), arr.buffers()[1], arr.buffers()[2], bitmap)
