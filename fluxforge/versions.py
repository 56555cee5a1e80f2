"""Versions of the code that derives lake rows from raw segments.

Bump a venue's entry when its normalizer (or scanner) would turn the same raw line into
different rows; bump ``BOOK_ENGINE`` when the book kernel, snapshot injection or integrity
checks would write different ``book_*`` / ``gap_ledger`` rows. Every lake commit records the
versions it used and every data file carries its partition's tag in its name, so
``fluxforge lake stale`` finds partitions built by older code without reading them, and
``fluxforge rebuild`` re-derives them (docs/data-guide.md, "Versions").
"""

from __future__ import annotations

import re

# one entry per venue module of fluxforge/venues (ccxt_unified: every exchange without one)
NORMALIZERS: dict[str, int] = {
    "coinbase": 1,
    "binance": 1,
    "kraken": 1,
    "okx": 1,
    "bitget": 1,
    "ccxt_unified": 1,
}
BOOK_ENGINE = 1

_TAG = re.compile(r"-v(\d+)\.(\d+)-")


def normalizer_version(exchange: str) -> int:
    """The normalizer version of the venue module that handles `exchange` (0: none known)."""
    from fluxforge.venues import normalizer_for

    try:
        module = normalizer_for(exchange).__name__.rsplit(".", 1)[-1]
    except (KeyError, TypeError):
        return 0
    return NORMALIZERS.get(module, 0)


def current(exchange: str) -> tuple[int, int]:
    """(normalizer, book) versions today's code builds `exchange`'s partitions with."""
    return normalizer_version(exchange), BOOK_ENGINE


def format_tag(versions: tuple[int, int]) -> str:
    return f"v{versions[0]}.{versions[1]}"


def tag(exchange: str) -> str:
    """``v{normalizer}.{book}`` for a file of `exchange`'s partitions."""
    return format_tag(current(exchange))


def parse_tag(file_name: str) -> tuple[int, int] | None:
    """(normalizer, book) versions from a lake file name, None for files without a tag."""
    match = _TAG.search(file_name)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def is_stale(exchange: str, file_name: str) -> bool:
    """True when the file was built by older code than today's for its exchange; files without
    a tag (migrated from the part-file lake, or written by ``history``) count as stale only when
    they come from segments (``part-`` files that name a segment)."""
    found = parse_tag(file_name)
    if found is None:
        return "-segment_" in file_name
    return found < current(exchange)


def commit_metadata(exchanges: set[str]) -> dict[str, str]:
    """The versions recorded in a commit's metadata."""
    normalizers = ",".join(f"{ex}={normalizer_version(ex)}" for ex in sorted(exchanges))
    return {"fluxforge.normalizers": normalizers, "fluxforge.book_engine": str(BOOK_ENGINE)}
