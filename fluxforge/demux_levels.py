"""Fast acceptance of book level lists ``[[price, size, ...], ...]``.

``fluxforge.venues.common.levels`` validates every price and size with a regex and a few
Python calls (~1.4 us a level: the largest single cost of the per-line path on the
five-venue mix). ``fast_levels`` gives the same answer for the common case in one pass:
the wire strings are joined and checked by one numba loop against exactly the rules of the
fast branch of ``common.dec``/``common.positive`` (``[0-9]{1,20}(.[0-9]{1,18})?``, price with a
non-zero digit). Anything else (JSON numbers, non-list rows, short rows, escapes, non-ASCII,
more digits, a zero price...) returns None and the caller runs the exact per-level checks,
which give the same result or the quarantine reason. So accepted input yields the very list
``levels`` would have built, and rejected input is never judged here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

_SEP = "\x00"


@njit(cache=True)
def _check_pairs(buf: np.ndarray, n_expected: int) -> bool:
    """`buf` = price0 NUL size0 NUL price1 ...: every even element a positive plain decimal,
    every odd one a plain decimal (<= 20 integer digits, 1..18 decimals if a dot), and
    exactly `n_expected` elements."""
    n = len(buf)
    k = 0  # element index
    p = 0
    while p <= n:
        n_int = 0
        n_frac = -1
        nonzero = False
        while p < n and buf[p] != 0:
            c = buf[p]
            if c == 46:  # .
                if n_frac >= 0:
                    return False
                n_frac = 0
            elif 48 <= c <= 57:
                if c != 48:
                    nonzero = True
                if n_frac >= 0:
                    n_frac += 1
                else:
                    n_int += 1
            else:
                return False
            p += 1
        if n_int < 1 or n_int > 20 or n_frac == 0 or n_frac > 18:
            return False
        if k % 2 == 0 and not nonzero:
            return False
        k += 1
        p += 1  # past the NUL (or past the end)
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
