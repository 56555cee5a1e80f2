"""The registry of venue scanners: each scanner module registers itself for the exchange ids
whose lines it reads. The demux reads every line's envelope once (``bytescan.envelopes``:
exchange, ts, seq, kind, payload position) and calls a scanner once per exchange of its own
that the segment holds, with that exchange id and the rows of that exchange's lines only (their
bounds and envelope rows, in segment order): a scanner reads payloads from the given position,
never the envelope. ``ScanResult.in_segment`` then turns its row numbers into the segment's
line indices. A scan that skipped the other exchanges' lines row by row, behind a mask, was
slower by a tenth when the venues' lines alternate (60 MB of documented shapes mixed: the scans
232-298 -> 207-237 ms): the rows it read and wrote were spread over the whole segment.

Scanners read disjoint sets of lines (one exchange's each call), so their order does not
change the result; a line a scanner does not take stays for the per-line path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from fluxforge.demux.fastbook import FastBook


@dataclass
class ScanResult:
    """What one scanner took from a segment. `taken` marks data lines, `control` control
    lines (counted, not parsed); `tickers` are columnar top-of-book rows (objects with
    ``line``, ``quotes()`` and ``tops()``), `trades` and `quotes` (line index of each row,
    rows)."""

    taken: np.ndarray
    control: np.ndarray | None = None
    books: dict[tuple[str, str], FastBook] = field(default_factory=dict)
    tickers: list[Any] = field(default_factory=list)
    trades: list[tuple[np.ndarray, pa.Table]] = field(default_factory=list)
    quotes: list[tuple[np.ndarray, pa.Table]] = field(default_factory=list)

    def in_segment(self, lines: np.ndarray, n_lines: int) -> ScanResult:
        """This result of a scan of the segment's lines `lines` (row r: line ``lines[r]``) with
        the segment's line indices, its masks over all `n_lines` lines."""

        def mask(rows: np.ndarray | None) -> np.ndarray | None:
            if rows is None:
                return None
            out = np.zeros(n_lines, dtype=bool)
            out[lines] = rows
            return out

        return ScanResult(
            taken=mask(self.taken),  # type: ignore[arg-type]
            control=mask(self.control),
            # (a book message's line is a line number: index + 1)
            books={k: replace(b, line=lines[b.line - 1] + 1) for k, b in self.books.items()},
            tickers=[replace(t, line=lines[t.line]) for t in self.tickers],
            trades=[(lines[rows], t) for rows, t in self.trades],
            quotes=[(lines[rows], t) for rows, t in self.quotes],
        )


# (exchange, buf, starts, ends, todo, env) -> ScanResult; `starts`, `ends`, `todo` and `env`
# (``bytescan.envelopes`` rows) are the rows of lines of `exchange` (one of the scanner's), in
# segment order, `todo` marking those no one has taken yet; the result's line indices are row
# numbers of these (``ScanResult.in_segment``)
ScanFn = Callable[[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], ScanResult]


@dataclass(frozen=True)
class Scanner:
    name: str
    exchanges: tuple[str, ...]
    scan: ScanFn


_REGISTRY: dict[str, Scanner] = {}


def register(scanner: Scanner) -> Scanner:
    """Add a scanner; an exchange id can have only one."""
    for other in _REGISTRY.values():
        shared = set(other.exchanges) & set(scanner.exchanges)
        if other.name != scanner.name and shared:
            raise ValueError(f"scanners {other.name} and {scanner.name} both claim {shared}")
    _REGISTRY[scanner.name] = scanner
    return scanner


def scanners() -> tuple[Scanner, ...]:
    """Every registered scanner, by name (a stable order for reproducible timings)."""
    return tuple(_REGISTRY[name] for name in sorted(_REGISTRY))
