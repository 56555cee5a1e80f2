"""The float64 key of a wire decimal: the one rule both batch builders (per-line messages and
scanner columns) use to turn price and size text into the book kernel's keys.

The key is the correctly rounded float64 of the decimal (Arrow's string -> float64 cast). Most
venue decimals take an exact shortcut (Clinger's fast path): a plain ``digits[.digits]`` with at
most 15 significant digits is an integer ``m < 2**53`` over ``10**k`` with ``k <= 22``; both are
exact doubles, so one IEEE division is the correctly rounded value, the very double the cast
gives. Every other string (exponents, signs, long mantissas, anything malformed) goes to the
Arrow cast, which also raises on text that is not a number.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

# 10**k for k <= 22 are exact doubles (5**22 < 2**53): the fast path's only divisors
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)


def string_buffers(a: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets rebased to 0, data bytes) of a large_string array, without copying."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    _, obuf, dbuf = a.buffers()
    offs = np.frombuffer(obuf, dtype=np.int64, count=len(a) + 1, offset=a.offset * 8)
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.zeros(0, np.uint8)
    start, end = int(offs[0]), int(offs[-1])
    return offs - start, data[start:end]


def decimal_keys(strings: pa.Array) -> np.ndarray:
    """float64 of every string of a large_string array (no nulls), as Arrow's cast gives it;
    raises what the cast raises (``pa.ArrowInvalid``) on text that is not a number."""
    offs, data = string_buffers(strings)
    out = np.empty(len(offs) - 1, np.float64)
    rest = _fast_keys(data, offs, _POW10, out)
    if len(rest):
        slow = strings.take(pa.array(rest, pa.int64())).cast(pa.float64())
        out[rest] = slow.to_numpy(zero_copy_only=False)
    return out


@njit(cache=True)
def _fast_keys(data, offs, pow10, out):
    """Fill `out` where the string is ``(0|[1-9][0-9]*)(.[0-9]+)?`` with <= 15 significant
    digits and <= 22 decimals; return the indices left to the exact cast."""
    rest = np.empty(len(out), np.int64)
    n_rest = 0
    for i in range(len(out)):
        a, b = offs[i], offs[i + 1]
        good = b > a and not (data[a] == 48 and b > a + 1 and data[a + 1] != 46)
        m = 0
        sig = 0
        p = a
        while p < b and 48 <= data[p] <= 57:
            d = data[p] - 48
            if m != 0 or d != 0:
                sig += 1
            m = m * 10 + d
            p += 1
        if p == a:
            good = False
        frac = 0
        if p < b and data[p] == 46:
            p += 1
            q = p
            while p < b and 48 <= data[p] <= 57:
                d = data[p] - 48
                if m != 0 or d != 0:
                    sig += 1
                m = m * 10 + d
                p += 1
            frac = p - q
            if frac == 0:
                good = False
        if p != b or sig > 15 or frac > 22:
            good = False
        if good:
            out[i] = np.float64(m) / pow10[frac]
        else:
            out[i] = 0.0
            rest[n_rest] = i
            n_rest += 1
    return rest[:n_rest]
