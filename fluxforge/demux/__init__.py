"""A raw segment -> columns: ``demux_segment(data, name) -> DemuxResult``.

Modules, in the order a line meets them:

- ``registry``: the venue scanners, each registered by its module for the exchange ids whose
  lines it reads (``coinbase``, ``binance``, ``kraken``, ``okx`` for OKX and Bitget);
- ``bytescan``: the numba primitives every scanner is built from (one JSON value at a time);
- ``fastbook``: ``FastBook``, the one columnar container for book messages, and
  ``merge_columns`` (scanner and per-line messages of an instrument, by line number);
- ``pipeline``: the per-line path for whatever no scanner took (orjson + the venue's
  ``normalize``), the line accounting, the tables and their split by partition.

The generic wire rules (decimal format, plausible times, envelope layout) live in
``fluxforge.wire``; the venue rules in ``fluxforge.venues``.
"""

from __future__ import annotations

from collections.abc import Callable

from fluxforge.demux import binance, coinbase, kraken, okx  # noqa: F401 (register scanners)
from fluxforge.demux.fastbook import FastBook, merge_columns
from fluxforge.demux.pipeline import (
    ALL_SYMBOLS,
    NS_PER_DAY,
    UNKNOWN_EXCHANGE,
    CtlEvent,
    DemuxResult,
    LineAccountingError,
    cast_prices,
    day_of,
    demux,
    gc_paused,
    segment_date,
    split_by_partition,
)
from fluxforge.events import EventSink
from fluxforge.segments import Envelope

FAST_PATH = True  # the scanners' columnar path (tests switch it off to compare the two paths)


def demux_segment(
    data: bytes,
    segment: str,
    *,
    poison: dict[int, str] | None = None,
    normalize: Callable[[Envelope, EventSink], str] | None = None,
    fast: bool | None = None,
) -> DemuxResult:
    """Parse and normalize every line of one raw segment.

    `poison` maps daemon seq numbers to a quarantine reason: lines found unusable only after
    normalization (a price Arrow cannot cast, an unsafe symbol) are quarantined on a second
    pass, so a line is either wholly in the tables or wholly in quarantine.
    `normalize` defaults to ``fluxforge.venues.normalize`` (dispatch on exchange and shape);
    `fast` (default ``FAST_PATH``) lets the registered scanners take the lines they fully
    understand first (same output, tested line for line); only with the default normalizer."""
    return demux(data, segment, poison, normalize, FAST_PATH if fast is None else fast)


__all__ = [
    "ALL_SYMBOLS",
    "FAST_PATH",
    "NS_PER_DAY",
    "UNKNOWN_EXCHANGE",
    "CtlEvent",
    "DemuxResult",
    "FastBook",
    "LineAccountingError",
    "cast_prices",
    "day_of",
    "demux_segment",
    "gc_paused",
    "merge_columns",
    "segment_date",
    "split_by_partition",
]
