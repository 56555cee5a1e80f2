"""Comparison of the demux's two paths, shared by the fast-path tests: the scanners' result
must equal the per-line path's, table for table and message for message."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fluxforge.book import BookBatch
from fluxforge.demux import demux_segment, merge_columns
from fluxforge.venues import common


def both_paths(
    data: bytes, monkeypatch: pytest.MonkeyPatch, segment: str = "segment_20231114T22_00001.ndjson"
) -> tuple[Any, Any]:
    """(scanners + per-line path, per-line path alone with the exact level checks)."""
    fast = demux_segment(data, segment, fast=True)
    with monkeypatch.context() as m:
        m.setattr(common, "fast_levels", lambda rows: None)
        slow = demux_segment(data, segment, fast=False)
    return fast, slow


def assert_same(fast: Any, slow: Any) -> None:
    assert (fast.lines_in, fast.data, fast.control, fast.quarantined) == (
        slow.lines_in,
        slow.data,
        slow.control,
        slow.quarantined,
    )
    assert fast.trades.equals(slow.trades)
    assert fast.quotes.equals(slow.quotes)
    assert fast.quarantine.to_pylist() == slow.quarantine.to_pylist()
    assert fast.tops == slow.tops
    assert [(ln, m) for ln, m in fast.books_by_instrument_all()] == [
        (ln, m) for ln, m in slow.books_by_instrument_all()
    ]
    assert fast.ctl == slow.ctl
    # what the refinery feeds the book kernel: the columns merged with the per-line messages
    want = slow.books_by_instrument()
    per_line = fast.books_by_instrument()
    for key, book in fast.fast_books.items():
        merged = merge_columns(book, per_line.get(key, []))
        if merged is not None:
            assert merged.to_messages() == want[key]
            got, exact = (
                merged.batch(0, len(merged)),
                BookBatch.from_messages([m for _, m in want[key]]),
            )
            for name, value in vars(exact).items():
                if isinstance(value, np.ndarray):
                    assert np.array_equal(value, getattr(got, name)), (key, name)
