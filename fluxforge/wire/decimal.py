"""The decimal format of prices and sizes on the wire, written once.

A price or size travels as its exact wire string. The plain form ``[0-9]{1,26}(.[0-9]{1,12})?``
always fits the lake's ``DECIMAL`` (``fluxforge.tables``: decimal128(38, 12), so at most
``MAX_INT_DIGITS`` = 26 integer digits and ``MAX_DECIMALS`` = 12 decimals), so it is accepted
without further checks: by ``FAST_DEC_RE`` in Python, by ``plain_decimal`` in the numba
scanners and by ``fast_levels`` for whole level lists. Anything else goes to the exact checks of
``fluxforge.venues.common.dec`` (which also accepts longer forms within bounds, and gives the
reason of a refusal).

Decimals past the scale: venues pad (``"0.10000000000000000000"`` is exactly 0.1), so digits
past the 12th decimal are accepted when they are all zeros (``to_scale``); a value with a
non-zero digit there cannot be stored exactly and is refused. The accepted text stays verbatim
(venue checksums are computed over it); ``to_decimal`` casts wire strings to the lake's type,
cutting the padding when Arrow's cast alone cannot take the string. The fast paths never take
such a value: they leave it to ``dec``. The book kernel (``fluxforge.book.kernel.decimals``)
applies the same rule to the strings it scales.

``fast_levels`` answers ``common.levels`` for the common case in one pass: the wire strings are
joined and checked by one numba loop. JSON numbers, non-list rows, short rows, escapes,
non-ASCII, more digits, a zero price... return None and the caller runs the exact per-level
checks. So accepted input yields the very list ``levels`` would have built, and rejected input
is never judged here.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from fluxforge.tables import DECIMAL, DECIMAL_PRECISION, DECIMAL_SCALE

MAX_INT_DIGITS = DECIMAL_PRECISION - DECIMAL_SCALE
MAX_DECIMALS = DECIMAL_SCALE
# the lake's scale and integer-digit limit as the numba parsers take them: arguments rather
# than imported constants, so numba's on-disk cache can never keep an old scale
SCALE_LIMITS = (MAX_DECIMALS, MAX_INT_DIGITS)
DEC_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
FAST_DEC_RE = re.compile(rf"[0-9]{{1,{MAX_INT_DIGITS}}}(?:\.[0-9]{{1,{MAX_DECIMALS}}})?")
_PADDING = rf"^([0-9]*\.[0-9]{{{MAX_DECIMALS}}})0+$"  # zeros past the scale, cut by to_decimal
_SEP = "\x00"
_DOT = 46


def to_decimal(strings: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Wire strings -> the lake's ``DECIMAL``. Arrow's cast takes up to 38 digits; a longer
    string padded with zeros past the scale is cut to the scale first (``to_scale``'s rule,
    vectorized), so every text ``dec`` accepts casts. Anything else raises ArrowInvalid.
    An array whose every string is short and plain (``string_words``) is scaled in one numba
    pass instead, to the same values (the trade and quote columns of 60 MB of documented
    Binance shapes: 16 -> 2 ms)."""
    if isinstance(strings, pa.ChunkedArray):
        chunks = [_plain_words(c) for c in strings.chunks]
        if all(c is not None for c in chunks):
            return pa.chunked_array(chunks, DECIMAL)
    else:
        fast = _plain_words(strings)
        if fast is not None:
            return fast
    try:
        return strings.cast(DECIMAL)
    except pa.ArrowInvalid:
        cut = pc.replace_substring_regex(strings, _PADDING, r"\1")
        return cut.cast(DECIMAL)


def _plain_words(arr: pa.Array) -> pa.Array | None:
    """``DECIMAL`` of a string array every valid string of which ``string_words`` takes, else
    None (Arrow's cast then decides)."""
    if arr.type == pa.string():
        width = np.int32
    elif arr.type == pa.large_string():
        width = np.int64
    else:
        return None
    n, at = len(arr), arr.offset
    validity, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, width, n + 1, at * np.dtype(width).itemsize)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    valid = np.ones(n, np.bool_) if arr.null_count == 0 else arr.is_valid().to_numpy(False)
    words, ok = string_words(offsets, data, valid, MAX_DECIMALS)
    if not ok:
        return None
    if arr.null_count == 0:
        return pa.Array.from_buffers(DECIMAL, n, [None, pa.py_buffer(words)])
    # the nulls keep the input's validity bitmap, which starts `at` rows in
    padded = np.zeros(2 * (at + n), np.int64)
    padded[2 * at :] = words
    return pa.Array.from_buffers(DECIMAL, n, [validity, pa.py_buffer(padded)], arr.null_count, at)


