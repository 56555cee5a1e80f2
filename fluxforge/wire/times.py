"""Plausible event times and the civil-date formula, for Python and numba callers alike.

A venue time outside 2001-09-09 .. 2100-01-01 is a unit mix-up (ms, s or us read as ns) or
garbage: the normalizers refuse it with a reason, the scanners leave the line to them.
"""

from __future__ import annotations

from numba import njit

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
TS_MIN_S = 1_000_000_000  # 2001-09-09T01:46:40Z
TS_MAX_S = 4_102_444_800  # 2100-01-01T00:00:00Z
TS_MIN_NS = TS_MIN_S * NS_PER_SECOND
TS_MAX_NS = TS_MAX_S * NS_PER_SECOND
TS_MIN_MS = TS_MIN_S * 1_000
TS_MAX_MS = TS_MAX_S * 1_000


@njit(cache=True)
def plausible_ns(ns: int) -> bool:
    """True when `ns` (epoch ns) lies in [TS_MIN_NS, TS_MAX_NS]."""
    return TS_MIN_NS <= ns <= TS_MAX_NS


@njit(cache=True)
def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    year -= 1 if month <= 2 else 0
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
