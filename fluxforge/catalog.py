"""What the lake holds: exchanges, symbols, tables, date ranges and row counts.

Built from the lake's metadata (``lake.partitions``: no data read), so it is fast enough for
shell completion and for explaining an empty answer (``explain_empty``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, date, datetime

from fluxforge import lake
from fluxforge.config import Config
from fluxforge.storage import Layout, Storage, open_storage
from fluxforge.tables import SCHEMAS

# An integer time below this (2001-09-09 in ns) is surely not ns: 1.7e12 is "now" in ms.
_MIN_PLAUSIBLE_NS = 1_000_000_000_000_000_000


@dataclass(frozen=True)
class Entry:
    """One (table, exchange, symbol) of the lake and its extent."""

    table: str
    exchange: str
    symbol: str
    first_date: str
    last_date: str
    days: int
    rows: int
    bytes: int

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def entries(storage: Storage, layout: Layout, tables: tuple[str, ...] | None = None) -> list[Entry]:
    """One entry per (table, exchange, symbol) holding data, sorted."""
    out = []
    for table in tables or tuple(SCHEMAS):
        groups: dict[tuple[str, str], list[lake.Partition]] = {}
        for part in lake.partitions(storage, table, layout):
            groups.setdefault((part.exchange, part.symbol), []).append(part)
        for (exchange, symbol), parts in sorted(groups.items()):
            dates = sorted(p.date for p in parts)
            rows, size = sum(p.rows for p in parts), sum(p.bytes for p in parts)
            out.append(Entry(table, exchange, symbol, dates[0], dates[-1], len(dates), rows, size))
    return out


def of_config(cfg: Config, tables: tuple[str, ...] | None = None) -> list[Entry]:
    layer = cfg.storage.etl_output
    return entries(open_storage(layer), Layout.of(layer), tables)


def looks_like_ms(value: str | int) -> bool:
    """An integer time that is plausible as epoch milliseconds or seconds, not nanoseconds."""
    text = str(value).strip()
    return text.lstrip("-").isdigit() and 0 < int(text) < _MIN_PLAUSIBLE_NS


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).date().isoformat()


def explain_empty(
    catalog: list[Entry],
    table: str,
    exchange: str,
    symbol: str,
    start_ns: int,
    end_ns: int,
    raw_times: tuple[str, ...] = (),
) -> list[str]:
    """Why a query of `table` for (exchange, symbol, [start, end]) found nothing: one line per
    reason, nearest known names and the data's date range included."""
    hints = [
        f"{raw!r} looks like epoch milliseconds or seconds; times are ISO-8601 or integer ns "
        f"(e.g. {int(raw) * 1_000_000} for ms)"
        for raw in raw_times
        if looks_like_ms(raw)
    ]
    in_table = [e for e in catalog if e.table == table]
    if not in_table:
        hints.append(f"the lake has no {table} at all (run `fluxforge process` first?)")
        return hints
    exchanges = sorted({e.exchange for e in in_table})
    if exchange not in exchanges:
        near = difflib.get_close_matches(exchange, exchanges, n=3, cutoff=0.3) or exchanges[:5]
        hints.append(f"no exchange {exchange!r} in {table}; known: {', '.join(near)}")
        return hints
    symbols = sorted({e.symbol for e in in_table if e.exchange == exchange})
    if symbol not in symbols:
        near = difflib.get_close_matches(symbol, symbols, n=3, cutoff=0.3) or symbols[:5]
        others = sorted({e.exchange for e in in_table if e.symbol == symbol})
        where = f" ({symbol} is on {', '.join(others)})" if others else ""
        hints.append(
            f"no symbol {symbol!r} on {exchange} in {table}; nearest: {', '.join(near)}{where}"
        )
        return hints
    entry = next(e for e in in_table if e.exchange == exchange and e.symbol == symbol)
    first, last = entry.first_date, entry.last_date
    if _day(end_ns) < first or _day(start_ns) > last:
        hints.append(
            f"{exchange} {symbol} {table} covers {first} .. {last} (UTC dates); "
            f"the range asked is {_day(start_ns)} .. {_day(end_ns)}"
        )
    else:
        hints.append(
            f"{exchange} {symbol} {table} has data on {first} .. {last} but none in the range "
            "asked (a quiet period, or the other --time kind?)"
        )
    return hints


def first_date(catalog: list[Entry]) -> date | None:
    """The earliest date holding any data."""
    return min((date.fromisoformat(e.first_date) for e in catalog), default=None)


def first_data_day(cfg: Config) -> date | None:
    """The first UTC day with data: the earliest raw segment (ready, processing, archive,
    failed: names carry their hour) or lake partition of the tables written without raw
    segments too (history backfills: ``trades``, ``ohlcv``)."""
    from fluxforge.refinery import list_segments

    days = [
        date.fromisoformat(min(ref.date for ref in refs))
        for state in ("ready", "processing", "archive", "failed")
        if (refs := list_segments(cfg, state))
    ]
    lake_first = first_date(of_config(cfg, ("trades", "ohlcv")))
    return min([*days, *([lake_first] if lake_first else [])], default=None)