@njit(cache=True)
def string_words(offsets, data, valid, scale):
    """The decimal128 words (low, high per string) at `scale` of the strings
    ``data[offsets[i]:offsets[i+1]]`` where `valid` (0 elsewhere), and True; or False when one
    of them is not ``-?[0-9]+(\\.[0-9]+)?`` with at most 18 digits and `scale` decimals (Arrow's
    cast reads every such string, to the same value)."""
    n = len(valid)
    words = np.zeros(2 * n, np.int64)
    scratch = np.empty(len(data), np.uint8)
    for i in range(n):
        if not valid[i]:
            continue
        s, e = offsets[i], offsets[i + 1]
        neg = s < e and data[s] == 45  # -
        if neg:
            s += 1
        # the level columns' reader (the copy goes to a scratch array, unread)
        _key, _exact, w, n_frac = copy_decimal_key(data, s, e, scratch, 0)
        if n_frac < 0 or n_frac > scale or data[s] == _DOT:  # (".5": Arrow's to judge)
            return words, False
        lo, hi = scaled_words(w, n_frac, scale)
        if neg:  # two's complement of the 128-bit (hi, lo)
            lo, hi = -lo, ~hi + (lo == 0)
        words[2 * i], words[2 * i + 1] = lo, hi
    len(data)  # (data live to the exit: see fluxforge/demux/bytescan.py)
    return words, True


def to_scale(text: str) -> str | None:
    """A plain decimal string (``DEC_RE``) with at most ``MAX_DECIMALS`` decimals: itself, or
    cut after the ``MAX_DECIMALS``-th decimal when every digit past it is a zero (the same
    number); None when a digit past it is not zero (the lake cannot hold it exactly)."""
    dot = text.find(".")
    if dot < 0 or len(text) - dot - 1 <= MAX_DECIMALS:
        return text
    cut = dot + 1 + MAX_DECIMALS
    if text[cut:].strip("0"):
        return None
    return text[:cut]


@njit(cache=True)
def decimal_run(buf, s, end, positive, stop):
    """Read a plain decimal from s up to `end` or the first `stop` byte: (where it stopped,
    whether buf[s:there] matches FAST_DEC_RE and, when `positive`, has a non-zero digit)."""
    n_int = 0
    n_frac = -1
    nonzero = False
    good = True
    k = s
    while k < end:
        c = buf[k]
        if c == stop:
            break
        if c == _DOT:
            if n_frac >= 0:
                good = False
                break
            n_frac = 0
        elif 48 <= c <= 57:
            if c != 48:
                nonzero = True
            if n_frac >= 0:
                n_frac += 1
            else:
                n_int += 1
        else:
            good = False
            break
        k += 1
    # `buf` used once more after the loop, before the one exit: numba can then pair and drop
    # its atomic reference count around the call (fluxforge/demux/bytescan.py says more)
    len(buf)
    if n_int < 1 or n_int > MAX_INT_DIGITS or n_frac == 0 or n_frac > MAX_DECIMALS:
        good = False
    return k, good and (nonzero or not positive)


@njit(cache=True)
def plain_decimal(buf, s, e, positive):
    """buf[s:e] matches FAST_DEC_RE, and has a non-zero digit when `positive`."""
    _k, ok = decimal_run(buf, s, e, positive, -1)
    return ok


@njit(cache=True)
def decimal_end(buf, p, end, positive):
    """p at a string's opening quote: the position of its closing quote when its text is a
    plain decimal (> 0 when `positive`), else -1 (one pass over the bytes)."""
    c = buf[p] if p < end else 0
    k, ok = decimal_run(buf, p + 1, end, positive, 34)
    len(buf)  # (see decimal_run)
    return k if c == 34 and ok and k < end else -1


# 10**k for k = 0..22: every one an exact float64 (10**22 < 2**53 * 2**22)
_POW10 = np.array([10.0**k for k in range(23)])
_EXACT_INT = 2**53  # every integer up to this is an exact float64
_POW10_INT = np.array([10**k for k in range(10)], dtype=np.int64)
_LIMB = np.int64(0xFFFFFFFF)


@njit(cache=True)
def times_pow10(l0, l1, l2, l3, e):
    """The 128-bit integer of 32-bit limbs l0..l3 (least significant first) times 10**e, as
    limbs: plain int64 arithmetic, multipliers <= 10**9. The caller keeps the product below
    2**127 (a lake decimal always is)."""
    while e > 0:
        k = min(e, 9)
        m = _POW10_INT[k]
        t = l0 * m
        l0 = t & _LIMB
        t = l1 * m + (t >> 32)
        l1 = t & _LIMB
        t = l2 * m + (t >> 32)
        l2 = t & _LIMB
        l3 = l3 * m + (t >> 32)
        e -= k
    return l0, l1, l2, l3


# w * 10**k fits int64 when w <= _FITS_INT64[k] (k = 0..18): then one multiply gives the words
_POW10_18 = np.array([10**k for k in range(19)], dtype=np.int64)
_FITS_INT64 = np.array([(2**63 - 1) // 10**k for k in range(19)], dtype=np.int64)


@njit(cache=True, inline="always")
def scaled_words(w, n_frac, scale):
    """The decimal128 words (low, high) of w * 10**-n_frac at `scale` (0 <= w < 2**63,
    n_frac <= scale): the unscaled integer w * 10**(scale - n_frac)."""
    e = scale - n_frac
    if e <= 18 and w <= _FITS_INT64[e]:  # the usual price or size: one int64 product
        return w * _POW10_18[e], np.int64(0)
    l0, l1, l2, l3 = times_pow10(w & _LIMB, w >> 32, np.int64(0), np.int64(0), e)
    return l0 | (l1 << 32), l2 | (l3 << 32)


@njit(cache=True, inline="always")
def copy_decimal_key(buf, s, e, out, o):
    """Copy buf[s:e] to out[o:] and give (the float64 nearest to it as a plain decimal, True),
    or (0.0, False) when this fast rule cannot say (not a plain decimal, or more than 2**53
    in its digits): the caller then asks Arrow's correctly rounded string cast. Clinger's fast
    path: the digits as an exact integer divided by an exact power of ten is one correctly
    rounded IEEE division, so the result is the correctly rounded value of the text, the
    float Arrow's cast gives. Then the exact value: its digits as one integer and its number
    of decimals (for ``scaled_words``), or (0, -1) when it is not a plain decimal of at most
    18 digits."""
    w = 0
    dot = -1
    bad = e <= s
    for k in range(s, e):  # one pass, no early exit (see fluxforge/demux/bytescan.py)
        c = buf[k]
        out[o + k - s] = c
        if c == _DOT:
            bad |= dot >= 0
            dot = k
        else:
            d = np.int64(c) - 48
            bad |= (d < 0) | (d > 9)
            w = w * 10 + d
    len(buf), len(out)  # (arrays live to the exit: see fluxforge/demux/bytescan.py)
    n_dig = e - s - (dot >= 0)  # leading zeros too: at most 18 digits cannot overflow w
    n_frac = e - dot - 1 if dot >= 0 else 0
    if bad or n_dig > 18 or n_dig == 0 or (dot >= 0 and n_frac == 0):
        return 0.0, False, np.int64(0), np.int64(-1)
    if w > _EXACT_INT:
        return 0.0, False, w, np.int64(n_frac)
    return w / _POW10[n_frac], True, w, np.int64(n_frac)


@njit(cache=True)
def _check_pairs(buf: np.ndarray, n_expected: int) -> bool:
    """`buf` = price0 NUL size0 NUL price1 ...: every even element a positive plain decimal,
    every odd one a plain decimal, and exactly `n_expected` elements."""
    n = len(buf)
    k = 0  # element index
    s = 0
    for p in range(n + 1):
        if p == n or buf[p] == 0:
            if not plain_decimal(buf, s, p, k % 2 == 0):
                return False
            k += 1
            s = p + 1
    return k == n_expected


def fast_levels(rows: Any) -> list[tuple[str, str]] | None:
    """``common.levels(rows, ...)`` for input it surely accepts, else None (then run it)."""
    if type(rows) is not list:
        return None
    if not rows:
        return []
    try:
        pairs = [(r[0], r[1]) for r in rows if type(r) is list]
    except IndexError:
        return None
    if len(pairs) != len(rows):
        return None
    try:
        text = _SEP.join([x for pair in pairs for x in pair]).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    if not _check_pairs(np.frombuffer(text, np.uint8), 2 * len(pairs)):
        return None
    return pairs
